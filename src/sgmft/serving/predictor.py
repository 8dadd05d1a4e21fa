"""One trained run plus its frozen encoders, loaded once, predicting posts in batches.

Each prediction gives the place, every class probability, and the evidence: a summary of the
modality-wise gate P^m (how much the cross-modal path of eq 12 counted) and what the text alone
and the image alone would predict, from the run's unimodal heads where it has them, else from
the model with the other modality's features zeroed (the output says which).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from sgmft.encoders import Encoder, create_encoder
from sgmft.pipeline import encoder_options
from sgmft.text.cleaning import preprocess_text
from sgmft.training.run import LoadedRun, load_run
from sgmft.training.trainer import predict


class PredictionError(ValueError):
    """A post that cannot be predicted (no usable text and no image)."""


@dataclass
class PostInput:
    """A post to predict: raw text and/or an RGB image (at least one of them)."""

    text: str | None = None
    image: Image.Image | None = None
    id: str | None = None


@dataclass
class Prediction:
    place: str
    probabilities: dict[str, float]
    evidence: dict[str, Any]
    warnings: list[str] = field(default_factory=list)
    id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out = {"place": self.place, "probabilities": self.probabilities, "evidence": self.evidence,
               "warnings": self.warnings}
        return {"id": self.id, **out} if self.id is not None else out


def _distribution(logits: torch.Tensor, labels: list[str]) -> tuple[str, dict[str, float]]:
    probs = torch.softmax(logits, dim=-1).tolist()
    return labels[int(np.argmax(probs))], {label: round(p, 6) for label, p in zip(labels, probs, strict=True)}


class Predictor:
    """Predicts posts with a trained run; ``encoder`` defaults to the run's own encoder."""

    def __init__(self, run: str | Path | LoadedRun, encoder: Encoder | None = None,
                 device: str = "cpu", batch_size: int = 64):
        self.run = run if isinstance(run, LoadedRun) else load_run(run, device)
        self.labels = self.run.labels
        self.batch_size = batch_size
        self.device = device
        data = self.run.config.data
        self.encoder = encoder or create_encoder(
            data.encoder, device=device, **encoder_options(data.encoder, data.checkpoint))
        dims = self.run.info["features"]["dims"]
        if tuple(self.encoder.dim) != (dims["text"], dims["image"]):
            raise ValueError(f"encoder {self.encoder.name} gives {tuple(self.encoder.dim)} features, "
                             f"the run was trained on {(dims['text'], dims['image'])}")

    def _features(self, posts: list[PostInput]) -> tuple[dict[str, torch.Tensor], list[list[str]]]:
        """Encoder features of a batch; a missing modality is zeros, with a warning."""
        warnings: list[list[str]] = [[] for _ in posts]
        tokens = [tuple(preprocess_text(p.text)) if p.text else () for p in posts]
        for i, post in enumerate(posts):
            if not tokens[i] and post.image is None:
                raise PredictionError("a post needs a text (non-empty after cleaning) or an image")
            if not tokens[i]:
                warnings[i].append("no usable text: predicted with zero text features"
                                   + (" (the text was empty after cleaning)" if post.text else ""))
            if post.image is None:
                warnings[i].append("no image: predicted with zero image features")
        sequence = self.run.config.model.reading == "sequence"
        features = {"tokens": self.run.vocab.encode(tokens, self.run.config.model.max_tokens)}
        texts = [" ".join(t) for t in tokens if t]
        images = [p.image for p in posts if p.image is not None]
        for name, present, items in (("text", [bool(t) for t in tokens], texts),
                                     ("image", [p.image is not None for p in posts], images)):
            features |= self._encode(name, present, items, sequence)
        return features, warnings

    def _encode(self, name: str, present: list[bool], items: list, sequence: bool
                ) -> dict[str, torch.Tensor]:
        """Pooled features (N, D) of one modality, and its token states for the sequence
        reading; zeros where the modality is missing."""
        rows = [i for i, p in enumerate(present) if p]
        pooled = np.zeros((len(present), getattr(self.encoder.dim, name)), np.float32)
        out = {}
        if sequence:
            shape = self.run.info["features"]["token_shapes"][name]
            tokens = np.zeros((len(present), *shape), np.float32)
            if rows:
                encode = getattr(self.encoder, f"encode_{name}s_with_tokens")
                pooled[rows], tokens[rows] = encode(items)
            out[f"{name}_tokens"] = torch.from_numpy(tokens)
        elif rows:
            pooled[rows] = getattr(self.encoder, f"encode_{name}s")(items)
        out[name] = torch.from_numpy(pooled)
        return out

    def _outputs(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return predict(self.run.model, features, self.batch_size, self.device)

    def _unimodal(self, features: dict[str, torch.Tensor], outputs: dict[str, torch.Tensor]
                  ) -> dict[str, tuple[torch.Tensor, str]]:
        """Text-only and image-only logits, and where they come from."""
        found = {}
        for name, other in (("text", "image"), ("image", "text")):
            if f"logits_{name}" in outputs:
                found[name] = (outputs[f"logits_{name}"], "the run's unimodal head")
            else:
                hidden = [other, f"{other}_tokens"] + (["tokens"] if other == "text" else [])
                zeroed = {k: torch.zeros_like(v) if k in hidden else v for k, v in features.items()}
                found[name] = (self._outputs(zeroed)["logits"],
                               f"the model with the {other} features zeroed")
        return found

    def predict(self, posts: list[PostInput]) -> list[Prediction]:
        """Predictions for a batch of posts (raises `PredictionError` for an unusable post)."""
        if not posts:
            return []
        features, warnings = self._features(posts)
        outputs = self._outputs(features)
        unimodal = self._unimodal(features, outputs)
        results = []
        for i, post in enumerate(posts):
            place, probabilities = _distribution(outputs["logits"][i], self.labels)
            evidence: dict[str, Any] = {}
            if "gate" in outputs:
                gate = outputs["gate"][i]
                evidence["similarity_gate"] = {
                    "gate": self.run.config.model.gate,
                    "cross_attention_weight_mean": round(float(gate.mean()), 6),
                    "cross_attention_weight_max": round(float(gate.max()), 6),
                    "self_attention_weight_mean": round(float((1 - gate).mean()), 6),
                }
            for name, (logits, source) in unimodal.items():
                only_place, only_probs = _distribution(logits[i], self.labels)
                evidence[f"{name}_only"] = {"place": only_place, "probabilities": only_probs,
                                            "source": source}
            results.append(Prediction(place, probabilities, evidence, warnings[i], post.id))
        return results
