"""The trainable input side of the wrapper: text and image vectors to token tensors.

Text comes from the frozen encoder's cached features, or (Table 2's Baseline and Meng et al.'s
fusion CNN) from word embeddings of the jieba tokens learned here. Both modalities are then
projected to a common width D when needed and cut into tokens by the chosen reading.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from sgmft.models.config import DEFAULT_PROJECTION, ModelConfig


class WordMean(nn.Module):
    """Mean of learned word embeddings over a post's tokens: (B, T) ids -> (B, E)."""

    def __init__(self, vocab_size: int, embed_dim: int):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, embed_dim, padding_idx=0)
        self.dim = embed_dim

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        mask = (tokens != 0).unsqueeze(-1).float()
        return (self.embed(tokens) * mask).sum(1) / mask.sum(1).clamp(min=1.0)


class TextCNN(nn.Module):
    """Kim-style TextCNN (as in Meng et al. 2017): (B, T) ids -> (B, channels * len(kernels))."""

    def __init__(self, vocab_size: int, embed_dim: int, kernels: tuple[int, ...], channels: int):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, embed_dim, padding_idx=0)
        self.convs = nn.ModuleList(nn.Conv1d(embed_dim, channels, k, padding=k - 1) for k in kernels)
        self.dim = channels * len(kernels)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.embed(tokens).transpose(1, 2)                      # (B, E, T)
        return torch.cat([torch.relu(conv(x)).amax(dim=-1) for conv in self.convs], dim=-1)


class LengthProjection(nn.Module):
    """A learned map over the length axis: (B, L_in, w) -> (B, L_out, w)."""

    def __init__(self, length_in: int, length_out: int):
        super().__init__()
        self.map = nn.Linear(length_in, length_out)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.map(tokens.transpose(1, 2)).transpose(1, 2)


class FeatureStatistics(nn.Module):
    """Per-channel mean and standard deviation of one modality's frozen features on the
    training split (buffers, saved with the model): z-scoring and the "missing" fill value."""

    def __init__(self, dim: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))

    @torch.no_grad()
    def fit(self, features: torch.Tensor | Iterable[torch.Tensor]) -> None:
        """features (N, D) or (N, L, D), or batches of such rows: statistics over every axis
        but the last (sums in float64, so batches give the whole's statistics)."""
        parts = [features] if isinstance(features, torch.Tensor) else features
        count, total, squares = 0, 0.0, 0.0
        for part in parts:
            flat = part.double().reshape(-1, part.shape[-1])
            count, total, squares = count + len(flat), total + flat.sum(0), squares + (flat * flat).sum(0)
        mean = total / count
        variance = (squares / count - mean * mean).clamp_min(0)
        self.mean.copy_(mean.float())
        self.std.copy_(variance.sqrt().float().clamp_min(1e-6))

    def standardise(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def _projection(dim_in: int, dim_out: int, keep: bool, learned: bool) -> nn.Module:
    """A learned map to the common width; in a shared space (``keep``) the identity, or, for a
    method that must learn its representations (``learned``), a map starting as the identity."""
    if not keep:
        return nn.Linear(dim_in, dim_out)
    if not learned:
        return nn.Identity()
    linear = nn.Linear(dim_in, dim_out)
    with torch.no_grad():
        linear.weight.copy_(torch.eye(dim_out, dim_in))
        linear.bias.zero_()
    return linear


class InputAdapter(nn.Module):
    """Cached features (or word ids) -> text and image tokens (B, L, w) of a common width D.

    The sequence reading takes the encoders' token states instead, (B, L_text, D_text) and
    (B, L_image, D_image): a linear map to the common width D, then a learned map over the
    length axis to the common length ``seq_length``.

    Beyond the paper (all off by default): ``input_norm = "standard"`` z-scores the features
    with the training split's statistics (`fit_statistics`); ``modality_dropout`` replaces,
    during training, the text or the image of that share of posts by the training mean (the
    value a missing modality gets at prediction time); ``input_dropout`` drops feature
    elements; ``positional`` adds learned position embeddings to tokens wider than one.
    """

    def __init__(self, config: ModelConfig, text_dim: int, image_dim: int, vocab_size: int,
                 shared_space: bool, token_lengths: tuple[int, int] | None = None,
                 learned: bool = False):
        super().__init__()
        self.config = config
        if config.text_input == "word_mean":
            self.words: nn.Module | None = WordMean(vocab_size, config.embed_dim)
            text_dim = self.words.dim
        elif config.text_input == "textcnn":
            self.words = TextCNN(vocab_size, config.embed_dim, config.textcnn_kernels,
                                 config.textcnn_channels)
            text_dim = self.words.dim
        else:
            self.words = None
        self.text_stats = FeatureStatistics(text_dim) if self.words is None else None
        self.image_stats = FeatureStatistics(image_dim)
        self.input_dropout = nn.Dropout(config.input_dropout)
        keep = config.dim is None and shared_space and text_dim == image_dim
        self.dim = text_dim if keep else (config.dim or DEFAULT_PROJECTION)
        self.text_proj = _projection(text_dim, self.dim, keep, learned)
        self.image_proj = _projection(image_dim, self.dim, keep, learned)
        if config.reading == "chunks" and self.dim % config.chunks:
            raise ValueError(f"D = {self.dim} is not divisible into {config.chunks} chunks")
        self.sequence = config.reading == "sequence"
        if self.sequence:
            if token_lengths is None:
                raise ValueError("the sequence reading needs token sequences in the feature cache "
                                 "(sgmft extract --sequences)")
            self.text_length = LengthProjection(token_lengths[0], config.seq_length)
            self.image_length = LengthProjection(token_lengths[1], config.seq_length)
            self.length, self.width = config.seq_length, self.dim
        elif config.reading == "elements":
            self.length, self.width = self.dim, 1
        else:
            self.length, self.width = config.chunks, self.dim // config.chunks
        embed = config.positional and self.width > 1
        self.text_position = nn.Parameter(torch.randn(self.length, self.width) * 0.02) if embed else None
        self.image_position = nn.Parameter(torch.randn(self.length, self.width) * 0.02) if embed else None

    def fit_statistics(self, text: torch.Tensor | Iterable[torch.Tensor],
                       image: torch.Tensor | Iterable[torch.Tensor]) -> None:
        """Record the training split's feature statistics: text (N, D_text) or (N, L, D_text)
        (ignored for word-level text), image likewise; each may come as batches of rows."""
        if self.text_stats is not None:
            self.text_stats.fit(text)
        self.image_stats.fit(image)

    def _prepare(self, x: torch.Tensor, stats: FeatureStatistics | None) -> torch.Tensor:
        """Standardised (or raw) features; word-level text has no statistics."""
        x = x.float()
        if stats is None or self.config.input_norm == "none":
            return x
        return stats.standardise(x)

    def _missing(self, x: torch.Tensor, stats: FeatureStatistics | None) -> torch.Tensor:
        """The value of a missing modality, shaped like ``x``: the training mean, as prepared."""
        if stats is None:
            return torch.zeros_like(x)
        return self._prepare(stats.mean.expand_as(x), stats)

    def _drop_modalities(self, text: torch.Tensor, image: torch.Tensor
                         ) -> tuple[torch.Tensor, torch.Tensor]:
        """Training only: for a ``modality_dropout`` share of posts, replace the text (half of
        them) or the image (the other half) by its missing value."""
        draw = torch.rand(text.shape[0], device=text.device)
        rate = self.config.modality_dropout
        shape = (-1,) + (1,) * (text.dim() - 1)
        drop_text = (draw < rate / 2).view(shape)
        drop_image = ((draw >= rate / 2) & (draw < rate)).view((-1,) + (1,) * (image.dim() - 1))
        text = torch.where(drop_text, self._missing(text, self.text_stats), text)
        image = torch.where(drop_image, self._missing(image, self.image_stats), image)
        return text, image

    def tokens(self, vector: torch.Tensor) -> torch.Tensor:
        """(B, D) -> (B, L, w) by the reading; `flatten` is its inverse."""
        return vector.reshape(vector.shape[0], self.length, self.width)

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """batch with "text" (B, D_text) or "tokens" (B, T), and "image" (B, D_image); for the
        sequence reading "text_tokens" (B, L_text, D_text) and "image_tokens" (B, L_image,
        D_image) -> text and image tokens, each (B, L, w)."""
        if self.sequence:
            text, image = batch["text_tokens"], batch["image_tokens"]
        else:
            text = self.words(batch["tokens"]) if self.words is not None else batch["text"]
            image = batch["image"]
        text, image = self._prepare(text, self.text_stats), self._prepare(image, self.image_stats)
        if self.training and self.config.modality_dropout:
            text, image = self._drop_modalities(text, image)
        text = self.text_proj(self.input_dropout(text))
        image = self.image_proj(self.input_dropout(image))
        if self.sequence:
            text, image = self.text_length(text), self.image_length(image)
        else:
            text, image = self.tokens(text), self.tokens(image)
        if self.text_position is not None:
            text, image = text + self.text_position, image + self.image_position
        return text, image


def flatten(tokens: torch.Tensor) -> torch.Tensor:
    """(B, L, w) -> (B, L * w)."""
    return tokens.reshape(tokens.shape[0], -1)


def residual_bias(width: int) -> bool:
    """Whether a layer writing into a residual sum before `make_norm` needs a bias: not for
    scalar tokens, where the LayerNorm over all elements removes any constant added to them."""
    return width > 1


def make_norm(length: int, width: int) -> nn.LayerNorm:
    """LayerNorm over a post's whole feature: over the D elements when tokens are scalars (the
    elements reading, where a per-token norm would be zero), else over each token's width."""
    return nn.LayerNorm([length, width] if width == 1 else [width])
