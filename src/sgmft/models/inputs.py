"""The trainable input side of the wrapper: text and image vectors to token tensors.

Text comes from the frozen encoder's cached features, or (Table 2's Baseline and Meng et al.'s
fusion CNN) from word embeddings of the jieba tokens learned here. Both modalities are then
projected to a common width D when needed and cut into tokens by the chosen reading.
"""

from __future__ import annotations

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


class InputAdapter(nn.Module):
    """Cached features (or word ids) -> text and image tokens (B, L, w) of a common width D.

    The sequence reading takes the encoders' token states instead, (B, L_text, D_text) and
    (B, L_image, D_image): a linear map to the common width D, then a learned map over the
    length axis to the common length ``seq_length``.
    """

    def __init__(self, config: ModelConfig, text_dim: int, image_dim: int, vocab_size: int,
                 shared_space: bool, token_lengths: tuple[int, int] | None = None):
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
        keep = config.dim is None and shared_space and text_dim == image_dim
        self.dim = text_dim if keep else (config.dim or DEFAULT_PROJECTION)
        self.text_proj = nn.Identity() if keep else nn.Linear(text_dim, self.dim)
        self.image_proj = nn.Identity() if keep else nn.Linear(image_dim, self.dim)
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

    def tokens(self, vector: torch.Tensor) -> torch.Tensor:
        """(B, D) -> (B, L, w) by the reading; `flatten` is its inverse."""
        return vector.reshape(vector.shape[0], self.length, self.width)

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """batch with "text" (B, D_text) or "tokens" (B, T), and "image" (B, D_image); for the
        sequence reading "text_tokens" (B, L_text, D_text) and "image_tokens" (B, L_image,
        D_image) -> text and image tokens, each (B, L, w)."""
        if self.sequence:
            text = self.text_length(self.text_proj(batch["text_tokens"].float()))
            return text, self.image_length(self.image_proj(batch["image_tokens"].float()))
        text = self.words(batch["tokens"]) if self.words is not None else batch["text"]
        return self.tokens(self.text_proj(text)), self.tokens(self.image_proj(batch["image"]))


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
