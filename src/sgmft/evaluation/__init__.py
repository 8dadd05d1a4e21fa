"""Evaluation of a trained run: metrics on its test split, confusion matrix, t-SNE of M_fuse."""
