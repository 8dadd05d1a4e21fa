"""Fusion modules (paper section 3.2.2 and Table 3), registered by name.

Each takes text and image tokens (B, L, w) and returns `Fused`: the fusion representation
M_fuse (B, fused_dim) that the classifier sees and t-SNE plots, plus the per-modality streams
(B, stream_dim) that decision-level heads use.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from sgmft.models.attention import MultiHeadAttention, position_bias
from sgmft.models.config import ModelConfig
from sgmft.models.inputs import flatten, make_norm, residual_bias
from sgmft.models.registry import register_fusion


class Fused(NamedTuple):
    fused: torch.Tensor   # M_fuse (B, fused_dim)
    text: torch.Tensor    # text stream after fusion (B, stream_dim)
    image: torch.Tensor   # image stream after fusion (B, stream_dim)


class TransformerLayer(nn.Module):
    """Attention (self, or cross with a context) then FFN, each with residual and LayerNorm."""

    def __init__(self, length: int, width: int, config: ModelConfig, cross: bool):
        super().__init__()
        bias = residual_bias(width)
        position = position_bias(config.positional, width, config.heads, length, length)
        self.attention = MultiHeadAttention(width, config.heads, config.head_dim, cross, bias, position)
        self.norm1 = make_norm(length, width)
        self.ffn = nn.Sequential(nn.Linear(width, config.ffn_hidden), nn.ReLU(),
                                 nn.Linear(config.ffn_hidden, width, bias=bias))
        self.norm2 = make_norm(length, width)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, L, w), context (B, Lc, w) for cross-attention -> (B, L, w)."""
        x = self.norm1(x + self.attention(x, context))
        return self.norm2(x + self.ffn(x))


class FusionModule(nn.Module):
    """Base: sizes of the outputs for tokens of ``length`` x ``width``."""

    def __init__(self, length: int, width: int):
        super().__init__()
        self.stream_dim = length * width
        self.fused_dim = length * width


@register_fusion("concat")
class ConcatFusion(FusionModule):
    """No fusion module: M_fuse = [F_text; F_image] (Table 2 rows without SFM)."""

    def __init__(self, length: int, width: int, config: ModelConfig):
        super().__init__(length, width)
        self.fused_dim = 2 * length * width

    def forward(self, text: torch.Tensor, image: torch.Tensor) -> Fused:
        t, i = flatten(text), flatten(image)
        return Fused(torch.cat([t, i], dim=-1), t, i)


class ResidualCross(nn.Module):
    """One stream of SFM: CA(X) (eq 17), or LayerNorm(X + CA(X)) with ``residual``."""

    def __init__(self, length: int, width: int, config: ModelConfig):
        super().__init__()
        residual = config.sfm_residual
        position = position_bias(config.positional, width, config.heads, length, length)
        # a constant shift before a LayerNorm over all elements is removed by it: no biases then
        bias = not residual or residual_bias(width)
        self.cross = MultiHeadAttention(width, config.heads, config.head_dim, True, bias, position)
        self.norm = make_norm(length, width) if residual else None

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """x, context (B, L, w) -> (B, L, w)."""
        attended = self.cross(x, context)
        return attended if self.norm is None else self.norm(x + attended)


@register_fusion("sfm")
class SimilarityFusion(FusionModule):
    """SFM, eq 17: M_fuse = CA(X_text) (+) CA(X_image), two cross-attention layers, as eq 11:
    CA(X_text) takes queries from the text and keys and values from the image, and vice versa.
    ``sfm_residual`` wraps each in a residual and LayerNorm (beyond the paper)."""

    def __init__(self, length: int, width: int, config: ModelConfig):
        super().__init__(length, width)
        self.text_cross = ResidualCross(length, width, config)
        self.image_cross = ResidualCross(length, width, config)

    def forward(self, text: torch.Tensor, image: torch.Tensor) -> Fused:
        t = flatten(self.text_cross(text, image))
        i = flatten(self.image_cross(image, text))
        return Fused(t + i, t, i)


@register_fusion("coattention")
class CoAttentionFusion(FusionModule):
    """Co-attention (Hendricks et al. 2021): each stream attends only to the other, in full
    transformer layers (cross-attention + FFN); M_fuse = text + image."""

    def __init__(self, length: int, width: int, config: ModelConfig):
        super().__init__(length, width)
        self.text_layers = nn.ModuleList(TransformerLayer(length, width, config, cross=True)
                                         for _ in range(config.fusion_layers))
        self.image_layers = nn.ModuleList(TransformerLayer(length, width, config, cross=True)
                                          for _ in range(config.fusion_layers))

    def forward(self, text: torch.Tensor, image: torch.Tensor) -> Fused:
        for text_layer, image_layer in zip(self.text_layers, self.image_layers, strict=True):
            text, image = text_layer(text, image), image_layer(image, text)
        t, i = flatten(text), flatten(image)
        return Fused(t + i, t, i)


@register_fusion("merge")
class MergeAttentionFusion(FusionModule):
    """Merge-attention: concatenate the token sequences, one shared self-attention stack;
    M_fuse = text half + image half."""

    def __init__(self, length: int, width: int, config: ModelConfig):
        super().__init__(length, width)
        self.length = length
        self.layers = nn.ModuleList(TransformerLayer(2 * length, width, config, cross=False)
                                    for _ in range(config.fusion_layers))

    def forward(self, text: torch.Tensor, image: torch.Tensor) -> Fused:
        x = torch.cat([text, image], dim=1)
        for layer in self.layers:
            x = layer(x)
        t, i = flatten(x[:, : self.length]), flatten(x[:, self.length:])
        return Fused(t + i, t, i)


@register_fusion("asymmetric")
class AsymmetricCoAttentionFusion(FusionModule):
    """mPLUG's asymmetric co-attention with a cross-modal skip connection: ``fusion_layers``
    layers update only the text (self-attention, cross-attention to the image, FFN), then one
    merged self-attention layer over [image; text] updates both; M_fuse = text + image."""

    def __init__(self, length: int, width: int, config: ModelConfig):
        super().__init__(length, width)
        self.length = length
        self.text_self = nn.ModuleList(TransformerLayer(length, width, config, cross=False)
                                       for _ in range(config.fusion_layers))
        self.text_cross = nn.ModuleList(TransformerLayer(length, width, config, cross=True)
                                        for _ in range(config.fusion_layers))
        self.merged = TransformerLayer(2 * length, width, config, cross=False)

    def forward(self, text: torch.Tensor, image: torch.Tensor) -> Fused:
        for self_layer, cross_layer in zip(self.text_self, self.text_cross, strict=True):
            text = cross_layer(self_layer(text), image)
        x = self.merged(torch.cat([image, text], dim=1))
        i, t = flatten(x[:, : self.length]), flatten(x[:, self.length:])
        return Fused(t + i, t, i)


@register_fusion("bridge")
class BridgeFusion(FusionModule):
    """BridgeTower-style: co-attention layers whose inputs are bridged to the uni-modal encoders.

    BridgeTower feeds the top uni-modal layers, one per cross-modal layer, through bridge
    layers LayerNorm(X + W F_uni). A frozen encoder's cache holds only its pooled output, so
    every bridge here takes that same top representation through its own linear map.
    """

    def __init__(self, length: int, width: int, config: ModelConfig):
        super().__init__(length, width)
        n = config.fusion_layers
        self.text_layers = nn.ModuleList(TransformerLayer(length, width, config, True) for _ in range(n))
        self.image_layers = nn.ModuleList(TransformerLayer(length, width, config, True) for _ in range(n))
        bias = residual_bias(width)
        self.text_bridges = nn.ModuleList(nn.Linear(width, width, bias=bias) for _ in range(n))
        self.image_bridges = nn.ModuleList(nn.Linear(width, width, bias=bias) for _ in range(n))
        self.text_norms = nn.ModuleList(make_norm(length, width) for _ in range(n))
        self.image_norms = nn.ModuleList(make_norm(length, width) for _ in range(n))

    def forward(self, text: torch.Tensor, image: torch.Tensor) -> Fused:
        uni_text, uni_image = text, image
        for layer in range(len(self.text_layers)):
            text = self.text_norms[layer](text + self.text_bridges[layer](uni_text))
            image = self.image_norms[layer](image + self.image_bridges[layer](uni_image))
            text, image = self.text_layers[layer](text, image), self.image_layers[layer](image, text)
        t, i = flatten(text), flatten(image)
        return Fused(t + i, t, i)
