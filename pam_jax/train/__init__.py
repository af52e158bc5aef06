"""Training: train state, step functions, device mesh, checkpoints and the loop."""
