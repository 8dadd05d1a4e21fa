"""Similarity-aware feature polymerizer (paper section 3.2.1, eqs 1-5)."""

from __future__ import annotations

import torch
from torch import nn


class SimilarityPolymerizer(nn.Module):
    """Modality-wise gate P^m (eqs 1, 3) and element-wise similarity P^e (eqs 2, 4-5).

    gate: "softmax" over all D elements (the paper; P^m sums to 1, so each weight is about 1/D),
    "sigmoid" (each weight in (0, 1) on its own), "scaled_softmax" (D * softmax, mean 1),
    "clipped_softmax" (min(D * softmax, 1): an interpolation weight in [0, 1] whose mean is
    below 1). ``temperature`` divides S^m before the gate.
    """

    def __init__(self, gate: str = "softmax", temperature: float = 1.0):
        super().__init__()
        self.gate = gate
        self.temperature = temperature

    def modality_wise(self, text: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        """Eqs 1 and 3: S^m = F_text (*) F_image, P^m = softmax(S^m / tau); (B, L, w) -> (B, L, w)."""
        s_m = text * image / self.temperature
        if self.gate == "sigmoid":
            return torch.sigmoid(s_m)
        flat = torch.softmax(s_m.reshape(s_m.shape[0], -1), dim=-1).reshape(s_m.shape)
        if self.gate == "softmax":
            return flat
        scaled = flat * (s_m.shape[1] * s_m.shape[2])
        return scaled.clamp(max=1.0) if self.gate == "clipped_softmax" else scaled

    @staticmethod
    def element_wise(text: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        """Eqs 2, 4, 5: S^t = F_text F_image^T, row-wise softmax; (B, L, w) -> (B, L, L).

        Row i is the similarity of text element i to every image element; the transpose of
        S^t gives the image-wise version (Table 4).
        """
        return torch.softmax(text @ image.transpose(1, 2), dim=-1)

    def forward(self, text: torch.Tensor, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """-> {"p_m": (B, L, w), "p_e_text": (B, L, L), "p_e_image": (B, L, L)}."""
        return {
            "p_m": self.modality_wise(text, image),
            "p_e_text": self.element_wise(text, image),
            "p_e_image": self.element_wise(image, text),
        }
