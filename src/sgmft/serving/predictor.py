"""One trained run plus its frozen encoders, loaded once, predicting posts in batches.

Each prediction gives the label, every class probability, and the evidence: what the text
alone and the image alone say (the run's unimodal probes: logistic regressions fitted on the
training split's features of that one modality), the fallback mixture when the run has one,
and a summary of the modality-wise gate P^m (how much the cross-modal path of eq 12 counted).

A post with only a text or only an image is predicted with the missing modality set to its
training mean (the value ``modality_dropout`` trains the model for), with a warning.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from sgmft.encoders import Encoder, create_encoder
from sgmft.encoders.features import encoder_options
from sgmft.text.cleaning import preprocess_text
from sgmft.training.rundir import LoadedRun, load_run
from sgmft.training.trainer import predict

PROBE_SOURCE = "the run's {} probe (a logistic regression fitted on the training split's {} features)"


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
    label: str
    probabilities: dict[str, float]
    evidence: dict[str, Any]
    warnings: list[str] = field(default_factory=list)
    id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out = {"label": self.label, "probabilities": self.probabilities, "evidence": self.evidence,
               "warnings": self.warnings}
        return {"id": self.id, **out} if self.id is not None else out


def _distribution(probabilities: torch.Tensor, labels: list[str]) -> tuple[str, dict[str, float]]:
    """(C,) probabilities -> (most probable label, {label: probability})."""
    values = probabilities.tolist()
    rounded = {label: round(p, 6) for label, p in zip(labels, values, strict=True)}
    return labels[int(np.argmax(values))], rounded


@dataclass
class Features:
    """What the model reads for a batch of posts, and which modalities each post had."""

    tensors: dict[str, torch.Tensor]
    has_text: list[bool]
    has_image: list[bool]
    warnings: list[list[str]]


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

    @property
    def sequence(self) -> bool:
        return self.run.config.model.reading == "sequence"

    def missing(self, name: str, count: int) -> dict[str, torch.Tensor]:
        """The training-mean features of a missing modality for ``count`` posts: pooled (and
        token states for the sequence reading)."""
        model = self.run.model
        out = {name: getattr(model.probes, f"{name}_mean").detach().cpu().expand(count, -1).clone()}
        if self.sequence:
            shape = self.run.info["features"]["token_shapes"][name]
            mean = getattr(model.inputs, f"{name}_stats").mean.detach().cpu()
            out[f"{name}_tokens"] = mean.expand(count, shape[0], -1).clone()
        return out

    def encode(self, posts: list[PostInput]) -> Features:
        """Encoder features of a batch of posts; raises `PredictionError` for a post with
        neither a usable text nor an image."""
        tokens = [tuple(preprocess_text(p.text)) if p.text else () for p in posts]
        warnings: list[list[str]] = [[] for _ in posts]
        for i, post in enumerate(posts):
            if not tokens[i] and post.image is None:
                raise PredictionError("a post needs a text (non-empty after cleaning) or an image")
            if not tokens[i]:
                warnings[i].append("no usable text: predicted with the training mean of the text "
                                   "features" + (" (the text was empty after cleaning)" if post.text else ""))
            if post.image is None:
                warnings[i].append("no image: predicted with the training mean of the image features")
        tensors = {"tokens": self.run.vocab.encode(tokens, self.run.config.model.max_tokens)}
        has_text = [bool(t) for t in tokens]
        has_image = [p.image is not None for p in posts]
        texts = [" ".join(t) for t in tokens if t]
        images = [p.image for p in posts if p.image is not None]
        for name, present, items in (("text", has_text, texts), ("image", has_image, images)):
            tensors |= self._encode(name, present, items)
        return Features(tensors, has_text, has_image, warnings)

    def _encode(self, name: str, present: list[bool], items: list) -> dict[str, torch.Tensor]:
        """Pooled features (N, D) of one modality (and its token states for the sequence
        reading); the training mean where the modality is missing."""
        out = self.missing(name, len(present))
        rows = [i for i, p in enumerate(present) if p]
        if not rows:
            return out
        if self.sequence:
            pooled, states = getattr(self.encoder, f"encode_{name}s_with_tokens")(items)
            out[f"{name}_tokens"][rows] = torch.from_numpy(np.asarray(states, np.float32))
        else:
            pooled = getattr(self.encoder, f"encode_{name}s")(items)
        out[name][rows] = torch.from_numpy(np.asarray(pooled, np.float32))
        return out

    def predict_features(self, features: Features, ids: list[str | None] | None = None) -> list[Prediction]:
        """Predictions from features (encoded here, or read from a feature cache)."""
        outputs = predict(self.run.model, features.tensors, self.batch_size, self.device)
        probabilities = torch.softmax(outputs["logits"], -1)   # (the fallback's log-probabilities too)
        ids = ids or [None] * len(features.has_text)
        return [Prediction(*_distribution(probabilities[i], self.labels),
                           self._evidence(outputs, features, i), features.warnings[i], ids[i])
                for i in range(len(ids))]

    def _evidence(self, outputs: dict[str, torch.Tensor], features: Features, i: int) -> dict[str, Any]:
        evidence: dict[str, Any] = {}
        if "gate" in outputs:
            gate = outputs["gate"][i]
            evidence["similarity_gate"] = {
                "gate": self.run.config.model.gate,
                "cross_attention_weight_mean": round(float(gate.mean()), 6),
                "cross_attention_weight_max": round(float(gate.max()), 6),
                "self_attention_weight_mean": round(float((1 - gate).mean()), 6),
            }
        for name, present in (("text", features.has_text[i]), ("image", features.has_image[i])):
            if present:
                label, probs = _distribution(torch.softmax(outputs[f"probe_{name}"][i], -1), self.labels)
                evidence[f"{name}_only"] = {"label": label, "probabilities": probs,
                                            "source": PROBE_SOURCE.format(name, name)}
        if self.run.config.model.fallback:
            weights = self.run.model.probes.mixture.tolist()
            evidence["mixture"] = {"fused": round(weights[0], 3), "text": round(weights[1], 3),
                                   "image": round(weights[2], 3)}
        return evidence

    def predict(self, posts: list[PostInput]) -> list[Prediction]:
        """Predictions for a batch of posts (raises `PredictionError` for an unusable post)."""
        if not posts:
            return []
        return self.predict_features(self.encode(posts), [p.id for p in posts])
