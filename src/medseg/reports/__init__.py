"""Plots, overlays and self-contained HTML reports."""
