"""Registries of fusion modules and heads: every ablation and compared method is a
configuration value, not a copied training script."""

from __future__ import annotations

from sgmft.registry import Registry

#: fusion module classes, built as ``cls(length, width, config)``
FUSIONS = Registry("fusion")
#: head classes, built as ``cls(fused_dim, stream_dim, num_classes, config)``
HEADS = Registry("head")

register_fusion = FUSIONS.register
register_head = HEADS.register
