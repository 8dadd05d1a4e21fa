"""The shares of the labels in groups of posts, each with a 95 % interval, from the deployed
model's probabilities.

Every estimator takes ``probs`` (N, K), the posts sorted by group, and ``starts`` (G,), the
first row of each group (``starts[0] == 0``), and returns an `Estimate` of (G, K) arrays, so that
a million groups cost a few array operations, not a Python loop. The shares of a group sum to 1.

- ``cc`` (classify and count): the share of posts whose top label is each label; Wilson
  intervals. Biased whenever the model errs unevenly across labels (Forman 2008).
- ``pcc`` (probabilistic cc): the mean probability; the interval of the true count of a group
  whose labels are drawn from those probabilities (Poisson-binomial: variance sum p(1 - p)).
- ``acc`` / ``pacc`` (adjusted, Forman 2008; Bella et al. 2010): solve q = M p for p, where q is
  the cc (pcc) share and M the held-out posts' rates (`Rates.hard`, `Rates.soft`), then clip to
  [0, 1] and rescale (QuaPy's ``clip``). The interval is the delta method's, given the group's
  labels: the group's own spread and that of the rates, mapped through M's inverse.
- ``emq`` (Saerens, Latinne and Decaestecker 2002): EM re-estimates the shares and the posteriors
  they imply from the training shares, stopping as QuaPy's ``EMQ.EM``; the interval is the
  likelihood-ratio interval of the mixture's shares (`likelihood_bounds`).

Intervals are clipped to [0, 1] and widened by half a post on each side (a count is whole).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from sgmft.metrics.intervals import wilson
from sgmft.quantify.rates import Rates

Z95 = 1.959964
#: EM's stopping rule, as QuaPy's EMQ: mean absolute change below EPSILON after more than 10 steps
EPSILON, MAX_ITER = 1e-4, 1000


@dataclass
class Estimate:
    """(G, K) shares, and the low and high ends of their 95 % intervals; method: its name."""

    shares: np.ndarray
    low: np.ndarray
    high: np.ndarray
    method: str


def sizes_of(starts: np.ndarray, n: int) -> np.ndarray:
    """(G,) the posts of each group, from its first rows and the posts in all."""
    return np.diff(np.append(starts, n)).astype(np.float64)


def group_sums(values: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """(G, ...) the sum of ``values`` (N, ...) over each group's rows."""
    return np.add.reduceat(values, starts, axis=0)


def clip_normalise(shares: np.ndarray) -> np.ndarray:
    """(G, K) clipped to [0, 1] and rescaled to sum to 1 (all zero: uniform), as QuaPy's clip."""
    clipped = np.clip(shares, 0.0, 1.0)
    total = clipped.sum(1, keepdims=True)
    return np.where(total > 0, clipped / np.where(total > 0, total, 1.0), 1.0 / shares.shape[1])


def _interval(shares: np.ndarray, sd: np.ndarray, n: np.ndarray, method: str) -> Estimate:
    half = Z95 * sd + 0.5 / n[:, None]
    return Estimate(shares, np.clip(shares - half, 0.0, 1.0), np.clip(shares + half, 0.0, 1.0), method)


def cc(probs: np.ndarray, starts: np.ndarray, rates: Rates | None = None) -> Estimate:
    """Classify and count: each label's share of the group's top labels (Wilson intervals)."""
    n = sizes_of(starts, len(probs))
    counts = group_sums(np.eye(probs.shape[1])[probs.argmax(1)], starts)
    low, high = wilson(counts, n[:, None])
    return Estimate(counts / n[:, None], low, high, "cc")


def pcc(probs: np.ndarray, starts: np.ndarray, rates: Rates | None = None) -> Estimate:
    """The mean probability; the Poisson-binomial interval of the group's true count."""
    n = sizes_of(starts, len(probs))
    shares = group_sums(probs, starts) / n[:, None]
    sd = np.sqrt(group_sums(probs * (1 - probs), starts)) / n[:, None]
    return _interval(shares, sd, n, "pcc")


def _adjusted(q: np.ndarray, n: np.ndarray, rates: Rates, soft: bool, method: str) -> Estimate:
    """Solve q = M p (G groups at once), clip, and the delta-method interval: with A = M^-1,
    Var p = A (sum_j p_j C_j / n + sum_j p_j^2 C_j / m_j) A^T, C_j the covariance of one post's
    output given label j and m_j the held-out posts of label j."""
    matrix = rates.soft if soft else rates.hard
    inverse = np.linalg.inv(matrix) if np.linalg.matrix_rank(matrix) == rates.k else np.linalg.pinv(matrix)
    shares = clip_normalise(q @ inverse.T)
    cov = rates.covariances(soft)
    per_rate = cov / np.maximum(rates.per_class, 1.0)[:, None, None]
    spread = np.einsum("gj,jab->gab", shares, cov) / n[:, None, None] + np.einsum(
        "gj,jab->gab", shares**2, per_rate
    )
    variance = np.einsum("ka,gab,kb->gk", inverse, spread, inverse)
    return _interval(shares, np.sqrt(np.maximum(variance, 0.0)), n, method)


def acc(probs: np.ndarray, starts: np.ndarray, rates: Rates | None = None) -> Estimate:
    """Adjusted classify and count: the cc shares corrected by the held-out confusion rates."""
    n = sizes_of(starts, len(probs))
    q = group_sums(np.eye(probs.shape[1])[probs.argmax(1)], starts) / n[:, None]
    return _adjusted(q, n, _needed(rates, "acc", held_out=True), soft=False, method="acc")


def pacc(probs: np.ndarray, starts: np.ndarray, rates: Rates | None = None) -> Estimate:
    """Probabilistic adjusted classify and count: the pcc shares corrected by the held-out
    posts' mean probabilities per true label."""
    n = sizes_of(starts, len(probs))
    q = group_sums(probs, starts) / n[:, None]
    return _adjusted(q, n, _needed(rates, "pacc", held_out=True), soft=True, method="pacc")


def em_shares(
    probs: np.ndarray, starts: np.ndarray, train_prior: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The SLD EM of every group at once: (G, K) shares and (N, K) re-weighted posteriors.
    Each group stops as QuaPy's ``EMQ.EM`` would: its shares' mean absolute change below
    `EPSILON` after more than 10 steps (or `MAX_ITER`)."""
    prior = np.asarray(train_prior, np.float64).copy()
    if np.prod(prior) == 0:
        prior = (prior + EPSILON) / (prior + EPSILON).sum()
    n = sizes_of(starts, len(probs))
    group = np.repeat(np.arange(len(starts)), n.astype(np.int64))
    shares = np.tile(prior, (len(starts), 1))
    posteriors = probs.astype(np.float64)
    active = np.ones(len(starts), bool)
    for step in range(MAX_ITER):
        rows = active[group]
        weighted = (shares[group[rows]] / prior) * probs[rows]
        posteriors[rows] = weighted / weighted.sum(1, keepdims=True)
        offsets = np.concatenate([[0], np.cumsum(n[active])[:-1]]).astype(np.int64)
        new = group_sums(posteriors[rows], offsets) / n[active, None]
        done = (np.abs(new - shares[active]).mean(1) < EPSILON) & (step > 10)
        shares[active] = new
        active[np.flatnonzero(active)[done]] = False
        if not active.any():
            break
    return shares, posteriors


def emq(probs: np.ndarray, starts: np.ndarray, rates: Rates | None = None) -> Estimate:
    """EM-re-estimated shares (the posteriors' mean at EM's fixed point), with likelihood-ratio
    intervals (`likelihood_bounds`)."""
    rates = _needed(rates, "emq")
    shares, _ = em_shares(probs, starts, rates.train_prior)
    n = sizes_of(starts, len(probs))
    prior = rates.train_prior if np.prod(rates.train_prior) else (rates.train_prior + EPSILON)
    low, high = likelihood_bounds(probs / prior, starts, shares)
    half = 0.5 / n[:, None]
    return Estimate(shares, np.clip(low - half, 0.0, 1.0), np.clip(high + half, 0.0, 1.0), "emq")


#: half the 95 % quantile of chi-square with one degree of freedom: the likelihood-ratio bound
LR_DROP = 1.920729
BISECTIONS = 30


def likelihood_bounds(
    ratio: np.ndarray, starts: np.ndarray, shares: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(G, K) low and high ends of each share's 95 % likelihood-ratio interval under the
    mixture log L(pi) = sum_i log sum_k pi_k r_ik (r = probabilities / training shares; ``ratio``
    (N, K)), from its maximum ``shares`` (G, K): along the line that moves share k toward 1 (the
    others shrinking in proportion), and the one that moves it toward 0, the farthest point whose
    log-likelihood is within `LR_DROP` of the maximum, found by bisection. Unlike the Fisher
    information, it holds at the simplex's edge, where EM puts the labels a group lacks."""
    n = sizes_of(starts, len(ratio))
    group = np.repeat(np.arange(len(starts)), n.astype(np.int64))
    mixed = np.maximum((ratio * shares[group]).sum(1), 1e-300)  # (N,)
    best = group_sums(np.log(mixed), starts)
    low, high = shares.copy(), shares.copy()
    for k in range(ratio.shape[1]):
        own = shares[group, k] * ratio[:, k]
        rest = mixed - own  # the other labels' part
        for toward, ends in ((1.0, high), (0.0, low)):

            def mixture_at(
                t: np.ndarray, k: int = k, toward: float = toward, rest: np.ndarray = rest
            ) -> np.ndarray:
                share = shares[:, k] + t * (toward - shares[:, k])  # (G,)
                scale = (1 - share) / np.maximum(1 - shares[:, k], 1e-12)
                return share[group] * ratio[:, k] + scale[group] * rest

            def within(t: np.ndarray) -> np.ndarray:
                return best - group_sums(np.log(np.maximum(mixture_at(t), 1e-300)), starts) <= LR_DROP

            outside = np.ones(len(starts))
            inside = within(outside).astype(np.float64)  # 1 where the whole line is within
            for _ in range(BISECTIONS):
                middle = (inside + outside) / 2
                ok = within(middle)
                inside, outside = np.where(ok, middle, inside), np.where(ok, outside, middle)
            ends[:, k] = shares[:, k] + inside * (toward - shares[:, k])
    return low, high


def _needed(rates: Rates | None, method: str, held_out: bool = False) -> Rates:
    """``rates``, when they hold what ``method`` needs: the training shares (emq), and error rates
    on held-out posts (``held_out``: acc, pacc)."""
    if rates is None or (held_out and not len(rates.labels)):
        raise ValueError(
            f"{method} needs the model's error rates on posts held out from its training, and this run has "
            "none (no validation folds and no calibration part, or trained before runs kept them): use "
            "another method (pcc, emq), or train again"
        )
    return rates


METHODS: dict[str, Callable[[np.ndarray, np.ndarray, Rates | None], Estimate]] = {
    "cc": cc,
    "pcc": pcc,
    "acc": acc,
    "pacc": pacc,
    "emq": emq,
}
#: the method `sgmft profile` uses unless told: ``auto`` = `choose_method`
DEFAULT_METHOD = "auto"


def choose_method(held_out: int, shifted: bool) -> tuple[str, str]:
    """``auto``: pacc when the run has error rates on held-out posts and the batch is not told
    apart from the training posts, else pcc; and why. Under the artificial-prevalence protocol
    (results/2026-12-07-quantify/) pacc had the lowest error where only the label shares move
    (mvsa-lab5: mean absolute error 0.081 against cc's 0.273) and pcc where the posts come from
    an event never seen in training (me16-dev, BostonMarathon held out: 0.328 against cc's 0.411,
    pacc 0.384): adjusting for error rates helps only where those rates still hold."""
    if not held_out:
        return "pcc", "the run has no error rates on held-out posts to adjust with"
    if shifted:
        return "pcc", (
            "the posts are unlike the training posts, so the error rates measured there may not hold; "
            "pcc erred least on new events"
        )
    return "pacc", "no shift from the training posts detected: the held-out error rates are taken to hold"


def estimate(method: str, probs: np.ndarray, starts: np.ndarray, rates: Rates | None = None) -> Estimate:
    """The shares of every group by ``method`` (one of `METHODS`)."""
    if method not in METHODS:
        raise ValueError(
            f"unknown method {method!r} (expected one of: {', '.join(METHODS)}; auto: choose_method)"
        )
    if len(probs) == 0:
        raise ValueError("no posts to estimate shares from")
    return METHODS[method](np.asarray(probs, np.float64), np.asarray(starts, np.int64), rates)
