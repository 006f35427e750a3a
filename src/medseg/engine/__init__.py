"""Training and inference on Lightning."""
