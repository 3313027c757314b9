"""Training: the accelerate loop and checkpoints."""
