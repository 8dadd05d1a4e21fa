"""SG-MFT and every compared method as one wrapper: inputs -> [SIM] -> fusion -> head.

    model = MultimodalModel(ModelConfig(dim=64), text_dim=512, image_dim=1280, num_classes=8)
    out = model({"text": (B, 512), "image": (B, 1280)})   # ModelOutput: logits, fused, gate
    loss = model.loss(out, labels)

Presets of the paper's tables are named configurations in `sgmft.models.variants`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from sgmft.models.config import ModelConfig
from sgmft.models.heads import HeadOutput  # registers the heads, and via fusion.py the fusions
from sgmft.models.inputs import InputAdapter
from sgmft.models.interaction import SimilarityInteraction
from sgmft.models.registry import FUSIONS, HEADS


@dataclass
class ModelOutput:
    logits: torch.Tensor                 # (B, C)
    fused: torch.Tensor                  # M_fuse (B, fused_dim), for t-SNE
    gate: torch.Tensor | None = None     # P^m (B, L, w) when SIM is on
    unimodal: dict[str, torch.Tensor] = field(default_factory=dict)
    streams: dict[str, torch.Tensor] = field(default_factory=dict)


class MultimodalModel(nn.Module):
    """inputs (projections and readings) -> SIM (optional) -> fusion module -> head."""

    def __init__(self, config: ModelConfig, text_dim: int, image_dim: int, num_classes: int,
                 vocab_size: int = 1, shared_space: bool = False,
                 token_lengths: tuple[int, int] | None = None):
        super().__init__()
        self.config = config
        self.inputs = InputAdapter(config, text_dim, image_dim, vocab_size, shared_space,
                                   token_lengths)
        length, width = self.inputs.length, self.inputs.width
        self.sim = SimilarityInteraction(length, width, config) if config.sim else None
        self.fusion = FUSIONS.get(config.fusion)(length, width, config)
        self.head = HEADS.get(config.head)(
            self.fusion.fused_dim, self.fusion.stream_dim, num_classes, config)

    @property
    def input_names(self) -> tuple[str, str]:
        """The batch keys the model reads: its text input and its image input."""
        if self.config.reading == "sequence":
            return "text_tokens", "image_tokens"
        return ("text" if self.config.text_input == "features" else "tokens"), "image"

    def forward(self, batch: dict[str, torch.Tensor]) -> ModelOutput:
        text, image = self.inputs(batch)
        gate = None
        if self.sim is not None:
            text, image, gate = self.sim(text, image)
        fused = self.fusion(text, image)
        head = self.head(fused)
        return ModelOutput(head.logits, fused.fused, gate, head.unimodal, head.streams)

    def loss(self, output: ModelOutput, labels: torch.Tensor) -> torch.Tensor:
        return self.head.loss(HeadOutput(output.logits, output.unimodal, output.streams), labels)
