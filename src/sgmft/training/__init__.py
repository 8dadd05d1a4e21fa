"""Training: run configuration, data preparation, the training loop, checkpoints and resume,
the run folder, and training under torchrun."""
