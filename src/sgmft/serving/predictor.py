"""One trained run plus its frozen encoders, loaded once, predicting posts in batches.

Each prediction gives the label, every calibrated probability, the evidence in words
(`sgmft.serving.evidence`: what the text alone and the image alone say, the fallback mixture, the
gate P^m), its novelty against the training posts (`sgmft.decision.novelty`) and, asked for a
``coverage``, its prediction set: split conformal on the run's calibration posts scored in the
post's presence pattern, weighted for a batch's shift when the batch learned one
(`sgmft.serving.batch_shift`), else widened by the post's novelty flags. ``unsure`` (the best
guess kept beside): below ``min_confidence``; less than ``min_gain`` above the label's training
share (`MultimodalModel.answer`); unlike the training posts in text and image (``novel_unsure``).
A missing modality is read as its training mean, and the mixture gives its probe's weight to the
other modality's probe; a warning says so. A run that did not learn, or whose probabilities are
not calibrated, says so with every answer.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from sgmft.decision.drift import DriftSample, ShiftWeights
from sgmft.device import resolve_precision
from sgmft.encoders import Encoder, create_encoder
from sgmft.encoders.cache import IMPORTED
from sgmft.encoders.features import encoder_options
from sgmft.metrics.conformal import NO_SETS, prediction_sets, weighted_thresholds
from sgmft.models.fallback import COMPONENTS, MODALITIES, present_weights
from sgmft.models.model import UNSURE_MIN_GAIN
from sgmft.serving.evidence import (
    _disagreement,
    _distribution,
    _pattern,
    _uninformative,
    mixture_in_words,
    run_notes,
)
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
    coverage: float | None = None         # ask for the prediction set of this coverage
    min_confidence: float | None = None   # answer "unsure" below this top probability


UNSURE = "unsure"
#: an answer must be this much more probable than its share of the training posts
MIN_GAIN = UNSURE_MIN_GAIN


@dataclass
class Prediction:
    label: str                          # the top label, or "unsure" below the asked confidence
    probabilities: dict[str, float]
    evidence: dict[str, Any]
    warnings: list[str] = field(default_factory=list)
    id: str | None = None
    best_guess: str | None = None       # the top label, when ``label`` is "unsure"
    set: list[str] | None = None        # the prediction set, when a coverage was asked
    coverage: float | None = None
    set_weighted: bool | None = None   # the set is weighted for the batch's covariate shift
    novelty: dict[str, float | None] | None = None   # per modality, the conformal p-value of
                                                      # being like the training posts (None: absent)
    unlike_training: bool | None = None              # flagged (p <= alpha) in a modality it has

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"label": self.label, "probabilities": self.probabilities}
        if self.best_guess is not None:
            out["best_guess"] = self.best_guess
        if self.set is not None:
            out |= {"set": self.set, "coverage": self.coverage}
            if self.set_weighted:
                out["set_weighted"] = True
        if self.novelty is not None:
            out |= {"novelty": self.novelty, "unlike_training": self.unlike_training}
        out |= {"evidence": self.evidence, "warnings": self.warnings}
        return {"id": self.id, **out} if self.id is not None else out


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
                 device: str = "cpu", batch_size: int = 64, min_gain: float = MIN_GAIN,
                 novel_unsure: bool = True):
        self.run = run if isinstance(run, LoadedRun) else load_run(run, device)
        self.labels = self.run.labels
        self.batch_size = batch_size
        self.device = device
        if not 0.0 <= min_gain < 1.0:
            raise ValueError(f"min_gain {min_gain}: expected a number in [0, 1)")
        self.min_gain = min_gain
        self.novel_unsure = novel_unsure   # a post unlike the training posts in both modalities: unsure
        self.drift: DriftSample | None = None   # set by a batch that reports its drift
        self.weighting: ShiftWeights | None = None   # set by a batch whose sets are weighted for its shift
        self.prior = self.run.model.probes.prior.detach().cpu()
        self.notes = run_notes(self.run.info)
        self._thresholds: dict[tuple[float, str], float] = {}
        self._calibrated: set[float] = set()   # the coverages calibrated on held-out posts
        self._encoder = encoder
        if encoder is not None or not self.imported:
            self._check(self.encoder)

    @property
    def imported(self) -> bool:
        """Whether the run was trained on features imported from a file (no encoder of its own)."""
        return (self.run.info["features"].get("encoder") or {}).get("name") == IMPORTED

    @property
    def encoder(self) -> Encoder:
        """The run's encoder (loaded here), or the one given; a run on imported features has
        none: `PredictionError` saying how to predict with it."""
        if self._encoder is None:
            if self.imported:
                raise PredictionError(
                    "this run was trained on imported features and has no encoder of its own: import "
                    "the features of the posts to predict (`sgmft extract MANIFEST --from FILE.parquet "
                    "--out DIR`, then `sgmft predict RUN --manifest MANIFEST --cache DIR`)")
            data = self.run.config.data
            self._encoder = create_encoder(data.encoder, device=self.device,
                                           precision=resolve_precision(data.precision, self.device),
                                           **encoder_options(data.encoder, data.checkpoint))
        return self._encoder

    @property
    def encoder_name(self) -> str:
        """The encoder's name ("imported" for a run on imported features without one)."""
        if self._encoder is None and self.imported:
            return IMPORTED
        return self.encoder.name

    def _check(self, encoder: Encoder) -> None:
        dims = self.run.info["features"]["dims"]
        if tuple(encoder.dim) != (dims["text"], dims["image"]):
            raise ValueError(f"encoder {encoder.name} gives {tuple(encoder.dim)} features, "
                             f"the run was trained on {(dims['text'], dims['image'])}")

    @property
    def calibrated(self) -> bool:
        """Whether the run's temperature was fitted on held-out posts."""
        return str((self.run.info.get("calibration") or {}).get("rule", "")).startswith("fitted")

    def examples(self) -> dict[str, list[str]]:
        """A few training texts per label (the run's ``examples.json``; none for older runs)."""
        path = self.run.folder / "examples.json"
        found = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
        return {label: list(found.get(label, [])) for label in self.labels}

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
        tensors["present"] = torch.tensor([has_text, has_image], dtype=torch.bool).T.reshape(len(posts), 2)
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

    def predict_features(self, features: Features, ids: list[str | None] | None = None,
                         coverage: float | list[float | None] | None = None,
                         min_confidence: float | list[float | None] | None = None) -> list[Prediction]:
        """Predictions from features (encoded here, or read from a feature cache); with
        ``coverage`` the prediction sets, with ``min_confidence`` "unsure" below it (one value
        for every post, or one per post)."""
        outputs = predict(self.run.model, features.tensors, self.batch_size, self.device)
        probabilities = torch.softmax(outputs["logits"], -1)      # calibrated: logits / T
        n = len(features.has_text)
        ids = ids or [None] * n
        coverages = coverage if isinstance(coverage, list) else [coverage] * n
        confidences = min_confidence if isinstance(min_confidence, list) else [min_confidence] * n
        decided = self.run.model.decide(outputs["logits"]).tolist()
        gained = self.run.model.answer(outputs["logits"], self.min_gain).tolist()
        novelty = self._novelty(features, ids)
        found = []
        for i in range(n):
            _, distribution = _distribution(probabilities[i], self.labels)
            label = self.labels[decided[i]]
            evidence = self._evidence(outputs, features, i)
            prediction = Prediction(label, distribution, evidence, list(features.warnings[i]), ids[i])
            unlike = self._flag(prediction, novelty, i)
            top = float(probabilities[i, decided[i]])
            weight = None if novelty is None or "weights" not in novelty else float(novelty["weights"][i])
            self._add_set(prediction, probabilities[i], decided[i], coverages[i], features, i, unlike, weight)
            min_confidence = confidences[i]
            share = float(self.prior[decided[i]])
            if self.novel_unsure and unlike is not None and unlike.all():
                prediction.best_guess, prediction.label = label, UNSURE
                prediction.warnings.append("unsure: this post is unlike the posts this model was trained on, "
                                           f"in text and image alike; {label} is only a best guess")
            elif min_confidence is not None and top < min_confidence:
                prediction.best_guess, prediction.label = label, UNSURE
                prediction.warnings.append(f"unsure: the probability of {label}, {top:.1%}, is below "
                                           f"the asked confidence {min_confidence:.1%}")
            elif gained[i] < 0:
                prediction.best_guess, prediction.label = label, UNSURE
                prediction.warnings.append(f"unsure: the probability of {label}, {top:.1%}, is hardly above "
                                           f"its share of the training posts, {share:.1%}: no better than "
                                           "guessing from how common each label is")
            prediction.warnings += self.notes
            prediction.warnings += _disagreement(evidence)
            found.append(prediction)
        return found

    def _novelty(self, features: Features, ids: list | None = None) -> dict[str, Any] | None:
        """The run's novelty flags of a batch (`sgmft.decision.novelty`), or None without an index."""
        index = self.run.novelty
        if index is None:
            return None
        present = np.asarray([features.has_text, features.has_image]).T
        raw = {name: features.tensors[name].numpy() for name in MODALITIES}
        flags = index.flags(raw, present)
        if self.drift is not None or self.weighting is not None:
            reduced = index.reduced(raw)
            if self.drift is not None and ids is not None:
                self.drift.add([str(i) for i in ids], reduced, flags["unlike"])
            if self.weighting is not None:
                flags["weights"] = self.weighting.weights(reduced)
        return flags

    def _flag(self, prediction: Prediction, novelty: dict[str, Any] | None, i: int) -> np.ndarray | None:
        """Fill the post's novelty fields and warning; (2,) its flags per modality, or None."""
        if novelty is None:
            return None
        p = {name: None if np.isnan(novelty["p"][name][i]) else round(float(novelty["p"][name][i]), 4)
             for name in MODALITIES}
        unlike = novelty["unlike"][i]
        prediction.novelty, prediction.unlike_training = p, bool(unlike.any())
        if unlike.any():
            parts = " and ".join(f"its {name} (p = {p[name]:.3f})"
                                 for name, flag in zip(MODALITIES, unlike, strict=True) if flag)
            prediction.warnings.append(f"unlike the posts this model was trained on: {parts}; its "
                                       "probabilities and set rest on posts like the training posts")
        return unlike

    def _add_set(self, prediction: Prediction, probabilities: torch.Tensor, decided: int,
                 coverage: float | None, features: Features, i: int, unlike: np.ndarray | None,
                 weight: float | None = None) -> None:
        """The prediction set of the post's presence pattern (its calibration posts scored that
        way). In a batch whose shift was learned (``weight``: the post's density ratio), the
        weighted split-conformal set; else widened when the post is flagged unlike the training
        posts: in one modality, the set of half the miss rate (coverage 1 - (1 - c) / 2); in both,
        every label."""
        pattern = _pattern(features.has_text[i], features.has_image[i])
        threshold = self.set_threshold(coverage, pattern)
        if threshold is None:
            return
        flagged = 0 if unlike is None else int(unlike.sum())
        if weight is not None and coverage in self._calibrated:
            scores = self.run.conformal_scores(pattern)
            threshold = float(weighted_thresholds(scores, self.weighting.calibration, np.array([weight]),
                                                  coverage)[0])
            prediction.set_weighted, flagged = True, 0
            if threshold >= 1.0:
                prediction.warnings.append("the set is every label: weighted for this batch's shift, the "
                                           "calibration posts like this post weigh too little to promise "
                                           "less")
        elif flagged == 1:
            threshold = self.set_threshold(1 - (1 - coverage) / 2,
                                           _pattern(features.has_text[i], features.has_image[i]))
        elif flagged == 2:
            threshold = 1.0
        members = prediction_sets(probabilities[None].numpy(), threshold, np.array([decided]))[0]
        prediction.set = [name for name, keep in zip(self.labels, members, strict=True) if keep]
        prediction.coverage = coverage
        if coverage not in self._calibrated:
            prediction.warnings.append(NO_SETS)
        elif flagged:
            widened = "every label" if flagged == 2 else f"coverage {1 - (1 - coverage) / 2:.0%}"
            prediction.warnings.append(f"the set is widened because the post is unlike the training posts "
                                       f"({widened} asked of it)")
        elif (self.run.conformal or {}).get("shift_like") is False:
            prediction.warnings.append("the set's calibration posts could not be held out by group (images "
                                       "stood in), so on posts of a new group it may cover less than asked")

    def set_threshold(self, coverage: float | None, pattern: str = "both") -> float | None:
        """The conformal threshold of ``coverage`` for posts of a presence ``pattern`` (both,
        text_only, image_only; None when not asked). A run that kept no held-out posts to
        calibrate on can promise a coverage only with every label: 1.0."""
        if coverage is None:
            return None
        if not 0.0 < coverage < 1.0:
            raise ValueError(f"coverage {coverage}: expected a number between 0 and 1")
        if (coverage, pattern) not in self._thresholds:
            threshold = self.run.conformal_threshold(coverage, pattern)
            self._thresholds[(coverage, pattern)] = 1.0 if threshold is None else threshold
            if threshold is not None:
                self._calibrated.add(coverage)
        return self._thresholds[(coverage, pattern)]

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
                probs = torch.softmax(outputs[f"probe_{name}"][i], -1)
                label, distribution = _distribution(probs, self.labels)
                evidence[f"{name}_only"] = {"label": label, "probabilities": distribution,
                                            "uninformative": _uninformative(probs),
                                            "source": PROBE_SOURCE.format(name, name)}
        if self.run.config.model.fallback:
            present = torch.tensor([[features.has_text[i], features.has_image[i]]])
            weights = present_weights(self.run.model.probes.mixture.cpu(), present, 1)[0].tolist()
            mixture = {name: round(w, 3) for name, w in zip(COMPONENTS, weights, strict=True)}
            evidence["mixture"] = mixture
            evidence["mixture_words"] = mixture_in_words(mixture)
        return evidence

    def predict(self, posts: list[PostInput], coverage: float | None = None,
                min_confidence: float | None = None) -> list[Prediction]:
        """Predictions for a batch of posts (raises `PredictionError` for an unusable post); a
        post's own ``coverage`` and ``min_confidence`` win over these."""
        if not posts:
            return []
        return self.predict_features(
            self.encode(posts), [p.id for p in posts],
            [p.coverage if p.coverage is not None else coverage for p in posts],
            [p.min_confidence if p.min_confidence is not None else min_confidence for p in posts])
