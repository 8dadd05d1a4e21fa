"""Training: run configuration, data tensors, the training loop with checkpoints and resume."""
