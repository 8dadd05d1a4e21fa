"""Unimodal probes and the decision-level fallback (beyond the paper).

Every model carries one linear classifier per modality on the frozen features, fitted on the
training split after training (`sgmft.training.probes`), never trained through the fused loss:
what the text alone and the image alone say, for the evidence of a prediction. With
``model.fallback`` the prediction is the mixture

    p = w_fused * softmax(fused logits) + w_text * softmax(text probe) + w_image * softmax(image probe)

with the weights chosen on the validation part, so that a fused head that memorised the
training images (and fails on new events) can hand over to the modality that generalises.
Before calibration the weights are (1, 0, 0): the fused head alone.
"""

from __future__ import annotations

import torch
from torch import nn

MODALITIES = ("text", "image")


class UnimodalProbes(nn.Module):
    """Linear probes (buffers, not parameters: they are fitted, not trained) and the mixture.

    text (B, D_text), image (B, D_image) -> {"text": (B, C), "image": (B, C)} logits.
    """

    def __init__(self, text_dim: int, image_dim: int, num_classes: int):
        super().__init__()
        for name, dim in zip(MODALITIES, (text_dim, image_dim), strict=True):
            self.register_buffer(f"{name}_weight", torch.zeros(num_classes, dim))
            self.register_buffer(f"{name}_bias", torch.zeros(num_classes))
            self.register_buffer(f"{name}_mean", torch.zeros(dim))   # training mean: a missing modality
        self.register_buffer("mixture", torch.tensor([1.0, 0.0, 0.0]))   # fused, text, image
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))

    @torch.no_grad()
    def set_probe(self, name: str, weight: torch.Tensor, bias: torch.Tensor, mean: torch.Tensor) -> None:
        """Install a fitted probe: weight (C, D), bias (C,), and the training mean (D,) of the
        features it reads."""
        getattr(self, f"{name}_weight").copy_(weight)
        getattr(self, f"{name}_bias").copy_(bias)
        getattr(self, f"{name}_mean").copy_(mean)

    @torch.no_grad()
    def set_mixture(self, weights: tuple[float, float, float]) -> None:
        self.mixture.copy_(torch.tensor(weights, dtype=self.mixture.dtype))

    def forward(self, text: torch.Tensor, image: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"text": text.float() @ self.text_weight.T + self.text_bias,
                "image": image.float() @ self.image_weight.T + self.image_bias}

    def mix(self, fused: torch.Tensor, probes: dict[str, torch.Tensor]) -> torch.Tensor:
        """Log of the mixture of the three class distributions: (B, C) log-probabilities."""
        stacked = torch.stack([fused, probes["text"], probes["image"]])       # (3, B, C)
        probs = (self.mixture[:, None, None] * torch.softmax(stacked, dim=-1)).sum(0)
        return torch.log(probs.clamp_min(1e-12))
