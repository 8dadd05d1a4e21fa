"""Multi-head attention over token tensors (B, L, w), eqs 6-11 of the paper.

Token tensors carry every reading of the paper's features: the default "elements" reading has
one token per feature element (L = D, w = 1), "chunks" cuts the D-vector into k tokens of width
D/k, "sequence" uses encoder token states. Projections lift tokens from width w to h heads of
``head_dim`` and the output projection brings them back to w.

For scalar tokens (w = 1) attention has a closed form that needs no (L, L, head_dim) product:
with q_i = f_i W^Q + b^Q and k_j = g_j W^K + b^K, the score q_i . k_j differs from
g_j (f_i W^Q.W^K + b^Q.W^K) only by terms constant in j, which softmax cancels. `attend` uses
that form when w = 1 (same parameters, same result, tested against the generic path), which
makes the paper's default reading affordable on a CPU.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class QKV(nn.Module):
    """The query, key and value projections of one modality (eq 6 for text, eq 7 for image).

    A module that only ever supplies queries (or only keys and values) leaves the others out.
    The key projection has no bias: q_i . b^K is the same for every key j, so softmax cancels it
    and it could never receive a gradient.
    """

    def __init__(self, width: int, heads: int, head_dim: int, query: bool = True,
                 key_value: bool = True, value_bias: bool = True):
        super().__init__()
        inner = heads * head_dim
        self.heads, self.head_dim = heads, head_dim
        self.query = nn.Linear(width, inner) if query else None
        self.key = nn.Linear(width, inner, bias=False) if key_value else None
        self.value = nn.Linear(width, inner, bias=value_bias) if key_value else None


class PositionBias(nn.Module):
    """Learned positions for scalar tokens (elements reading), as terms of the attention score.

    A scalar token has no room for a positional embedding (a per-position constant added to it
    is what the input projection's bias already is), so positions enter the closed-form score
    of `_attend_scalar` directly: score_hij = (s_h(f_i) + u_hi) g_j + v_hj, a per-head query
    term u (H, Lq) and key term v (H, Lk). Both start at zero: the paper's position-blind
    attention.
    """

    def __init__(self, heads: int, query_length: int, key_length: int):
        super().__init__()
        self.query = nn.Parameter(torch.zeros(heads, query_length))
        self.key = nn.Parameter(torch.zeros(heads, key_length))


def position_bias(enabled: bool, width: int, heads: int, query_length: int,
                  key_length: int) -> PositionBias | None:
    """A `PositionBias` for scalar tokens when positions are on; wider tokens carry their
    positions as embeddings (`InputAdapter`), so they get none."""
    return PositionBias(heads, query_length, key_length) if enabled and width == 1 else None


def _split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(B, L, H*d) -> (B, H, L, d)."""
    b, length, inner = x.shape
    return x.view(b, length, heads, inner // heads).transpose(1, 2)


def _attend_generic(q_src, kv_src, q_proj: QKV, kv_proj: QKV, out: nn.Linear) -> torch.Tensor:
    heads = q_proj.heads
    q = _split_heads(q_proj.query(q_src), heads)
    k = _split_heads(kv_proj.key(kv_src), heads)
    v = _split_heads(kv_proj.value(kv_src), heads)
    mixed = F.scaled_dot_product_attention(q, k, v)  # softmax(Q K^T / sqrt(d)) V, eqs 8-9
    b, _, length, _ = mixed.shape
    return out(mixed.transpose(1, 2).reshape(b, length, -1))  # concat heads, W^s / W^c, eqs 10-11


def _attend_scalar(q_src, kv_src, q_proj: QKV, kv_proj: QKV, out: nn.Linear,
                   position: PositionBias | None = None) -> torch.Tensor:
    """The closed form of `_attend_generic` for scalar tokens (w = 1); (B, Lq, 1).

    Per head h: A_ij = softmax_j(s_ih g_j) with s_ih = (f_i W^Q_h.W^K_h + b^Q_h.W^K_h) / sqrt(d),
    head_ih = (sum_j A_ij g_j) W^V_h + b^V_h, and the output projection folds into a gain and an
    offset. The softmax-weighted sum runs as a fused attention kernel of head size 1.
    """
    heads, d = q_proj.heads, q_proj.head_dim
    wq = q_proj.query.weight.view(heads, d)
    bq = q_proj.query.bias.view(heads, d)
    wk = kv_proj.key.weight.view(heads, d)
    wv = kv_proj.value.weight.view(heads, d)
    wo = out.weight.view(heads, d)
    f, g = q_src.squeeze(-1), kv_src.squeeze(-1)                   # (B, Lq), (B, Lk)
    slope = ((wq * wk).sum(-1)[:, None] * f[:, None, :] + (bq * wk).sum(-1)[:, None]) / math.sqrt(d)
    keys = g[:, None, :, None].expand(g.shape[0], heads, g.shape[1], 1)
    mask = None
    if position is not None:                                       # (B, H, Lq) and (1, H, 1, Lk)
        slope, mask = slope + position.query, position.key[None, :, None, :]
    mixed = F.scaled_dot_product_attention(slope.unsqueeze(-1), keys, keys, attn_mask=mask, scale=1.0)
    gain = (wv * wo).sum(-1)                                       # (H,)
    offset = 0.0
    if kv_proj.value.bias is not None:
        offset = offset + (kv_proj.value.bias.view(heads, d) * wo).sum()
    if out.bias is not None:
        offset = offset + out.bias
    return ((mixed.squeeze(-1) * gain[None, :, None]).sum(1) + offset).unsqueeze(-1)


def attend(q_src: torch.Tensor, kv_src: torch.Tensor, q_proj: QKV, kv_proj: QKV,
           out: nn.Linear, position: PositionBias | None = None) -> torch.Tensor:
    """Multi-head attention with queries from ``q_src`` (B, Lq, w), keys and values from
    ``kv_src`` (B, Lk, w), through ``out`` back to (B, Lq, w); ``position`` for w = 1 only."""
    if q_src.shape[-1] == 1 and kv_src.shape[-1] == 1:
        return _attend_scalar(q_src, kv_src, q_proj, kv_proj, out, position)
    if position is not None:
        raise ValueError("attention-score positions are for scalar tokens; wider tokens take embeddings")
    return _attend_generic(q_src, kv_src, q_proj, kv_proj, out)


class MultiHeadAttention(nn.Module):
    """Self-attention (``cross=False``) or cross-attention, with its own projections.

    bias=False drops the value and output biases, which only shift every token by the same
    constant: dead weight when a LayerNorm over all elements follows (scalar tokens).
    """

    def __init__(self, width: int, heads: int, head_dim: int, cross: bool = False,
                 bias: bool = True, position: PositionBias | None = None):
        super().__init__()
        self.cross = cross
        self.q = QKV(width, heads, head_dim, key_value=not cross, value_bias=bias)
        self.kv = QKV(width, heads, head_dim, query=False, value_bias=bias) if cross else None
        self.out = nn.Linear(heads * head_dim, width, bias=bias)
        self.position = position

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, Lq, w); context (B, Lk, w) for cross-attention -> (B, Lq, w)."""
        if self.cross != (context is not None):
            raise ValueError("cross-attention needs a context; self-attention takes none")
        if context is None:
            return attend(x, x, self.q, self.q, self.out, self.position)
        return attend(x, context, self.q, self.kv, self.out, self.position)
