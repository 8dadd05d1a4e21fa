"""SG-MFT and every compared method as one wrapper: inputs -> [SIM] -> fusion -> head.

    model = MultimodalModel(ModelConfig(dim=64), text_dim=512, image_dim=1280, num_classes=8)
    out = model({"text": (B, 512), "image": (B, 1280)})   # ModelOutput: logits, fused, gate, probes
    loss = model.loss(out, labels)

Beside the wrapper, every model carries unimodal probes (`sgmft.models.fallback`): linear
classifiers on each modality's frozen features, fitted after training, that give the evidence
of a prediction and, with ``fallback``, take part in it; and a temperature T (a buffer, 1 until
fitted on out-of-fold predictions) that divides the output logits: the prediction's
probabilities are softmax(logits / T), calibrated, with the argmax unchanged.

Presets of the paper's tables are named configurations in `sgmft.models.variants`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from sgmft.models.config import ModelConfig
from sgmft.models.fallback import UnimodalProbes
from sgmft.models.heads import HeadOutput  # registers the heads, and via fusion.py the fusions
from sgmft.models.inputs import InputAdapter
from sgmft.models.interaction import SimilarityInteraction
from sgmft.models.registry import FUSIONS, HEADS

#: the default of ``min_gain``
UNSURE_MIN_GAIN = 0.05


@dataclass
class ModelOutput:
    logits: torch.Tensor                 # (B, C) the prediction: softmax(logits) are its calibrated
                                         # probabilities (with ``fallback``: log-mixture / T)
    fused: torch.Tensor                  # M_fuse (B, fused_dim), for t-SNE
    head_logits: torch.Tensor            # (B, C) the head's own output, which training fits (in eval
                                         # mode with members: the ensemble's log-probabilities)
    gate: torch.Tensor | None = None     # P^m (B, L, w) when SIM is on
    unimodal: dict[str, torch.Tensor] = field(default_factory=dict)   # a head's own unimodal logits
    streams: dict[str, torch.Tensor] = field(default_factory=dict)
    probes: dict[str, torch.Tensor] = field(default_factory=dict)     # "text", "image": (B, C)


class MultimodalModel(nn.Module):
    """inputs (projections and readings) -> SIM (optional) -> fusion module -> head."""

    def __init__(self, config: ModelConfig, text_dim: int, image_dim: int, num_classes: int,
                 vocab_size: int = 1, shared_space: bool = False,
                 token_lengths: tuple[int, int] | None = None):
        super().__init__()
        self.config = config
        head = HEADS.get(config.head)
        self.inputs = InputAdapter(config, text_dim, image_dim, vocab_size, shared_space,
                                   token_lengths, learned=getattr(head, "learns_inputs", False))
        length, width = self.inputs.length, self.inputs.width
        self.sim = SimilarityInteraction(length, width, config) if config.sim else None
        self.fusion = FUSIONS.get(config.fusion)(length, width, config)
        self.head = head(self.fusion.fused_dim, self.fusion.stream_dim, num_classes, config)
        self.probes = UnimodalProbes(text_dim, image_dim, num_classes)
        self.register_buffer("temperature", torch.tensor(1.0))
        self.register_buffer("decision_bias", torch.zeros(num_classes))   # label = argmax(logits + this)
        #: an answer must be this much more probable than its label's share of the training posts
        #: (`prior`), else it is "unsure" (`answer`)
        self.register_buffer("min_gain", torch.tensor(UNSURE_MIN_GAIN))
        #: the cross-fit ensemble: the fold models, whose fused heads' probabilities are averaged
        #: with this model's (none until `add_members`; a run's weights say how many)
        self.members = nn.ModuleList()
        self.use_members = True

    @property
    def input_names(self) -> tuple[str, ...]:
        """The batch keys the model reads: the fusion path's text and image inputs, then the
        pooled features the probes read, each once."""
        if self.config.reading == "sequence":
            fusion = ("text_tokens", "image_tokens")
        else:
            fusion = ("text" if self.config.text_input == "features" else "tokens", "image")
        return tuple(dict.fromkeys((*fusion, "text", "image")))

    def decide(self, logits: torch.Tensor) -> torch.Tensor:
        """The labels (B,) of output logits (B, C): the argmax after the decision offsets
        (zero unless ``decision = "balanced"`` chose some)."""
        return (torch.log_softmax(logits.float(), -1) + self.decision_bias).argmax(-1)

    def answer(self, logits: torch.Tensor, min_gain: float | None = None) -> torch.Tensor:
        """The answers (B,) of output logits (B, C): the decided label (`decide`), or -1
        ("unsure") where its probability is less than ``min_gain`` (default the model's) above
        how common the label was in training: an answer no better than guessing from the label
        shares. The rule of `sgmft predict`, `evaluate` and the ONNX graph alike."""
        decided = self.decide(logits)
        top = torch.softmax(logits.float(), -1).gather(1, decided[:, None])[:, 0]
        gain = self.min_gain if min_gain is None else torch.tensor(min_gain)
        unsure = (top - self.probes.prior[decided]) < gain
        return torch.where(unsure & (gain > 0), torch.full_like(decided, -1), decided)

    def add_members(self, models: list[MultimodalModel]) -> None:
        """Make the cross-fit ensemble: ``models`` (the fold models, of this configuration) answer
        beside this one; their own probes, temperature and members are never used."""
        for model in models:
            model.members = nn.ModuleList()
            self.members.append(model)

    def network(self, batch: dict[str, torch.Tensor]) -> tuple[HeadOutput, torch.Tensor, torch.Tensor | None]:
        """The trained network alone: inputs -> SIM -> fusion -> head. Returns the head's output,
        M_fuse (B, F) and the gate P^m (or None)."""
        text, image = self.inputs(batch)
        gate = None
        if self.sim is not None:
            text, image, gate = self.sim(text, image)
        fused = self.fusion(text, image)
        return self.head(fused), fused.fused, gate

    def ensemble_logits(self, head_logits: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B, C) log of the mean of this model's and its members' head probabilities (the head's
        logits unchanged without members, or with ``use_members`` off)."""
        if not len(self.members) or not self.use_members:
            return head_logits
        probs = torch.softmax(head_logits.float(), -1)
        for member in self.members:
            probs = probs + torch.softmax(member.network(batch)[0].logits.float(), -1)
        return torch.log((probs / (1 + len(self.members))).clamp_min(1e-12))

    @torch.no_grad()
    def set_temperature(self, value: float) -> None:
        """The calibration temperature T > 0 of the output logits."""
        if not value > 0:
            raise ValueError(f"temperature {value}; expected > 0")
        self.temperature.fill_(value)

    def forward(self, batch: dict[str, torch.Tensor]) -> ModelOutput:
        """batch: the `input_names` tensors (and optionally "present", (B, 2) booleans: whether
        each post has its text and its image) -> `ModelOutput`."""
        head, fused, gate = self.network(batch)
        probes = self.probes(batch["text"], batch["image"])
        head_logits = head.logits if self.training else self.ensemble_logits(head.logits, batch)
        logits = (self.probes.mix(head_logits, probes, batch.get("present")) if self.config.fallback
                  else head_logits) / self.temperature
        return ModelOutput(logits, fused, head_logits, gate, head.unimodal, head.streams, probes)

    def loss(self, output: ModelOutput, labels: torch.Tensor,
             label_smoothing: float = 0.0) -> torch.Tensor:
        """The head's training loss on its own output (the probes are fitted separately)."""
        head = HeadOutput(output.head_logits, output.unimodal, output.streams)
        return self.head.loss(head, labels, label_smoothing)
