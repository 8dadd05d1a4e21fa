"""Unimodal probes and the decision-level fallback (beyond the paper): the module the model
carries. How they are fitted is `sgmft.decision`.

Every model carries one linear classifier per modality on the frozen features (a *probe*),
fitted after training, never trained through the fused loss: what the text alone and the image
alone say, for the evidence of a prediction. With ``model.fallback`` the prediction is the
mixture

    p = w_fused softmax(fused) + w_text softmax(text probe) + w_image softmax(image probe)
        + w_prior prior

where *prior* is the training split's class frequencies: the part that holds when nothing else
does. The weights are chosen on out-of-fold predictions (`sgmft.decision.mixture`), so that a fused head
that memorised the training images (and fails on new events) hands over to what carries over.
A post missing a modality gives that modality's probe weight to the other modality's probe,
the part that reads what the post has (`present_weights`): a mixture of "image 1.0" answers a
text-only post with the text probe, not with a uniform distribution. Before fitting the weights
are (1, 0, 0, 0): the fused head alone.

A probe is a multinomial logistic regression on one modality's frozen features
(`sgmft.decision.probes`), folded into one linear map.
"""

from __future__ import annotations

import torch
from torch import nn

MODALITIES = ("text", "image")
#: the parts of the mixture, in the order of its weights
COMPONENTS = ("fused", "text", "image", "prior")


def present_weights(mixture: torch.Tensor, present: torch.Tensor | None, batch: int) -> torch.Tensor:
    """(B, 4) the mixture weights (fused, text, image, prior) of each post: ``mixture`` (4,),
    with a missing modality's probe weight moved to the other modality's probe. present: (B, 2)
    booleans, whether each post has its text and its image (None: both). Each row sums to the
    mixture's sum (a post has at least one modality)."""
    weights = mixture.expand(batch, -1)
    if present is None:
        return weights
    has = present.to(mixture.dtype)                                            # (B, 2)
    text, image = weights[:, 1] * has[:, 0], weights[:, 2] * has[:, 1]
    text = text + weights[:, 2] * (1 - has[:, 1]) * has[:, 0]
    image = image + weights[:, 1] * (1 - has[:, 0]) * has[:, 1]
    return torch.stack([weights[:, 0], text, image, weights[:, 3]], -1)


class UnimodalProbes(nn.Module):
    """Linear probes (buffers, not parameters: they are fitted, not trained), the class prior
    and the mixture weights.

    text (B, D_text), image (B, D_image) -> {"text": (B, C), "image": (B, C)} logits.
    """

    def __init__(self, text_dim: int, image_dim: int, num_classes: int):
        super().__init__()
        for name, dim in zip(MODALITIES, (text_dim, image_dim), strict=True):
            self.register_buffer(f"{name}_weight", torch.zeros(num_classes, dim))
            self.register_buffer(f"{name}_bias", torch.zeros(num_classes))
            self.register_buffer(f"{name}_mean", torch.zeros(dim))   # training mean: a missing modality
        self.register_buffer("prior", torch.full((num_classes,), 1.0 / num_classes))
        self.register_buffer("mixture", torch.tensor([1.0, 0.0, 0.0, 0.0]))   # COMPONENTS order
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))

    @torch.no_grad()
    def set_probe(self, name: str, weight: torch.Tensor, bias: torch.Tensor, mean: torch.Tensor) -> None:
        """Install a fitted probe: weight (C, D), bias (C,), and the training mean (D,) of the
        features it reads."""
        getattr(self, f"{name}_weight").copy_(weight)
        getattr(self, f"{name}_bias").copy_(bias)
        getattr(self, f"{name}_mean").copy_(mean)

    @torch.no_grad()
    def set_mixture(self, weights: tuple[float, ...], prior: torch.Tensor | None = None) -> None:
        """The mixture weights (fused, text, image, prior) and the class prior (C,)."""
        self.mixture.copy_(torch.tensor(weights, dtype=self.mixture.dtype))
        if prior is not None:
            self.prior.copy_(prior)

    def forward(self, text: torch.Tensor, image: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"text": text.float() @ self.text_weight.T + self.text_bias,
                "image": image.float() @ self.image_weight.T + self.image_bias}

    def mix(self, fused: torch.Tensor, probes: dict[str, torch.Tensor],
            present: torch.Tensor | None = None) -> torch.Tensor:
        """Log of the mixture of the class distributions: (B, C) log-probabilities.

        present: (B, 2) booleans, whether each post has its text and its image; a missing
        modality's probe weight goes to the other one's (`present_weights`). Default: both.
        """
        stacked = torch.stack([torch.softmax(fused.float(), -1), torch.softmax(probes["text"], -1),
                               torch.softmax(probes["image"], -1), self.prior.expand_as(fused)])  # (4, B, C)
        weights = present_weights(self.mixture, present, fused.shape[0])                         # (B, 4)
        probs = torch.einsum("bm,mbc->bc", weights, stacked)
        return torch.log(probs.clamp_min(1e-12))
