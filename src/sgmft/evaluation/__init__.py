"""Evaluation: metrics, confusion matrices, t-SNE of M_fuse, and the paper's tables."""
