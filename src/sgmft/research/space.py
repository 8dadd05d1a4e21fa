"""Search spaces for `sgmft study`: a small YAML (or JSON) file over configuration fields.

Each key is a field as ``--set`` names it; each value says how to draw it::

    model.reading: {choices: [elements, chunks]}
    model.chunks: {choices: [4, 8, 16], when: {model.reading: chunks}}
    train.lr: {low: 1.0e-4, high: 3.0e-3, log: true}
    train.epochs: {low: 20, high: 120, int: true}
    model.dropout: {low: 0.0, high: 0.6, step: 0.1}

``choices`` draws one of a list (numbers, strings, booleans, null); ``low``/``high`` a number
(``int: true`` for integers, ``log: true`` on a log scale, ``step`` a grid). ``when`` draws the
field only if earlier fields took the given value (or one of a list of values); otherwise the
base configuration's value stays. Keys are drawn in file order.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any

SPEC_KEYS = {"choices", "low", "high", "log", "int", "step", "when"}


@dataclass(frozen=True)
class Parameter:
    """One searched field."""

    name: str
    choices: tuple[Any, ...] | None = None
    low: float | None = None
    high: float | None = None
    log: bool = False
    integer: bool = False
    step: float | None = None
    when: tuple[tuple[str, tuple[Any, ...]], ...] = ()

    def active(self, drawn: dict[str, Any]) -> bool:
        """Whether the conditions of ``when`` hold for the values drawn so far."""
        return all(name in drawn and drawn[name] in values for name, values in self.when)

    def draw(self, trial) -> Any:
        """Draw a value with an Optuna trial."""
        if self.choices is not None:
            return trial.suggest_categorical(self.name, list(self.choices))
        if self.integer:
            return trial.suggest_int(self.name, int(self.low), int(self.high), log=self.log,
                                     step=int(self.step or 1))
        return trial.suggest_float(self.name, float(self.low), float(self.high), log=self.log,
                                   step=self.step)


def _parameter(name: str, spec: Any, earlier: set[str]) -> Parameter:
    if not isinstance(spec, dict) or not spec or set(spec) - SPEC_KEYS:
        raise ValueError(f"search space {name!r}: expected a mapping with keys from "
                         f"{sorted(SPEC_KEYS)}, got {spec!r}")
    when = []
    for other, values in (spec.get("when") or {}).items():
        if other not in earlier:
            raise ValueError(f"search space {name!r}: 'when' names {other!r}, which is not an earlier key")
        when.append((other, tuple(values) if isinstance(values, list) else (values,)))
    if "choices" in spec:
        choices = spec["choices"]
        if not isinstance(choices, list) or not choices or any(
                isinstance(c, list | dict) for c in choices):
            raise ValueError(f"search space {name!r}: choices must be a non-empty list of plain values")
        return Parameter(name, choices=tuple(choices), when=tuple(when))
    try:
        low, high = float(spec["low"]), float(spec["high"])
    except (KeyError, TypeError, ValueError):
        raise ValueError(f"search space {name!r}: give choices, or numeric low and high") from None
    if not low < high or (spec.get("log") and low <= 0):
        raise ValueError(f"search space {name!r}: need low < high (and low > 0 on a log scale)")
    step = float(spec["step"]) if spec.get("step") is not None else None
    return Parameter(name, low=low, high=high, log=bool(spec.get("log")), integer=bool(spec.get("int")),
                     step=step, when=tuple(when))


def parse_space(data: dict[str, Any]) -> list[Parameter]:
    """The parameters of a parsed space file, in file order (see the module docstring)."""
    if not isinstance(data, dict) or not data:
        raise ValueError("a search space is a non-empty mapping of field -> how to draw it")
    parameters: list[Parameter] = []
    for name, spec in data.items():
        if name.count(".") != 1 or name.split(".")[0] not in ("model", "train"):
            raise ValueError(f"search space key {name!r}: expected model.FIELD or train.FIELD")
        parameters.append(_parameter(name, spec, {p.name for p in parameters}))
    return parameters


def read_space(name_or_path: str) -> list[Parameter]:
    """A space file (``.yaml``, ``.yml`` or ``.json``), or a bundled space by name."""
    import yaml

    path = Path(name_or_path)
    if not path.is_file():
        bundled = files("sgmft.configs").joinpath(f"space-{name_or_path}.yaml")
        if not bundled.is_file():
            raise FileNotFoundError(f"no search space file {name_or_path!r} (bundled: sgmft)")
        return parse_space(yaml.safe_load(bundled.read_text(encoding="utf-8")))
    text = path.read_text(encoding="utf-8")
    return parse_space(json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text))


def draw(parameters: list[Parameter], trial) -> dict[str, Any]:
    """One configuration: the active parameters' values, keyed by field."""
    drawn: dict[str, Any] = {}
    for parameter in parameters:
        if parameter.active(drawn):
            drawn[parameter.name] = parameter.draw(trial)
    return drawn
