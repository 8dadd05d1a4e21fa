"""`sgmft study`: a hyper-parameter and architecture search with Optuna.

TPE sampling, median pruning on each epoch's validation score, and the study kept in
an SQLite file in the output folder, so that a killed study resumes where it stopped (trials
that were running when it died are marked failed by Optuna's heartbeat and not counted).

Nothing in a study reads the test split. A *study validation* part is carved from the
training split by group (as in `sgmft.data.folds.carve_validation`); every trial trains on
the rest (carving its own early-stopping validation from it, as any run does) and is scored
by its final prediction on the study validation part: accuracy (the default objective) or
macro-F1 (``objective="macro_f1"``, for data whose small classes matter as much as the large
ones). Pruning compares each epoch's validation accuracy (accuracy objective) or validation
loss (macro-F1 objective, which no epoch computes).

One seed per trial is noisy: the best few trials are then re-scored with more seeds
(``confirm`` trials, ``confirm_seeds`` seeds, on the same study validation part), and the
best configuration is the one with the best mean over those seeds.

Writes into the output folder: ``study.db``, ``trials/NNNN/`` (each trial's run folder,
without its checkpoint), ``confirm/NNNN-seedS/`` and ``confirm.json`` (the re-scored trials),
``study.json`` (settings, every trial, importances), ``study.md`` (the report),
``best_config.json`` (the chosen configuration), and ``history.png`` and ``importance.png``.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sgmft.data.folds import carve_validation, validation_column
from sgmft.evaluation.evaluate import test_outputs
from sgmft.io import atomic_write, atomic_write_bytes, atomic_write_json
from sgmft.metrics.classification import macro_f1
from sgmft.provenance import now, versions
from sgmft.research.space import Parameter, draw
from sgmft.training.checkpoint import CHECKPOINT
from sgmft.training.config import RunConfig, resolve_config
from sgmft.training.prepare import PreparedData, prepare_data
from sgmft.training.run import train_run
from sgmft.training.rundir import load_run

log = logging.getLogger(__name__)
STUDY_NAME = "sgmft"
OBJECTIVES = {"accuracy": "accuracy", "macro_f1": "macro-F1"}


def study_split(prepared: PreparedData, fraction: float, seed: int, by: str,
                group_by: str = "group") -> PreparedData:
    """The data a trial sees: train = the training split less the study validation part,
    test = the study validation part, grouped as a run's validation is. The real test split
    is left out altogether."""
    posts = prepared.manifest.posts.having(prepared.split["train"])
    column, images, why = validation_column(prepared.manifest, prepared.split, by, group_by)
    folds = carve_validation(posts, fraction, seed, column, images, why)
    train, val = folds.parts(0)
    how = folds.how
    if not val:
        raise ValueError("the training split is too small to hold out a study validation part")
    log.info("study validation: %d of the %d training posts, %s", len(val), len(posts), how)
    split = {**prepared.split, "train": train, "test": val, "val": [], "study_validation": how}
    return replace(prepared, split=split)


def trial_config(base: dict[str, Any], params: dict[str, Any]) -> RunConfig:
    """The base configuration with a trial's drawn values."""
    overrides = [f"{name}={json.dumps(value)}" for name, value in params.items()]
    return resolve_config(overrides=overrides, base=base, variant=base["variant"])


def _finished(trial) -> bool:
    import optuna

    return trial.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)


def confirm_best(study, base: dict[str, Any], prepared: PreparedData, out: Path, top: int,
                 seeds: int, objective: str = "accuracy", progress: bool = False) -> list[dict[str, Any]]:
    """Re-score the ``top`` completed trials with seeds 0..seeds-1 (seed 0 is the trial itself);
    resumable through ``confirm.json``. Returns records sorted by mean score, best first."""
    import optuna

    path = out / "confirm.json"
    done: dict[str, float] = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    complete = sorted((t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE),
                      key=lambda t: -t.value)[:top]
    records = []
    for trial in complete:
        scores = [trial.value]
        for seed in range(1, seeds):
            key = f"{trial.number}-{seed}"
            if key not in done:
                config = trial_config(base, {**trial.params, "train.seed": seed})
                folder = out / "confirm" / f"{trial.number:04d}-seed{seed}"
                train_run(config, folder, prepared, progress=progress, overwrite=True)
                (folder / CHECKPOINT).unlink(missing_ok=True)
                done[key] = _score(folder, prepared, objective)
                atomic_write_json(path, done)
                log.info("confirm: trial %d seed %d: %.4f", trial.number, seed, done[key])
            scores.append(done[key])
        spread = float(np.std(scores, ddof=1)) if len(scores) > 1 else 0.0
        records.append({"trial": trial.number, "params": trial.params, "scores": scores,
                        "mean": float(np.mean(scores)), "std": spread})
    return sorted(records, key=lambda r: -r["mean"])


def _score(folder: Path, prepared: PreparedData, objective: str = "accuracy") -> float:
    """The objective (accuracy or macro_f1) of a finished trial run on the study validation
    part (its "test")."""
    run = load_run(folder)
    outputs, labels = test_outputs(run, prepared)
    predicted = run.model.decide(torch.from_numpy(outputs["logits"])).numpy()
    if objective == "macro_f1":
        return macro_f1(labels, predicted)
    return float((predicted == labels).mean())


def _objective(parameters: list[Parameter], base: dict[str, Any], prepared: PreparedData,
               out: Path, objective_name: str, progress: bool):
    import optuna

    def objective(trial: optuna.Trial) -> float:
        params = draw(parameters, trial)
        config = trial_config(base, params)
        folder = out / "trials" / f"{trial.number:04d}"
        if folder.exists():
            shutil.rmtree(folder)

        def report(epoch: int, record: dict[str, float]) -> None:
            if "val_accuracy" in record:
                trial.report(record["val_accuracy"] if objective_name == "accuracy"
                             else -record["val_loss"], epoch)
                if trial.should_prune():
                    raise optuna.TrialPruned()

        started = time.perf_counter()
        try:
            train_run(config, folder, prepared, progress=progress, on_epoch_end=report)
        finally:
            (folder / CHECKPOINT).unlink(missing_ok=True)
        score = _score(folder, prepared, objective_name)
        trial.set_user_attr("seconds", round(time.perf_counter() - started, 1))
        info = json.loads((folder / "run.json").read_text(encoding="utf-8"))
        trial.set_user_attr("epochs", len(info["history"]))
        log.info("trial %d: %.4f on study validation (%s)", trial.number, score, params)
        return score

    return objective


def _storage(out: Path):
    """SQLite in the study folder; a heartbeat lets Optuna mark the trials of a killed study
    failed when it is resumed."""
    import warnings

    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RDBStorage(f"sqlite:///{out / 'study.db'}", heartbeat_interval=30,
                                          grace_period=60)


def run_study(base: RunConfig, parameters: list[Parameter], out: Path, trials: int,
              timeout: float | None = None, seed: int = 0, study_fraction: float = 0.2,
              progress: bool = False, confirm: int = 5, confirm_seeds: int = 3,
              objective: str = "accuracy") -> Path:
    """Run (or resume) a study until ``trials`` trials have finished (completed or pruned),
    or ``timeout`` seconds have passed; re-score the best ``confirm`` trials with
    ``confirm_seeds`` seeds; then write the report. ``objective``: accuracy or macro_f1.
    Returns ``out``."""
    import optuna

    if objective not in OBJECTIVES:
        raise ValueError(f"unknown objective {objective!r}; expected one of {', '.join(OBJECTIVES)}")
    out.mkdir(parents=True, exist_ok=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    prepared = study_split(prepare_data(base, progress), study_fraction, seed, base.train.val_by,
                           base.data.group_by)
    study = optuna.create_study(
        study_name=STUDY_NAME, storage=_storage(out), direction="maximize", load_if_exists=True,
        pruner=optuna.pruners.MedianPruner(n_startup_trials=8, n_warmup_steps=3))
    # seeded by the trials already there: a resumed study draws on, it does not draw the same
    # start-up trials again
    study.sampler = optuna.samplers.TPESampler(seed=seed + len(study.trials), n_startup_trials=10)
    settings = {"base_config": base.to_dict(), "space": [p.__dict__ for p in parameters],
                "seed": seed, "study_fraction": study_fraction,
                "study_validation": prepared.split["study_validation"],
                "data_hash": prepared.manifest.data_hash(), "objective": objective}
    _check_same_settings(out, settings)
    done = [t for t in study.trials if _finished(t)]
    started = time.perf_counter()
    if len(done) < trials:
        study.optimize(_objective(parameters, base.to_dict(), prepared, out, objective, progress),
                       n_trials=trials - len(done), timeout=timeout, catch=(ValueError,))
    confirmed = confirm_best(study, base.to_dict(), prepared, out, confirm, confirm_seeds, objective,
                             progress)
    write_report(study, out, settings, time.perf_counter() - started, confirmed)
    return out


def _check_same_settings(out: Path, settings: dict[str, Any]) -> None:
    """A study folder serves one study: refuse to resume it with other settings."""
    path = out / "settings.json"
    current = json.loads(json.dumps(settings))
    if path.is_file():
        saved = {"objective": "accuracy", **json.loads(path.read_text(encoding="utf-8"))}   # older studies
        if saved != current:
            changed = sorted(k for k in current if saved.get(k) != current[k])
            raise ValueError(f"{out} holds a study with other settings ({', '.join(changed)}); "
                             "choose another --out to start a new one")
    atomic_write_json(path, current)


def _importances(study) -> dict[str, float]:
    """fANOVA importance of each parameter drawn in every finished trial (Optuna's evaluator)."""
    import optuna

    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if len(complete) < 3:
        return {}
    try:
        found = optuna.importance.get_param_importances(
            study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0))
    except (RuntimeError, ValueError) as exc:   # e.g. every value the same
        log.warning("no parameter importance: %s", exc)
        return {}
    return {name: float(value) for name, value in found.items()}


def _plots(study, out: Path, importances: dict[str, float]) -> list[str]:
    import warnings

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as optuna_plots

    written = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # Optuna marks its matplotlib plots experimental
        figures = {"history.png": lambda: optuna_plots.plot_optimization_history(study)}
        if importances:
            figures["importance.png"] = lambda: optuna_plots.plot_param_importances(
                study, evaluator=__import__("optuna").importance.FanovaImportanceEvaluator(seed=0))
        for name, make in figures.items():
            axes = make()
            figure = axes.figure
            figure.set_size_inches(8, 4.5)
            atomic_write(out / name, lambda tmp, f=figure: f.savefig(tmp, format="png", dpi=110,
                                                                       bbox_inches="tight"))
            plt.close(figure)
            written.append(name)
    return written


def write_report(study, out: Path, settings: dict[str, Any], seconds: float,
                 confirmed: list[dict[str, Any]]) -> None:
    """study.json, study.md, best_config.json and the plots."""
    import optuna

    metric = OBJECTIVES[settings.get("objective", "accuracy")]
    states = optuna.trial.TrialState
    records = [{"number": t.number, "state": t.state.name, "value": t.value, "params": t.params,
                "seconds": t.user_attrs.get("seconds"), "epochs": t.user_attrs.get("epochs"),
                "duration": t.duration.total_seconds() if t.duration else None} for t in study.trials]
    finished = [t for t in study.trials if _finished(t)]
    wall = sum(r["duration"] or 0.0 for r in records)
    complete = sorted((t for t in study.trials if t.state == states.COMPLETE),
                      key=lambda t: -t.value)
    importances = _importances(study)
    plots = _plots(study, out, importances) if complete else []
    if confirmed:
        chosen = confirmed[0]
        best = trial_config(settings["base_config"], chosen["params"])
        atomic_write_json(out / "best_config.json", {
            "_about": f"trial {chosen['trial']} of study {out}: {100 * chosen['mean']:.2f} ± "
                      f"{100 * chosen['std']:.2f} % {metric} on the study validation part over "
                      f"{len(chosen['scores'])} seeds, the best of the {len(confirmed)} best trials",
            **best.to_dict()})
    counts = {s.name.lower(): sum(t.state == s for t in study.trials)
              for s in (states.COMPLETE, states.PRUNED, states.FAIL, states.RUNNING)}
    atomic_write_json(out / "study.json", {
        "finished": now(), "settings": settings, "counts": counts, "trial_seconds": round(wall, 1),
        "this_session_seconds": round(seconds, 1), "importances": importances, "confirmed": confirmed,
        "trials": records,
        "versions": versions()})
    atomic_write_bytes(out / "study.md", render_report(complete, counts, importances, settings, wall,
                                                       len(finished), plots, confirmed).encode("utf-8"))


def render_report(complete: list, counts: dict[str, int], importances: dict[str, float],
                  settings: dict[str, Any], wall: float, finished: int, plots: list[str],
                  confirmed: list[dict[str, Any]]) -> str:
    per_hour = finished / (wall / 3600) if wall else 0.0
    metric = OBJECTIVES[settings.get("objective", "accuracy")]
    lines = ["# sgmft study", "",
             f"Data hash `{settings['data_hash'][:16]}`; study validation: "
             f"{settings['study_fraction']:.0%} of the training split, {settings['study_validation']} "
             f"(the test split is never read). Objective: {metric} of the final prediction on the "
             "study validation part.", "",
             f"Trials: {counts['complete']} complete, {counts['pruned']} pruned, {counts['fail']} failed; "
             f"{wall / 60:.1f} min of trial time, {per_hour:.0f} finished trials per hour.", ""]
    if complete:
        names = list(dict.fromkeys(k for t in complete for k in t.params))
        lines += ["## Best trials", "", f"| trial | {metric} | " + " | ".join(names) + " |",
                  "|---" * (len(names) + 2) + "|"]
        for t in complete[:10]:
            values = [_fmt(t.params.get(n, "")) for n in names]
            lines.append(f"| {t.number} | {t.value:.4f} | " + " | ".join(values) + " |")
        lines.append("")
    if confirmed:
        lines += [f"## The best trials again, {len(confirmed[0]['scores'])} seeds each", "",
                  "The configuration with the best mean is `best_config.json`.", "",
                  f"| trial | mean {metric} (%) | per seed |", "|---|---|---|"]
        lines += [f"| {r['trial']} | {100 * r['mean']:.2f} ± {100 * r['std']:.2f} | "
                  + ", ".join(f"{100 * s:.2f}" for s in r["scores"]) + " |" for r in confirmed]
        lines.append("")
    if importances:
        lines += ["## Parameter importance (fANOVA)", "", "| parameter | importance |", "|---|---|"]
        lines += [f"| {name} | {value:.3f} |" for name, value in importances.items()]
        lines.append("")
    lines += [f"![{name}]({name})" for name in plots]
    return "\n".join(lines) + "\n"


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)

