"""Floor 2: pictures — label overlays, window/level rendering, error maps (one colour scheme), curves and figures."""
