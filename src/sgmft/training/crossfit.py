"""Cross-fitting: every choice made on validation comes from out-of-fold predictions.

With K >= 2 validation folds (`sgmft.data.folds`), the run's model is trained K times, each
time on the training posts outside one fold and early-stopped on that fold, and its predictions
on the fold are kept (``folds/fold-K/``, resumable). Out of those predictions come the number of
epochs (the median of the folds' best epochs), the probes' regularisation, the fallback mixture
(`sgmft.decision.mixture.choose_mixture`: the weights that hold on every fold) and the
temperature (`sgmft.metrics.calibration.fit_temperature`); then the model is trained once more,
on every training post for that many epochs, and the choices are installed in it. With one
fold (``train.folds = 1``, or the manifest's own val rows) the fold's model is the run's model
and nothing is refitted.

The prediction sets are not calibrated here: out-of-fold scores come from the fold models, not
the deployed one, and the choices above were fitted on the same posts. A calibration part held
out of all of it is scored by the deployed model instead (`sgmft.training.run`).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from sgmft.data.folds import Folds
from sgmft.decision.earned import Earned, Units, judge, judge_log_loss
from sgmft.decision.mixture import choose_mixture
from sgmft.decision.offsets import balanced_offsets, judge_offsets
from sgmft.decision.probes import fit_unimodal_probes
from sgmft.decision.temperature import choose_temperature, counted_folds
from sgmft.io import atomic_write
from sgmft.metrics.calibration import ece, log_loss, softmax
from sgmft.models.fallback import COMPONENTS
from sgmft.models.model import MultimodalModel
from sgmft.training.checkpoint import CHECKPOINT
from sgmft.training.config import RunConfig
from sgmft.training.data import Data, select
from sgmft.training.trainer import FitResult, Parallel, fit, predict

log = logging.getLogger(__name__)
#: the mixture every run starts from: the fused head alone
DEFAULT_MIXTURE = (1.0, 0.0, 0.0, 0.0)
FOLD_FILE = "fold.safetensors"


@dataclass
class FoldResult:
    """One fold's model, as far as the run needs it: how it trained, and its predictions on
    the fold."""

    history: list[dict[str, float]]
    best_epoch: int | None
    epochs: int               # epochs it trained
    seconds: float
    logits: torch.Tensor      # (n_fold, C) the fused head's logits on the fold's posts
    state: dict[str, torch.Tensor] = field(default_factory=dict)   # the fold model's weights

    @property
    def kept_epochs(self) -> int:
        """The epochs of the weights it kept (the best epoch's, with early stopping)."""
        return (self.best_epoch + 1) if self.best_epoch is not None else self.epochs

    def record(self, k: int) -> dict[str, Any]:
        return {"fold": k, "epochs": self.epochs, "best_epoch": self.best_epoch,
                "seconds": round(self.seconds, 2)}


def _digest(ids: list[str]) -> str:
    return hashlib.sha256("\x1f".join(ids).encode()).hexdigest()


def _load_fold(folder: Path, val_ids: list[str]) -> FoldResult | None:
    """A finished fold's result, if its file is there and was made on the same posts."""
    path = folder / FOLD_FILE
    if not path.is_file():
        return None
    from safetensors import safe_open

    with safe_open(str(path), "pt") as handle:
        meta = json.loads(handle.metadata()["record"])
    if meta["posts"] != _digest(val_ids):
        return None
    tensors = load_file(path)
    state = {key.removeprefix("model."): value for key, value in tensors.items() if key.startswith("model.")}
    return FoldResult(meta["history"], meta["best_epoch"], meta["epochs"], meta["seconds"],
                      tensors["logits"], state)


def _save_fold(folder: Path, val_ids: list[str], result: FoldResult) -> None:
    """The fold's predictions, record and weights (``model.*``), atomically."""
    meta = {"posts": _digest(val_ids), "history": result.history, "best_epoch": result.best_epoch,
            "epochs": result.epochs, "seconds": result.seconds}
    tensors = {"logits": result.logits.contiguous()} | {
        f"model.{key}": value.detach().cpu().contiguous() for key, value in result.state.items()}
    atomic_write(folder / FOLD_FILE, lambda tmp: save_file(tensors, str(tmp),
                                                           metadata={"record": json.dumps(meta)}))
    (folder / CHECKPOINT).unlink(missing_ok=True)


def rows_of(tensors: Data, rows: np.ndarray) -> Data:
    """The tensors' rows where ``rows`` (N,) booleans are true (features stay views)."""
    return select(tensors, np.nonzero(rows)[0])


@dataclass
class Training:
    """What every model of a run is trained with: the configuration, a model factory (given the
    rows it trains on), the training tensors, and how (resumed, shown, in which processes, on
    which device)."""

    config: RunConfig
    make_model: Callable[[Data], MultimodalModel]
    tensors: Data
    resume: bool = False
    progress: bool = True
    parallel: Parallel = field(default_factory=Parallel)
    device: str | None = None


def fit_fold(job: Training, folder: Path, fold: np.ndarray, k: int,
             on_epoch_end=None) -> tuple[FitResult, torch.Tensor, MultimodalModel]:
    """Train on the rows outside fold ``k``, early-stopped on fold ``k``, in ``folder``: the
    fit, the fused head's logits on the fold (n_k, C), and the model."""
    train, val = rows_of(job.tensors, fold != k), rows_of(job.tensors, fold == k)
    model = job.make_model(train)
    result = fit(model, train, job.config.train, folder, val, job.resume, job.progress, on_epoch_end,
                 job.parallel, job.device)
    logits = predict(model, val, job.config.train.eval_batch_size)["head_logits"]
    return result, logits, model


def fit_folds(job: Training, out: Path, folds: Folds, on_epoch_end=None) -> list[FoldResult]:
    """Every fold's model (K >= 2), each in ``out/folds/fold-K``; a finished fold is read back
    when resuming. ``on_epoch_end`` (a study's pruning) sees the first fold's epochs."""
    parallel = job.parallel
    fold = np.asarray(folds.fold)
    results = []
    for k in range(folds.k):
        folder = out / "folds" / f"fold-{k}"
        val_ids = [i for i, f in zip(folds.ids, folds.fold, strict=True) if f == k]
        done = _load_fold(folder, val_ids) if job.resume else None
        if done is None:
            if parallel.is_main:
                folder.mkdir(parents=True, exist_ok=True)
            log.info("fold %d of %d: %d posts held out", k + 1, folds.k, len(val_ids))
            result, logits, model = fit_fold(job, folder, fold, k, on_epoch_end if k == 0 else None)
            state = {key: value.detach().cpu().clone() for key, value in model.state_dict().items()}
            done = FoldResult(result.history, result.best_epoch, len(result.history), result.seconds, logits,
                              state)
            if parallel.is_main:
                _save_fold(folder, val_ids, done)
            parallel.barrier()
        results.append(done)
    return results


def epochs_choice(config: RunConfig, results: list[FoldResult], units: Units) -> Earned:
    """The refit's epochs, earned like every other choice: the default is the configured
    ``train.epochs``; the candidate the median of the epochs of the weights the folds kept (the
    best epoch's with early stopping). Each fold's gain is its validation log-loss at the default
    epoch (at its last epoch when it stopped before: a lower bound) less the loss at its best;
    earned when the folds' 95 % t-interval of the mean gain is above zero and the held-out units
    inform (`sgmft.decision.earned.judge`)."""
    default = config.train.epochs
    kept = [r.kept_epochs if config.train.early_stopping else r.epochs for r in results]
    candidate = max(1, int(np.ceil(np.median(kept))))
    gains = []
    for result in results:
        losses = [h.get("val_loss") for h in result.history]
        if result.best_epoch is None or not losses or losses[0] is None:
            continue
        at_default = losses[min(default, len(losses)) - 1]
        gains.append(at_default - losses[result.best_epoch])
    if len(gains) >= 2:
        from scipy.stats import t

        mean, spread = float(np.mean(gains)), float(np.std(gains, ddof=1) / np.sqrt(len(gains)))
        low, high = mean - t.ppf(0.975, len(gains) - 1) * spread, mean + t.ppf(0.975, len(gains) - 1) * spread
    else:
        mean, low, high = 0.0, 0.0, 0.0
    earned = judge("epochs", default, candidate, mean, low, high, units,
                   "the folds' validation log-loss at the default epoch less at their best (over folds)")
    if len(gains) < 2 and earned.earned:
        earned.earned, earned.why = False, "not earned: fewer than two folds recorded their validation losses"
    return earned


def final_config(config: RunConfig, results: list[FoldResult],
                 units: Units | None = None) -> tuple[RunConfig, dict]:
    """The refit's settings and the record of its epochs (`epochs_choice`): the candidate's
    epochs without stretching (the folds' epochs were stretched already), or the default's as the
    configuration asks (stretched by ``train.min_steps`` on the refit's posts); no early stopping.
    The refit trains on 1 / (1 - 1/K) times the posts of a fold's model for the same epochs, so
    it takes that many more steps: the convention of scikit-learn's and LightGBM's refits after
    cross-validated early stopping."""
    units = units or Units(np.zeros(0, np.int64), 0, "none")
    earned = epochs_choice(config, results, units)
    if earned.earned:
        train = replace(config.train, epochs=earned.candidate, early_stopping=0, min_steps=0)
    else:
        train = replace(config.train, early_stopping=0)
    return replace(config, train=train), earned.record()


def oof_logits(folds: Folds, results: list[FoldResult], num_classes: int) -> np.ndarray:
    """(N, C) the fused head's out-of-fold logits, in ``folds.ids`` order (zeros for rows
    without a fold)."""
    fold = np.asarray(folds.fold)
    logits = np.zeros((len(fold), num_classes))
    for k, result in enumerate(results):
        logits[fold == k] = result.logits.double().numpy()
    return logits


def _priors(labels: np.ndarray, fold: np.ndarray, refit: np.ndarray,
            num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row with a fold, the class frequencies of that fold's training rows (N, C); and the
    frequencies of the rows the final model trains on, ``refit`` (C,)."""
    out = np.zeros((len(labels), num_classes))
    for k in sorted(set(fold.tolist()) - {-1}):
        counts = np.bincount(labels[fold != k], minlength=num_classes)
        out[fold == k] = counts / counts.sum()
    final = np.bincount(labels[refit], minlength=num_classes)
    return out, final / final.sum()


def validation_units(folds: Folds, labels: np.ndarray) -> Units:
    """The bootstrap units (`sgmft.decision.earned.Units`) of the validated posts, in ``ids``
    order: the grouping column's values asked for (events, users) when the data has it, else the
    near-duplicate image groups."""
    rows = np.asarray(folds.fold) >= 0
    how = "held-out values of its grouping column" if folds.units_by_column else "held-out image groups"
    return Units.of(folds.validated_units(), labels[rows], how)


def finish_model(model: MultimodalModel, config: RunConfig, tensors: dict[str, torch.Tensor],
                 folds: Folds, head_oof: np.ndarray | None, memo: dict | None = None) -> dict[str, Any]:
    """After training: fit the probes, and from out-of-fold predictions the mixture (with
    ``fallback``), the temperature and the decision offsets (``decision = balanced``), each kept
    at its default (`sgmft.decision.probes.DEFAULT`, the fused head alone, T = 1, no offsets)
    unless its gain is earned (`sgmft.decision.earned`); install them in ``model``. Returns the
    record, ``decisions`` holding every choice's default, candidate, gain and interval, and
    ``oof``: the out-of-fold probabilities as the run answers (N, K) with their labels (N,) and
    bootstrap units (N,)."""
    model.cpu()
    fold, labels = np.asarray(folds.fold), tensors["label"].numpy()
    num_classes = model.probes.prior.shape[0]
    refit = fold == -1 if folds.k == 1 else np.ones(len(fold), bool)
    fold_prior, prior = _priors(labels, fold, refit, num_classes)
    model.probes.set_mixture(tuple(model.probes.mixture.tolist()), torch.from_numpy(prior).float())
    if folds.k == 0 or head_oof is None:
        probes, _ = fit_unimodal_probes(model, tensors, None, seed=config.train.seed, memo=memo)
        return {"probes": probes}
    units = validation_units(folds, labels)
    seed = config.train.seed
    probes, probe_oof = fit_unimodal_probes(model, tensors, fold, refit, units, seed, memo)
    rows = fold >= 0
    y = labels[rows]
    components = np.stack([softmax(head_oof[rows]), softmax(probe_oof["text"][rows]),
                           softmax(probe_oof["image"][rows]), fold_prior[rows]])
    decisions: dict[str, Any] = {"units": {"count": units.count, "informative": units.informative,
                                           "how": units.how},
                                 "probe_text": probes["text"]["earned"],
                                 "probe_image": probes["image"]["earned"]}
    found: dict[str, Any] = {"probes": probes, "decisions": decisions}
    chosen = components[0]
    if config.model.fallback:
        weights, record = choose_mixture(components, y, fold[rows])
        candidate = np.tensordot(np.asarray(weights), components, axes=1)
        earned = judge_log_loss("mixture", list(DEFAULT_MIXTURE), list(weights), components[0], candidate, y,
                                units, seed)
        decisions["mixture"] = earned.record()
        model.probes.set_mixture(tuple(earned.choice), torch.from_numpy(prior).float())
        chosen = candidate if earned.earned else components[0]
        found["mixture"] = record | {"weights": dict(zip(COMPONENTS, earned.choice, strict=True)),
                                     "candidate": record["weights"]}
    majority = prior.argmax()     # the most common class of the rows the final model trains on
    found["validation"] = {"posts": int(rows.sum()), "accuracy": float((chosen.argmax(1) == y).mean()),
                           "majority_accuracy": float((y == majority).mean())}
    log_probs = np.log(np.clip(chosen, 1e-12, 1.0))
    errors = int((chosen.argmax(1) != y).sum())
    candidate_t, rule = choose_temperature(config.model.calibration, folds, log_probs, y, fold[rows], errors)
    earned = judge_log_loss("temperature", 1.0, round(candidate_t, 6), chosen,
                            softmax(log_probs / candidate_t), y, units, seed)
    decisions["temperature"] = earned.record()
    temperature = float(earned.choice)
    if not earned.earned and candidate_t != 1.0:
        rule = f"the default T = 1 ({earned.why}; candidate: {rule})"
    model.set_temperature(temperature)
    calibrated = softmax(log_probs / temperature)
    parts = counted_folds(fold[rows])
    worst = [max(log_loss(p[part], y[part]) for part in parts) for p in (chosen, calibrated)]
    found["calibration"] = {
        "temperature": temperature, "rule": rule, "candidate": candidate_t, "posts": int(rows.sum()),
        "errors": errors, "worst_fold_log_loss": {"before": worst[0], "after": worst[1]},
        "before": {"log_loss": log_loss(chosen, y), "ece": ece(chosen, y)},
        "after": {"log_loss": log_loss(calibrated, y), "ece": ece(calibrated, y)}}
    if config.model.decision == "balanced":
        offsets, record = balanced_offsets(calibrated, y)
        earned = judge_offsets(calibrated, y, offsets, units, seed)
        decisions["decision_offsets"] = earned.record()
        model.decision_bias.copy_(torch.tensor(earned.choice, dtype=torch.float32))
        found["decision"] = {"offsets": [round(float(v), 2) for v in earned.choice], "candidate": record}
    # the out-of-fold error rates and their units (`sgmft.training.rundir.write_rates`)
    found["oof"] = (calibrated, y, units.unit)
    return found
