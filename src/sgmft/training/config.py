"""Run configuration as dataclasses, JSON presets, and ``--set key=value`` overrides."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict, dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any

from sgmft.encoders import DEFAULT_ENCODER
from sgmft.models.config import ModelConfig
from sgmft.models.variants import variant_overrides

#: the preset `sgmft train` uses when no --config is given: the recommended model
DEFAULT_PRESET = "sgmft"


@dataclass
class DataConfig:
    manifest: str = ""
    image_root: str | None = None
    allow_outside_root: bool = False  # image paths may lead outside image_root (or the manifest's folder)
    labels: list[str] | None = None
    encoder: str = DEFAULT_ENCODER
    checkpoint: str | None = None     # chinese-clip: local folder or hub id
    precision: str = "auto"           # the encoders' arithmetic when features are extracted: auto
                                      # (bf16 where the device has it natively, else fp32) | fp32 |
                                      # bf16 | fp16; a cache of either arithmetic is reused
    cache: str | None = None          # feature cache folder (default: beside the data)
    split: str = "auto"               # auto (the manifest's split column if it has one, else
                                      # stratified) | stratified | user | group | manifest
    group_by: str = "group"           # the column of the group split and of grouped validation
                                      # (any manifest column: event, topic, ...)
    test_fraction: float = 0.2
    split_seed: int = 0
    skip_invalid: bool = False


@dataclass
class TrainConfig:
    epochs: int = 30
    batch_size: int = 20
    lr: float = 1e-5
    betas: tuple[float, float] = (0.9, 0.99)
    weight_decay: float = 0.0
    optimizer: str = "adam"           # adam (the paper; weight decay added to the gradient) | adamw
                                      # | sgd (momentum betas[0])
    label_smoothing: float = 0.0
    seed: int = 0
    early_stopping: int = 0           # patience in epochs on the validation part; 0 = off
    min_steps: int = 0                # small data: stretch epochs and patience alike until
                                      # training takes at least this many optimizer steps ...
    max_epochs: int = 100             # ... but to no more than this many epochs (passes over the posts)
    threads: int = 0                  # torch CPU threads while training; 0 = by the work: one below
                                      # `trainer.ONE_THREAD_POSTS` training posts, else torch's count
    folds: int = 5                    # K grouped validation folds: the best epoch, the probes, the
                                      # fallback mixture and the temperature come from out-of-fold
                                      # predictions, then the model is refitted on all training
                                      # posts (1: one carved part of val_fraction, no refit)
    val_fraction: float = 0.1         # with folds = 1: the share of train carved as validation
    calibration: float = 0.0          # the share of train held out, grouped as the folds, from the
                                      # folds, the decision layer and the refit, to calibrate the
                                      # prediction sets on the deployed model (0: no sets)
    calibration_min_posts: int = 200  # ... only when that share holds this many posts: fewer
                                      # calibrate sets poorly and cost a small training set dearly
    val_by: str = "auto"              # how: auto (a column that partitions the manifest's split,
                                      # else group_by, else user; near-duplicate images always
                                      # together) | stratified | group | user | image
    device: str = "cpu"               # cpu | cuda | cuda:N
    precision: str = "fp32"           # fp32 | bf16 | fp16 (autocast; fp16 with a gradient scaler) |
                                      # auto (bf16 where the device has it natively)
    eval_batch_size: int = 512
    checkpoint_seconds: float = 10.0  # checkpoint after an epoch once this long since the last
                                      # (0: every epoch); the last epoch always is
    def __post_init__(self) -> None:
        self.betas = tuple(self.betas)  # type: ignore[assignment]
        choices = {"optimizer": ("adam", "adamw", "sgd"), "precision": ("auto", "fp32", "bf16", "fp16"),
                   "val_by": ("auto", "stratified", "group", "user", "image")}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"train.{name} = {getattr(self, name)!r}; expected one of {allowed}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"train.label_smoothing = {self.label_smoothing}; expected [0, 1)")
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"train.val_fraction = {self.val_fraction}; expected (0, 1)")
        if not 0.0 <= self.calibration < 0.5:
            raise ValueError(f"train.calibration = {self.calibration}; expected [0, 0.5)")
        if self.folds < 1:
            raise ValueError(f"train.folds = {self.folds}; expected 1 (one carved part) or more")


@dataclass
class RunConfig:
    variant: str = "sg-mft"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunConfig:
        known = {"variant", "data", "model", "train"}
        unknown = set(data) - known - {"_about"}
        if unknown:
            raise ValueError(f"unknown config section(s): {', '.join(sorted(unknown))}")
        return cls(
            variant=data.get("variant", "sg-mft"),
            data=_build(DataConfig, data.get("data", {}), "data"),
            model=_build(ModelConfig, data.get("model", {}), "model"),
            train=_build(TrainConfig, data.get("train", {}), "train"),
        )

    def save(self, path: Path) -> None:
        from sgmft.io import atomic_write_json

        atomic_write_json(path, self.to_dict())


def _build(cls: type, values: dict[str, Any], section: str):
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(values) - names - {"_about"}
    if unknown:
        raise ValueError(f"unknown {section} field(s): {', '.join(sorted(unknown))}")
    return cls(**{k: v for k, v in values.items() if k in names})


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in update.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(
            out.get(key), dict) else value
    return out


def preset_names() -> list[str]:
    return sorted(p.name.removesuffix(".json") for p in files("sgmft.configs").iterdir()
                  if p.name.endswith(".json"))


def read_config_file(name_or_path: str) -> dict[str, Any]:
    """A JSON config file, or a bundled preset by name (``paper``, ``fast``)."""
    path = Path(name_or_path)
    if path.is_file():
        return json.loads(path.read_text(encoding="utf-8"))
    if name_or_path in preset_names():
        return json.loads(files("sgmft.configs").joinpath(f"{name_or_path}.json").read_text("utf-8"))
    raise FileNotFoundError(f"no config file {name_or_path!r}; presets: {', '.join(preset_names())}")


def parse_value(text: str) -> Any:
    """``--set`` values are JSON when they parse (numbers, true, null, lists), else strings."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``section.key=value`` strings (``variant=name`` at the top level)."""
    data = json.loads(json.dumps(data))
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"--set expects key=value, got {item!r}")
        key, value = item.split("=", 1)
        parts = key.strip().split(".")
        target = data
        for part in parts[:-1]:
            target = target.setdefault(part, {})
        target[parts[-1]] = parse_value(value)
    return data


def resolve_config(config_file: str | None = None, overrides: list[str] | None = None,
                   variant: str | None = None, base: dict[str, Any] | None = None) -> RunConfig:
    """Defaults <- ``base`` <- the config file or preset <- the variant's model overrides
    <- ``--set`` overrides (so an explicit ``--set model.x=...`` always wins)."""
    data = RunConfig().to_dict()
    if base:
        data = _merge(data, base)
    if config_file:
        data = _merge(data, read_config_file(config_file))
    data["variant"] = variant or data.get("variant", "sg-mft")
    data["model"] = _merge(data["model"], variant_overrides(data["variant"]))
    config = RunConfig.from_dict(apply_overrides(data, overrides or []))
    _check_registered(config.model)
    return config


def _check_registered(model: ModelConfig) -> None:
    """Refuse unknown fusion modules and heads before any data is touched."""
    from sgmft.models.model import FUSIONS, HEADS

    for name, registry in ((model.fusion, FUSIONS), (model.head, HEADS)):
        if name not in registry:
            raise ValueError(f"unknown {registry.kind} {name!r}; available: {', '.join(registry)}")
