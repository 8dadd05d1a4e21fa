"""What every command shares: logging, turning expected failures into ``error:`` lines, the
option types that recur across commands, and the small readers of those options."""

from __future__ import annotations

import functools
import inspect
import json
import logging
import sys
import typing
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Annotated

import typer

from sgmft import PLACES

RunFolder = Annotated[Path, typer.Argument(metavar="RUN", help="A run folder (what sgmft train --out wrote).",
                                           show_default=False)]
ManifestFile = Annotated[Path, typer.Argument(metavar="MANIFEST", help="The posts: a JSONL or CSV file.",
                                              show_default=False)]
BatchSize = Annotated[int, typer.Option(help="Posts encoded and predicted at a time.")]
ImageRoot = Annotated[Path | None, typer.Option(help="Folder image paths are relative to "
                                                     "(default: the manifest's folder).")]
AllowOutsideRoot = Annotated[bool, typer.Option(
    "--allow-outside-root", help="Open image paths that lead outside the image root (by '..', an "
                                 "absolute path or a link); refused by default, as a row error.")]
Labels = Annotated[str | None, typer.Option(
    help="Label set: comma-separated names or a file with one per line (default: the data's labels; "
         f"the places {','.join(PLACES)} that the posts carry when they are all places).")]
RunLabels = Annotated[str | None, typer.Option(
    "--labels", help="Label set the manifest's label column is read with (default: the run's labels; "
                     "a post of another label is still predicted).")]
SkipInvalid = Annotated[bool, typer.Option("--skip-invalid",
                                           help="Skip bad rows and count them instead of failing.")]
EncoderName = Annotated[str | None, typer.Option("--encoder",
                                                 help="Encoder name (see `sgmft encoders`).")]
Checkpoint = Annotated[str | None, typer.Option("--checkpoint",
                                                help="chinese-clip: a local folder or hub id.")]
CacheDir = Annotated[Path | None, typer.Option("--cache", help="Feature cache folder "
                                                               "(default: beside the data).")]
ConfigFile = Annotated[str | None, typer.Option(
    "--config", help="JSON config file or preset name (sgmft, paper, fast); default sgmft.")]
SetOption = Annotated[list[str] | None, typer.Option(
    "--set", metavar="KEY=VALUE",
    help="Override a field: section.key=value (repeatable), e.g. model.dim=128.")]
def _device(value: str | None) -> str | None:
    """A --device this machine has (typer's callback: a clear error before any work)."""
    from sgmft.device import check_device

    if value is None:
        return None
    try:
        return check_device(value)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


Device = Annotated[str, typer.Option(help="cpu, cuda or cuda:N.", callback=_device)]
GroupBy = Annotated[str | None, typer.Option(
    "--group-by", help="A manifest column whose values must stay on one side of every split "
                       "(e.g. event): the group split's and the validation folds' (default: group).")]
TrainDevice = Annotated[str | None, typer.Option(help="cpu, cuda or cuda:N (train.device).",
                                                 callback=_device)]


#: exit status of a command that finished but left rows out (each reported; 0 with --skip-invalid)
ROWS_FAILED = 3
#: exit status of a command that found no row it could use (an empty manifest, or every row bad)
NOTHING_DONE = 4


def rows_exit(used: int, failed: int, skip_invalid: bool = False) -> None:
    """End a command that reads rows with its documented status: `NOTHING_DONE` when no row was
    used, `ROWS_FAILED` when some failed (unless ``skip_invalid``), else 0."""
    if not used:
        raise typer.Exit(NOTHING_DONE)
    if failed and not skip_invalid:
        raise typer.Exit(ROWS_FAILED)


class _Stderr(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a record comes (a test runner's capture too)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def configure_logging() -> None:
    """The library's messages (``sgmft.*`` loggers) on stderr as ``sgmft: ...``; chatty
    dependencies quiet."""
    logger = logging.getLogger("sgmft")
    if not any(isinstance(h, _Stderr) for h in logger.handlers):
        handler = _Stderr()
        handler.setFormatter(logging.Formatter("sgmft: %(message)s"))
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    for noisy in ("jieba", "optuna", "ray", "urllib3", "matplotlib", "PIL", "httpx", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


@contextmanager
def reported(*errors: type[BaseException]) -> Iterator[None]:
    """Turn the expected failures of a command into ``error: ...`` and exit status 1."""
    from sgmft.data.manifest import ManifestError
    from sgmft.encoders.cache import CacheCorruptError, CacheMismatchError
    from sgmft.io import StorageError

    try:
        yield
    except (ManifestError, CacheMismatchError, CacheCorruptError, FileNotFoundError, ValueError,
            StorageError, BlockingIOError, *errors) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None


def parse_labels(value: str | None) -> tuple[str, ...] | None:
    """``a,b,c`` or a path to a file with one label per line."""
    if value is None:
        return None
    path = Path(value)
    names = path.read_text(encoding="utf-8").splitlines() if path.is_file() else value.split(",")
    labels = tuple(name.strip().lower() for name in names if name.strip())
    if len(set(labels)) != len(labels) or len(labels) < 2:
        where = f"the file {path}" if path.is_file() else "--labels"
        raise typer.BadParameter(f"{where} must name two or more distinct labels "
                                 f"({len(labels)} given, {len(set(labels))} distinct)")
    return labels


def load_for_command(manifest: Path, image_root: Path | None, labels: str | None, skip_invalid: bool,
                     require_labels: bool = True, report: bool = True, outside_root: bool = False):
    """Load a manifest for a command (any label unless ``labels`` names the set); with
    ``report`` log what was skipped."""
    from sgmft.data.manifest import load_manifest, report_skipped

    with reported():
        loaded = load_manifest(manifest, image_root, parse_labels(labels), require_labels=require_labels,
                               skip_invalid=skip_invalid, any_label=labels is None,
                               outside_root=outside_root)
    if report:
        report_skipped(loaded)
    return loaded


@dataclass(frozen=True)
class DataOptions:
    """The data options that train, study and reproduce share (see `with_data_options`)."""

    encoder: EncoderName = None
    checkpoint: Checkpoint = None
    cache: CacheDir = None
    image_root: ImageRoot = None
    allow_outside_root: AllowOutsideRoot = False
    labels: Labels = None
    skip_invalid: SkipInvalid = False
    group_by: GroupBy = None

    def overrides(self, manifest: Path) -> list[str]:
        """These options and the manifest as ``--set`` overrides of the data section (JSON values)."""
        values: dict[str, object] = {"manifest": str(manifest), "skip_invalid": self.skip_invalid,
                                     "allow_outside_root": self.allow_outside_root}
        for key in ("encoder", "checkpoint", "cache", "image_root", "group_by"):
            if getattr(self, key) is not None:
                values[key] = str(getattr(self, key))
        if self.labels is not None:
            values["labels"] = list(parse_labels(self.labels) or [])
        return [f"data.{key}={json.dumps(value)}" for key, value in values.items()]


def with_data_options(command: Callable[..., None]) -> Callable[..., None]:
    """Give a command the `DataOptions` fields as options of its own (after its other ones); it
    receives them together as its ``data_options`` argument. One declaration, so the commands
    that share them cannot drift apart."""
    own = inspect.signature(command, eval_str=True)
    hints = typing.get_type_hints(DataOptions, include_extras=True)
    shared = [inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default,
                                annotation=hints[f.name]) for f in fields(DataOptions)]
    parameters = [p for p in own.parameters.values() if p.name != "data_options"] + shared

    @functools.wraps(command)
    def wrapper(**kwargs):
        options = DataOptions(**{f.name: kwargs.pop(f.name) for f in fields(DataOptions)})
        return command(**kwargs, data_options=options)

    wrapper.__signature__ = own.replace(parameters=parameters)   # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in parameters}
    return wrapper


def resolve(config: str | None, overrides: list[str], variant: str | None = None):
    """The run configuration of a command (the default preset unless ``config`` names one)."""
    from sgmft.training.config import DEFAULT_PRESET, resolve_config

    try:
        return resolve_config(config or DEFAULT_PRESET, overrides, variant)
    except (ValueError, KeyError, FileNotFoundError) as exc:
        raise typer.BadParameter(str(exc)) from None
