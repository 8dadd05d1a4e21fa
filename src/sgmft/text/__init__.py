"""Weibo text cleaning (paper section 3.1): noise removal, jieba segmentation, stop words."""

from sgmft.text.cleaning import TextConfig, clean_text, preprocess_text

__all__ = ["TextConfig", "clean_text", "preprocess_text"]
