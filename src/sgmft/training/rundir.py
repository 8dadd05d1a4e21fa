"""The run folder: claiming it for a run, writing what a finished run leaves, and loading it back.

A run folder holds: ``config.json`` (the resolved RunConfig), ``model.safetensors``,
``labels.json``, ``vocab.json``, ``split.json`` and ``split.arrow`` (the posts of each part, and
the validation folds), ``checkpoint.pt`` (for ``--resume``), ``folds/`` (the fold models'
out-of-fold predictions, see `sgmft.training.crossfit`), ``conformal.json`` and
``conformal.arrow`` (the calibration scores of the prediction sets), ``rates.json`` (held-out
posts' probabilities: the error rates profiles correct for) and ``run.json`` (history, timings,
split, folds and the choices made on them, feature cache, data hash, seed and package versions).
``run.json`` is written last: a folder without it holds no finished run, whatever else it holds.
"""

from __future__ import annotations

import functools
import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.ipc
import torch
from safetensors.torch import load_file, save_file

from sgmft.io import atomic_write, atomic_write_json
from sgmft.metrics.conformal import NO_SETS
from sgmft.models.model import MultimodalModel
from sgmft.provenance import now, versions
from sgmft.quantify.rates import Rates
from sgmft.training.checkpoint import CHECKPOINT
from sgmft.training.config import RunConfig
from sgmft.training.data import Vocabulary
from sgmft.training.prepare import PreparedData, token_lengths
from sgmft.training.splitfile import FILES as SPLIT_FILES
from sgmft.training.splitfile import RunSplit, read_split
from sgmft.training.trainer import FitResult

log = logging.getLogger(__name__)


class RunExistsError(ValueError):
    """The run folder already holds a run, and neither resuming nor overwriting was asked for."""


RUN_FILES = ("model.safetensors", CHECKPOINT, "run.json", *SPLIT_FILES, "vocab.json", "labels.json",
             "conformal.json", "conformal.arrow", "examples.json", "novelty.safetensors", "rates.json")
#: the calibration posts' record (small JSON) and their ids, labels and scores (an Arrow file)
CONFORMAL, CONFORMAL_POSTS = "conformal.json", "conformal.arrow"
RATES = "rates.json"


def claim_folder(out: Path, config: RunConfig, resume: bool, overwrite: bool) -> None:
    """Check that ``out`` may receive this run; with ``overwrite`` clear the old one."""
    saved = out / "config.json"
    same = json.loads(json.dumps(config.to_dict()))
    if resume and saved.is_file() and json.loads(saved.read_text(encoding="utf-8")) != same:
        raise ValueError(f"--resume: {saved} holds another configuration; resume with the same one")
    finished = (out / "run.json").is_file()
    started = any((out / name).exists() for name in (CHECKPOINT, "folds", "model.safetensors"))
    if overwrite:
        for name in RUN_FILES:
            (out / name).unlink(missing_ok=True)
        for folder in ("eval", "folds"):
            shutil.rmtree(out / folder, ignore_errors=True)
    elif finished and not resume:
        raise RunExistsError(f"{out} holds a finished run: pass --overwrite to replace it, or "
                             "choose another --out")
    elif started and not resume:
        raise RunExistsError(f"{out} holds an unfinished run: pass --resume to continue it, or "
                             "--overwrite to start again")


def save_model(out: Path, model: MultimodalModel) -> None:
    """The trained weights (probes and mixture included), atomically."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_write(out / "model.safetensors", lambda tmp: save_file(state, str(tmp)))


EXAMPLES = "examples.json"


def write_examples(out: Path, manifest, ids: list[str], per_label: int = 2) -> None:
    """A few training texts of each label (short ones, in a seeded order), for the web page's
    example posts."""
    import hashlib

    wanted = set(ids)
    found: dict[str, list[tuple[str, str]]] = {label: [] for label in manifest.labels}
    for post_id, text, label in manifest.posts.rows("id", "text", "label"):
        if post_id in wanted and label in found and 6 <= len(text.strip()) <= 120:
            best = found[label]
            best.append((hashlib.sha256(post_id.encode()).hexdigest(), text.strip()))
            if len(best) > 8 * per_label:     # the first in the seeded order are all that is kept
                best.sort()
                del best[per_label:]
    atomic_write_json(out / EXAMPLES, {label: [text for _, text in sorted(best)[:per_label]]
                                       for label, best in found.items()})


#: the score fields of conformal.json's posts, per presence pattern (the post as it is, its text
#: alone, its image alone)
SCORE_FIELDS = {"both": "score", "text_only": "score_text_only", "image_only": "score_image_only"}


def write_conformal_scores(out: Path, posts: list[dict[str, Any]],
                           shift_like: bool | None = None) -> dict[str, Any]:
    """The calibration posts (id, label, scores: 1 - the deployed model's probability of the
    true label, as they are and with one modality only) in ``conformal.arrow``, read in place
    when a predictor asks for a threshold (its size grows with the calibration part: no JSON of
    every post to parse at start-up), and ``conformal.json`` with their count and
    ``shift_like``: whether the part holds out whole groups of the data's grouping column
    (False: images stood in, and the sets may under-cover posts of new groups). None for a run
    without them. Returns what run.json records."""
    if not posts:
        for name in (CONFORMAL, CONFORMAL_POSTS):
            (out / name).unlink(missing_ok=True)
        return {"posts": 0, "how": f"none: {NO_SETS}"}
    columns = {"id": pa.array([p["id"] for p in posts], pa.string()),
               "label": pa.array([p["label"] for p in posts], pa.string())}
    columns |= {key: pa.array([p[key] for p in posts], pa.float64()) for key in SCORE_FIELDS.values()}
    table = pa.table(columns)

    def write(tmp: Path) -> None:
        with pa.ipc.new_file(str(tmp), table.schema) as writer:
            writer.write_table(table)

    atomic_write(out / CONFORMAL_POSTS, write)
    atomic_write_json(out / CONFORMAL, {"shift_like": shift_like, "posts": len(posts),
                                        "file": CONFORMAL_POSTS})
    return {"posts": len(posts), "shift_like": shift_like,
            "how": "split conformal (LAC) on posts held out from training and from every choice, scored by "
                   "the deployed model as they are, text only and image only"}


def read_conformal_posts(folder: Path, record: dict[str, Any]) -> pa.Table:
    """The calibration posts (id, label, the scores of `SCORE_FIELDS`) of the run in ``folder``
    whose ``conformal.json`` is ``record``: memory-mapped from ``conformal.arrow``, or, for runs
    written before it, from the posts the record lists (a pattern they did not score takes
    the score as they are)."""
    if isinstance(record.get("posts"), list):
        posts = record["posts"]
        return pa.table({"id": pa.array([p["id"] for p in posts], pa.string()),
                         "label": pa.array([p["label"] for p in posts], pa.string()),
                         **{key: pa.array([p.get(key, p["score"]) for p in posts], pa.float64())
                            for key in SCORE_FIELDS.values()}})
    with pa.memory_map(str(folder / record.get("file", CONFORMAL_POSTS))) as source:
        return pa.ipc.open_file(source).read_all()


def write_rates(out: Path, calibration: list[dict[str, Any]],
                oof: tuple[np.ndarray, np.ndarray, np.ndarray] | None, train_prior: np.ndarray,
                labels: tuple[str, ...], calibration_units: np.ndarray | None = None) -> dict[str, Any]:
    """``rates.json``: held-out posts' probabilities as the run answers them, their labels and
    their bootstrap units (the events, users or image groups they were held out by: what
    `sgmft.quantify.shift` treats as new groups), whose error rates the adjusted profile shares
    correct for (`sgmft.quantify`), and the training posts' label shares. The calibration posts
    when the run has them (held out from everything, scored by the deployed model; units
    ``calibration_units``), else the out-of-fold predictions (each by the fold model that did not
    train on it: a little less accurate than the deployed ensemble); none without either.
    Returns what run.json records."""
    if calibration:
        probs = np.asarray([p["probabilities"] for p in calibration])
        truth = np.asarray([labels.index(p["label"]) for p in calibration])
        units = calibration_units
        source = "the calibration posts, scored by the deployed model"
    elif oof is not None:
        probs, truth, units = oof
        source = "the out-of-fold predictions of the fold models (mixture and temperature as deployed)"
    else:
        (out / RATES).unlink(missing_ok=True)
        return {"posts": 0, "source": "none: no held-out posts (no validation folds, no calibration part)"}
    saved = {"source": source, "labels": list(labels), "train_prior": np.round(train_prior, 6).tolist(),
             "true": truth.tolist(), "probabilities": np.round(probs, 6).tolist()}
    if units is not None:
        saved["units"] = np.asarray(units).tolist()
    atomic_write_json(out / RATES, saved)
    return {"posts": len(truth), "source": source,
            "units": None if units is None else int(np.unique(units).size)}


def write_run_info(out: Path, config: RunConfig, prepared: PreparedData, result: FitResult,
                    n_train: int, info: dict[str, Any], model: MultimodalModel) -> None:
    header = prepared.cache.header
    atomic_write_json(out / "run.json", {
        "finished": now(),
        "variant": config.variant,
        "seed": config.train.seed,
        "manifest": str(prepared.manifest.path),
        "data_hash": prepared.manifest.data_hash(),
        "split": {k: prepared.split[k] for k in ("kind", "test_fraction", "seed", "path")}
        | {"train": n_train, "val": info["val"], "val_by": info["val_by"],
           "test": len(prepared.split["test"]), "group_by": config.data.group_by},
        "folds": info["folds"],
        "features": {"folder": str(prepared.cache_dir), "encoder": header["encoder"],
                     "content_hash": header["content_hash"], "dims": header["dims"],
                     "shared_space": header.get("shared_space", False),
                     "token_shapes": header.get("token_shapes")},
        "parameters": sum(p.numel() for p in model.parameters()),
        "seconds": round(result.seconds, 2),
        "best_epoch": result.best_epoch,
        "planned_epochs": result.epochs,
        "patience": result.patience,
        "stopped_early": result.stopped_early,
        "skipped_rows": info["skipped_rows"],
        "text_only_posts": info.get("text_only_posts", 0),   # left out of training, scored by evaluate
        "processes": info["processes"],
        "probes": info["probes"],
        "mixture": info.get("mixture"),
        "validation": info.get("validation"),
        "temperature": info.get("calibration", {}).get("temperature", 1.0),
        "calibration": info.get("calibration"),
        "decision": info.get("decision"),
        "conformal": info.get("conformal"),
        "novelty": info.get("novelty"),
        "ensemble": info.get("ensemble"),
        "decisions": info.get("decisions"),
        "did_not_learn": info.get("did_not_learn", []),
        "warnings": info["warnings"],
        "history": result.history,
        "versions": versions(),
    })


@dataclass
class LoadedRun:
    folder: Path
    config: RunConfig
    model: MultimodalModel
    labels: list[str]
    vocab: Vocabulary
    info: dict[str, Any]

    @functools.cached_property
    def split(self) -> RunSplit | None:
        """The run's split (`sgmft.training.splitfile`: its train, val, calibration and test
        ids, the validation folds and the posts' digests), opened once; None for a run without
        one."""
        return read_split(self.folder)

    def conformal_posts(self) -> list[dict[str, Any]]:
        """The calibration posts (id, label, scores) as records; none for a run without them."""
        table = self.conformal_table
        return [] if table is None else table.to_pylist()

    @functools.cached_property
    def conformal(self) -> dict[str, Any] | None:
        """``conformal.json`` (the calibration posts' count and ``shift_like``), read once; None
        for a run without calibration posts."""
        path = self.folder / CONFORMAL
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None

    @functools.cached_property
    def conformal_table(self) -> pa.Table | None:
        """The calibration posts (`read_conformal_posts`), opened once; None without them."""
        return None if self.conformal is None else read_conformal_posts(self.folder, self.conformal)

    def rates(self) -> Rates | None:
        """The run's error rates on held-out posts (``rates.json``, `write_rates`). A run without
        held-out posts (or trained before runs kept them) has none: then only the training
        shares, which EM needs (None if the model lacks them too)."""
        path = self.folder / RATES
        if not path.is_file():
            prior = self.model.probes.prior.detach().cpu().double().numpy()
            k = len(self.labels)
            return Rates(np.zeros((0, k)), np.zeros(0, np.int64), prior) if prior.sum() > 0 else None
        saved = json.loads(path.read_text(encoding="utf-8"))
        units = saved.get("units")   # runs before units were kept: None
        return Rates(np.asarray(saved["probabilities"], np.float64), np.asarray(saved["true"], np.int64),
                     np.asarray(saved["train_prior"], np.float64),
                     None if units is None else np.asarray(units, np.int64))

    def conformal_threshold(self, coverage: float, pattern: str = "both") -> float | None:
        """The LAC threshold of prediction sets at ``coverage`` for posts of a presence
        ``pattern`` (both, text_only, image_only: its calibration posts scored that way; older
        runs scored both only), calibrated on the run's held-out posts; None without them."""
        from sgmft.metrics.conformal import threshold_from_scores

        if self.conformal_table is None:
            return None
        return threshold_from_scores(self.conformal_scores(pattern), coverage)

    def conformal_scores(self, pattern: str = "both") -> np.ndarray:
        """(n,) the calibration posts' scores of a presence pattern, in the posts' order (the order
        of the novelty index's calibration features); older runs scored both only."""
        table = self.conformal_table
        if table is None:
            return np.zeros(0)
        return table.column(SCORE_FIELDS[pattern]).to_numpy()

    @functools.cached_property
    def novelty(self):
        """The run's novelty index (`sgmft.decision.novelty.NoveltyIndex`), or None: for a run
        without one, and (said in the log) for one this version cannot read."""
        from safetensors import SafetensorError

        from sgmft.decision.novelty import NOVELTY_FILE, NoveltyIndex

        path = self.folder / NOVELTY_FILE
        if not path.is_file():
            return None
        try:
            return NoveltyIndex.load(path)
        except (KeyError, ValueError, OSError, SafetensorError) as exc:
            log.warning("%s cannot be read (%s: written by another sgmft version, or damaged): answers carry "
                        "no novelty flags and batches no drift report; train the run again to have them",
                        path, exc)
            return None


def _upgrade(state: dict[str, Any], model: MultimodalModel) -> dict[str, Any]:
    """The weights of a run written before the class prior and the temperature existed: the
    mixture gains a zero prior weight, and the prior and temperature their defaults."""
    mixture = state.get("probes.mixture")
    if mixture is not None and mixture.shape[0] == 3:
        state["probes.mixture"] = torch.cat([mixture, mixture.new_zeros(1)])
    current = model.state_dict()
    for key in ("probes.prior", "temperature", "decision_bias", "min_gain"):
        state.setdefault(key, current[key])
    return state


def load_run(folder: str | Path, device: str = "cpu") -> LoadedRun:
    """A finished run folder -> its config, model (eval mode), labels and vocabulary."""
    folder = Path(folder)
    if not folder.exists():
        raise FileNotFoundError(f"run {folder} not found")
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is a file, not a run folder (a run is the folder `sgmft train "
                                "--out` wrote)")
    if not (folder / "run.json").is_file():
        if (folder / "model.safetensors").is_file() or (folder / CHECKPOINT).is_file():
            raise FileNotFoundError(f"{folder} holds an unfinished run (it was stopped before writing "
                                    "run.json): finish it with `sgmft train ... --resume`")
        raise FileNotFoundError(f"{folder} is not a run: it holds no run.json (a run is the folder "
                                "`sgmft train --out` wrote)")
    config = RunConfig.from_dict(json.loads((folder / "config.json").read_text(encoding="utf-8")))
    labels = json.loads((folder / "labels.json").read_text(encoding="utf-8"))
    vocab = Vocabulary.load(folder / "vocab.json")
    info = json.loads((folder / "run.json").read_text(encoding="utf-8"))
    dims = info["features"]["dims"]

    def build() -> MultimodalModel:
        return MultimodalModel(config.model, dims["text"], dims["image"], len(labels), len(vocab),
                               info["features"]["shared_space"], token_lengths(info["features"]))

    model = build()
    state = load_file(folder / "model.safetensors")
    members = {int(key.split(".")[1]) for key in state if key.startswith("members.")}
    model.add_members([build() for _ in range(len(members))])
    try:
        model.load_state_dict(_upgrade(state, model))
    except RuntimeError as exc:
        raise ValueError(f"{folder}: the saved weights do not fit the model its config.json "
                         f"describes (written by another sgmft version?): {exc}") from None
    return LoadedRun(folder, config, model.to(device).eval(), labels, vocab, info)
