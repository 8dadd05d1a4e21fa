"""Heads (paper section 3.3 and the compared methods of Table 1), registered by name.

A head maps `Fused` to `HeadOutput` (class logits, and unimodal logits where it has them) and
owns its loss, so methods with extra objectives need no training script of their own.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from sgmft.models.config import ModelConfig
from sgmft.models.fusion import Fused
from sgmft.models.registry import register_head


@dataclass
class HeadOutput:
    logits: torch.Tensor                                   # (B, C), log-probabilities or logits
    unimodal: dict[str, torch.Tensor] = field(default_factory=dict)   # name -> (B, C)
    streams: dict[str, torch.Tensor] = field(default_factory=dict)    # name -> (B, S), for losses


def multitask_loss(output: HeadOutput, labels: torch.Tensor, unimodal_weight: float,
                   label_smoothing: float = 0.0) -> torch.Tensor:
    """Cross-entropy of the prediction plus ``unimodal_weight`` times each unimodal one.

    Cross-entropy leaves an output that is already a log-distribution (BalanceMLA's mixture)
    as it is, so this is also that mixture's negative log-likelihood.
    """
    terms = [(output.logits, 1.0), *((logits, unimodal_weight) for logits in output.unimodal.values())]
    return sum(weight * F.cross_entropy(logits, labels, label_smoothing=label_smoothing)
               for logits, weight in terms)


class MultimodalClassifier(nn.Module):
    """Eq 18: five fully connected layers (ReLU and dropout between) -> class logits."""

    def __init__(self, in_dim: int, num_classes: int, hidden: tuple[int, ...], dropout: float):
        super().__init__()
        widths = [in_dim, *hidden]
        layers: list[nn.Module] = []
        for a, b in itertools.pairwise(widths):
            layers += [nn.Linear(a, b), nn.ReLU(), nn.Dropout(dropout)]
        layers.append(nn.Linear(widths[-1], num_classes))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_dim) -> (B, C)."""
        return self.layers(x)


@register_head("mlp5")
class ClassifierHead(nn.Module):
    """The paper's head: the 5-layer classifier on M_fuse, cross-entropy (eq 19)."""

    def __init__(self, fused_dim: int, stream_dim: int, num_classes: int, config: ModelConfig):
        super().__init__()
        self.classifier = MultimodalClassifier(fused_dim, num_classes, config.classifier_hidden,
                                               config.dropout)

    def forward(self, fused: Fused) -> HeadOutput:
        return HeadOutput(self.classifier(fused.fused))

    def loss(self, output: HeadOutput, labels: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
        return F.cross_entropy(output.logits, labels, label_smoothing=label_smoothing)


@register_head("unis-mmc")
class UniSMMCHead(nn.Module):
    """UniS-MMC (Zou et al. 2023): a multimodal classifier, a linear head per modality, and a
    unimodality-supervised multimodal contrastive term.

    Contrastive term (InfoNCE across the batch, both directions): a sample's text and image
    representations form a positive pair when both unimodal heads are right; when only one is
    right, the wrong one is pulled towards the right one (which is detached); when both are
    wrong, the pair is left out of the positives.

    The term needs representations it can move: under a shared space (Chinese-CLIP) the inputs
    keep a learned projection (``learns_inputs``), starting as the identity.
    """

    learns_inputs = True

    def __init__(self, fused_dim: int, stream_dim: int, num_classes: int, config: ModelConfig):
        super().__init__()
        self.classifier = MultimodalClassifier(fused_dim, num_classes, config.classifier_hidden,
                                               config.dropout)
        self.text_head = nn.Linear(stream_dim, num_classes)
        self.image_head = nn.Linear(stream_dim, num_classes)
        self.unimodal_weight = config.unimodal_loss_weight
        self.contrastive_weight = config.contrastive_weight
        self.temperature = config.temperature

    def forward(self, fused: Fused) -> HeadOutput:
        return HeadOutput(self.classifier(fused.fused),
                          {"text": self.text_head(fused.text), "image": self.image_head(fused.image)},
                          {"text": fused.text, "image": fused.image})

    def contrastive(self, text: torch.Tensor, image: torch.Tensor, text_right: torch.Tensor,
                    image_right: torch.Tensor) -> torch.Tensor:
        """text, image (B, S); *_right (B,) bool -> scalar loss."""
        keep = text_right | image_right
        if not keep.any():
            return text.sum() * 0.0
        t, i = F.normalize(text, dim=-1), F.normalize(image, dim=-1)
        # the right side anchors the wrong one: detach the anchor where only one is right
        t = torch.where((text_right & ~image_right)[:, None], t.detach(), t)
        i = torch.where((image_right & ~text_right)[:, None], i.detach(), i)
        logits = t @ i.T / self.temperature
        target = torch.arange(len(t), device=t.device)
        per_sample = F.cross_entropy(logits, target, reduction="none") + \
            F.cross_entropy(logits.T, target, reduction="none")
        return per_sample[keep].mean() / 2

    def loss(self, output: HeadOutput, labels: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
        text_logits, image_logits = output.unimodal["text"], output.unimodal["image"]
        loss = multitask_loss(output, labels, self.unimodal_weight, label_smoothing)
        if self.contrastive_weight:
            right_t = text_logits.argmax(-1) == labels
            right_i = image_logits.argmax(-1) == labels
            streams = output.streams["text"], output.streams["image"]
            loss = loss + self.contrastive_weight * self.contrastive(*streams, right_t, right_i)
        return loss


@register_head("balance-mla")
class BalanceMLAHead(nn.Module):
    """BalanceMLA-style decision fusion (Fu et al. 2024; their code was never released).

    What is built: a classifier per modality on its fused stream, each with a learned per-class
    scale on its logits; a softmax over two modality weights predicted from both streams; the
    prediction is the weighted mix of the two class distributions; the loss is its negative
    log-likelihood plus each modality's own cross-entropy (the unimodal objectives that let each
    modality be optimised on its own).
    """

    def __init__(self, fused_dim: int, stream_dim: int, num_classes: int, config: ModelConfig):
        super().__init__()
        hidden = config.classifier_hidden
        self.text_head = MultimodalClassifier(stream_dim, num_classes, hidden, config.dropout)
        self.image_head = MultimodalClassifier(stream_dim, num_classes, hidden, config.dropout)
        self.class_scale = nn.Parameter(torch.ones(2, num_classes))
        self.weigher = nn.Sequential(nn.Linear(2 * stream_dim, 64), nn.ReLU(), nn.Linear(64, 2))
        self.unimodal_weight = config.unimodal_loss_weight

    def forward(self, fused: Fused) -> HeadOutput:
        text = self.text_head(fused.text) * self.class_scale[0]
        image = self.image_head(fused.image) * self.class_scale[1]
        weights = torch.softmax(self.weigher(torch.cat([fused.text, fused.image], -1)), dim=-1)
        probs = weights[:, :1] * torch.softmax(text, -1) + weights[:, 1:] * torch.softmax(image, -1)
        return HeadOutput(torch.log(probs.clamp_min(1e-12)), {"text": text, "image": image})

    def loss(self, output: HeadOutput, labels: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
        """The mixture's negative log-likelihood plus each modality's cross-entropy."""
        return multitask_loss(output, labels, self.unimodal_weight, label_smoothing)
