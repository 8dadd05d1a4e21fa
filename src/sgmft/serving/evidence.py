"""The evidence of an answer in words: what every answer of a run carries (`run_notes`), whether
a probe is near chance, the fallback mixture as a sentence, and a text and an image that disagree."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

#: a probe is "uninformative" when its distribution's entropy is at least this share of the
#: uniform distribution's (it hardly prefers any label)
UNINFORMATIVE_ENTROPY = 0.95

def run_notes(info: dict[str, Any]) -> list[str]:
    """What every answer of a run must carry: that it did not learn, and that its probabilities
    are not calibrated (with the reason)."""
    notes = [f"the run this answer comes from did not learn: {w}" for w in info.get("did_not_learn", [])]
    calibration = info.get("calibration") or {}
    if not str(calibration.get("rule", "")).startswith("fitted"):
        why = calibration.get("rule") or "the run kept no held-out posts to fit a temperature on"
        notes.append(f"the probabilities are not calibrated ({why}): read them as the "
                     "model's scores, not as how often such answers are right")
    return notes


def _uninformative(probs: torch.Tensor) -> bool:
    """Whether a distribution (C,) is near uniform: its entropy at least `UNINFORMATIVE_ENTROPY`
    of log C."""
    entropy = float(-(probs * probs.clamp_min(1e-12).log()).sum())
    return entropy >= UNINFORMATIVE_ENTROPY * math.log(len(probs))


NAMES = {"fused": "the fused model", "text": "the text", "image": "the image",
         "prior": "how common each label was in training"}


def mixture_in_words(mixture: dict[str, float]) -> str:
    """The fallback mixture as a sentence: "the answer blends 70 % the fused model and 30 % the
    text alone", or "the answer comes from the fused model alone"."""
    parts = [(w, NAMES[name]) for name, w in mixture.items() if w > 0]
    if len(parts) == 1:
        return f"the answer comes from {parts[0][1]} alone"
    shares = [f"{round(100 * w)} % {name}" for w, name in parts]
    return "the answer blends " + ", ".join(shares[:-1]) + " and " + shares[-1]


def _disagreement(evidence: dict[str, Any]) -> list[str]:
    """A sentence when the text and the image, each informative, point to different labels;
    one when a part is at chance."""
    notes = []
    text, image = evidence.get("text_only"), evidence.get("image_only")
    for name, part in (("text", text), ("image", image)):
        if part and part["uninformative"]:
            notes.append(f"the {name} alone is uninformative here (close to chance)")
    if text and image and not text["uninformative"] and not image["uninformative"] \
            and text["label"] != image["label"]:
        notes.append(f"text and image disagree: the text says {text['label']} "
                     f"({text['probabilities'][text['label']]:.2f}), the image says {image['label']} "
                     f"({image['probabilities'][image['label']]:.2f})")
    return notes


def _distribution(probabilities: torch.Tensor, labels: list[str]) -> tuple[str, dict[str, float]]:
    """(C,) probabilities -> (most probable label, {label: probability})."""
    values = probabilities.tolist()
    rounded = {label: round(p, 6) for label, p in zip(labels, values, strict=True)}
    return labels[int(np.argmax(values))], rounded


def _pattern(has_text: bool, has_image: bool) -> str:
    """The presence pattern of a post: both, text_only or image_only."""
    return "both" if has_text and has_image else "text_only" if has_text else "image_only"
