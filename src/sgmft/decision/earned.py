"""Choices that are earned: each fitted choice of the decision layer starts from a fixed default
and moves only when its gain on held-out posts beats the noise of those posts.

Posts of one event (one user, one re-posted photo) are not independent: a gain made on one
large event is one observation, not hundreds. So the noise is a bootstrap over held-out
*units* (`Units`: the groups the validation held out by, the events or users when the data has
them), never over posts: resample the units with replacement, recompute the gain, and take its
95 % interval. A choice is earned when the interval's low end is above zero and every label is
shown by at least `MIN_INFORMATIVE` held-out units (`Units.of`). With one or two units showing
some label nothing is earned, whatever the gain: the run keeps its defaults and says why.

Every record (`Earned.record`) says the default, the candidate, the gain with its interval, and
whether (and why not) it was taken; ``run.json`` keeps them under ``decisions``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

#: the bootstrap's draws and the interval's level
DRAWS, LEVEL = 1000, 0.95
#: fewer informative units than this earn nothing
MIN_INFORMATIVE = 3


@dataclass(frozen=True)
class Units:
    """The bootstrap units of the validated posts: ``unit[i]`` (N,) ints, the unit of post i;
    ``informative`` how many units show the label the fewest units show (`of`); ``how`` the
    units in words."""

    unit: np.ndarray
    informative: int
    how: str

    @classmethod
    def of(cls, values: list, labels: np.ndarray, how: str) -> Units:
        """Units from each validated post's group value (None: a unit of its own) and label.
        ``informative``: for the label shown by the fewest units, how many units show it. A
        choice is judged by how it treats every label on new groups; when one label appears in a
        single held-out event (the real posts of me16-dev beside five fake-only events), the
        choice's gain on that label rests on one event, whatever the posts it holds."""
        keys = [v if v is not None else ("post", i) for i, v in enumerate(values)]
        index: dict[Any, int] = {}
        unit = np.fromiter((index.setdefault(k, len(index)) for k in keys), np.int64, len(keys))
        pairs = set(zip(np.asarray(labels).tolist(), unit.tolist(), strict=True))
        per_label = Counter(label for label, _ in pairs)
        return cls(unit, min(per_label.values(), default=0), how)

    @property
    def count(self) -> int:
        return int(self.unit.max()) + 1 if len(self.unit) else 0


def bootstrap_draws(units: Units, seed: int = 0, draws: int = DRAWS) -> np.ndarray:
    """(draws, U) how often each unit is drawn in each bootstrap sample (U units with
    replacement)."""
    rng = np.random.default_rng(seed)
    count = units.count
    return rng.multinomial(count, np.full(count, 1.0 / count), size=draws)


def gain_interval(gain: np.ndarray, units: Units, seed: int = 0) -> tuple[float, float, float]:
    """The mean per-post gain (N,) (positive: the candidate is better) and the 95 % interval
    of the mean over a bootstrap of units: each draw weighs every post by its unit's count."""
    sums = np.bincount(units.unit, weights=gain, minlength=units.count)
    sizes = np.bincount(units.unit, minlength=units.count).astype(float)
    counts = bootstrap_draws(units, seed)
    means = (counts @ sums) / np.maximum(counts @ sizes, 1.0)
    low, high = np.quantile(means, [(1 - LEVEL) / 2, (1 + LEVEL) / 2])
    return float(gain.mean()), float(low), float(high)


def statistic_interval(
    statistic: Callable[[np.ndarray], np.ndarray], units: Units, seed: int = 0
) -> tuple[float, float]:
    """The 95 % interval of a statistic that is not a mean of posts (macro-F1): ``statistic``
    takes (draws, U) unit counts and returns (draws,) values."""
    values = statistic(bootstrap_draws(units, seed))
    low, high = np.quantile(values, [(1 - LEVEL) / 2, (1 + LEVEL) / 2])
    return float(low), float(high)


@dataclass
class Earned:
    """One choice: its default, the best candidate, and whether the candidate was earned."""

    name: str
    default: Any
    candidate: Any
    gain: float
    low: float
    high: float
    earned: bool
    why: str
    measure: str

    @property
    def choice(self) -> Any:
        return self.candidate if self.earned else self.default

    def record(self) -> dict[str, Any]:
        return {
            "default": self.default,
            "candidate": self.candidate,
            "choice": self.choice,
            "earned": self.earned,
            "gain": round(self.gain, 6),
            "interval": [round(self.low, 6), round(self.high, 6)],
            "measure": self.measure,
            "why": self.why,
        }


def judge(
    name: str, default: Any, candidate: Any, gain: float, low: float, high: float, units: Units, measure: str
) -> Earned:
    """Whether ``candidate`` earned its place over ``default`` (see the module docstring)."""
    if candidate == default:
        return Earned(
            name, default, candidate, 0.0, 0.0, 0.0, False, "the default is the best candidate", measure
        )
    if units.informative < MIN_INFORMATIVE:
        why = (
            f"not earned: a label is shown by only {units.informative} held-out unit(s) ({units.how}); "
            f"{MIN_INFORMATIVE} per label are needed before a gain can be told from the noise of groups"
        )
        return Earned(name, default, candidate, gain, low, high, False, why, measure)
    earned = bool(low > 0)
    verdict = "earned" if earned else "not earned"
    where = "is above zero" if earned else "includes zero"
    why = f"{verdict}: the gain's 95 % interval over {units.count} units {where}"
    return Earned(name, default, candidate, gain, low, high, earned, why, measure)


def per_post_log_loss(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(N,) -log p(true label) of probabilities (N, C)."""
    return -np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-12, 1.0))


def judge_log_loss(
    name: str,
    default: Any,
    candidate: Any,
    default_probs: np.ndarray,
    candidate_probs: np.ndarray,
    labels: np.ndarray,
    units: Units,
    seed: int = 0,
) -> Earned:
    """`judge` on the per-post log-loss of two sets of out-of-fold probabilities (N, C)."""
    gain = per_post_log_loss(default_probs, labels) - per_post_log_loss(candidate_probs, labels)
    return judge(
        name,
        default,
        candidate,
        *gain_interval(gain, units, seed),
        units,
        "out-of-fold log-loss, lower is better (gain = default - candidate)",
    )
