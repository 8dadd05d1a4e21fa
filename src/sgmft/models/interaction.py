"""Similarity-guided interaction module, SIM (paper section 3.2.1, eqs 6-16)."""

from __future__ import annotations

import torch
from torch import nn

from sgmft.models.attention import QKV, attend, position_bias
from sgmft.models.config import ModelConfig
from sgmft.models.inputs import make_norm, residual_bias
from sgmft.models.similarity import SimilarityPolymerizer


class InterpolationAttention(nn.Module):
    """Eqs 8-13: X = CA (*) P^m + SA (*) (1 - P^m); X^C = LayerNorm(X + F).

    The Q/K/V projections of eqs 6-7 belong to the modalities and are passed in, shared by the
    text and the image block; each block owns its output projections W^s (eq 10), W^c (eq 11).
    ca_query "other" (eq 9): CA takes queries from the other modality and keys and values from
    this one; "self": queries from this modality, keys and values from the other.
    """

    def __init__(self, length: int, width: int, heads: int, head_dim: int, ca_query: str,
                 positional: bool = False):
        super().__init__()
        self.ca_query = ca_query
        self.sa_out = nn.Linear(heads * head_dim, width)   # W^s
        self.ca_out = nn.Linear(heads * head_dim, width)   # W^c
        self.sa_position = position_bias(positional, width, heads, length, length)
        self.ca_position = position_bias(positional, width, heads, length, length)
        self.norm = make_norm(length, width)

    def forward(self, own: torch.Tensor, other: torch.Tensor, own_qkv: QKV, other_qkv: QKV,
                p_m: torch.Tensor) -> torch.Tensor:
        """own, other (B, L, w), P^m (B, L, w) -> X^C (B, L, w)."""
        sa = attend(own, own, own_qkv, own_qkv, self.sa_out, self.sa_position)
        if self.ca_query == "other":
            ca = attend(other, own, other_qkv, own_qkv, self.ca_out, self.ca_position)
        else:
            ca = attend(own, other, own_qkv, other_qkv, self.ca_out, self.ca_position)
        return self.norm(ca * p_m + sa * (1 - p_m) + own)


class FeedForward(nn.Module):
    """Position-wise FFN with residual and LayerNorm: the image side of section 3.2.1."""

    def __init__(self, length: int, width: int, hidden: int):
        super().__init__()
        self.w1 = nn.Linear(width, hidden)
        self.w2 = nn.Linear(hidden, width, bias=residual_bias(width))
        self.norm = make_norm(length, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, L, w) -> (B, L, w)."""
        return self.norm(self.w2(torch.relu(self.w1(x))) + x)


class SimilarityFeedForward(nn.Module):
    """Eqs 14-16: X_inter = P^e X^C_other; FFN = ReLU(X W1 + X_inter W3 + b1) W2 + b2;
    F^S = LayerNorm(FFN + X)."""

    def __init__(self, length: int, width: int, hidden: int):
        super().__init__()
        self.w1 = nn.Linear(width, hidden)              # W1 and b1
        self.w3 = nn.Linear(width, hidden, bias=False)  # W3
        self.w2 = nn.Linear(hidden, width, bias=residual_bias(width))  # W2 and b2
        self.norm = make_norm(length, width)

    def forward(self, x: torch.Tensor, other: torch.Tensor, p_e: torch.Tensor) -> torch.Tensor:
        """x, other (B, L, w), P^e (B, L, L) -> (B, L, w)."""
        inter = p_e @ other                                             # eq 14
        return self.norm(self.w2(torch.relu(self.w1(x) + self.w3(inter))) + x)


class SimilarityInteraction(nn.Module):
    """SIM: polymerizer, interpolation attention for both modalities, then the similarity-aware
    FFN on one side (``sff_side``, Table 4) and a plain FFN on the other."""

    def __init__(self, length: int, width: int, config: ModelConfig):
        super().__init__()
        h, d = config.heads, config.head_dim
        self.sff_side = config.sff_side
        self.polymerizer = SimilarityPolymerizer(config.gate, config.gate_temperature)
        self.text_qkv = QKV(width, h, d)     # eq 6
        self.image_qkv = QKV(width, h, d)    # eq 7
        self.text_attention = InterpolationAttention(length, width, h, d, config.ca_query,
                                                     config.positional)
        self.image_attention = InterpolationAttention(length, width, h, d, config.ca_query,
                                                      config.positional)
        sff = SimilarityFeedForward(length, width, config.ffn_hidden)
        ffn = FeedForward(length, width, config.ffn_hidden)
        self.text_ffn, self.image_ffn = (sff, ffn) if config.sff_side == "text" else (ffn, sff)

    def forward(self, text: torch.Tensor, image: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """text, image (B, L, w) -> F^S_text, F^S_image (B, L, w) and the gate P^m (B, L, w)."""
        sim = self.polymerizer(text, image)
        x_text = self.text_attention(text, image, self.text_qkv, self.image_qkv, sim["p_m"])
        x_image = self.image_attention(image, text, self.image_qkv, self.text_qkv, sim["p_m"])
        if self.sff_side == "text":
            return self.text_ffn(x_text, x_image, sim["p_e_text"]), self.image_ffn(x_image), sim["p_m"]
        return self.text_ffn(x_text), self.image_ffn(x_image, x_text, sim["p_e_image"]), sim["p_m"]
