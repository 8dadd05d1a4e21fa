"""Every command's options, as a user reads them in --help, are what they were: the golden file
holds each command's help line and each option's flags, help text, default and whether it is
required (taken before the CLI was split into modules). A command may gain options; none may
lose one or change one silently. A deliberate change updates the golden file in the same commit."""

import json
from pathlib import Path

import typer
from typer.testing import CliRunner

from sgmft.cli import app

GOLDEN = json.loads((Path(__file__).parent / "help_golden.json").read_text(encoding="utf-8"))


def describe() -> dict:
    """The same description of the current CLI as the golden file's."""
    command = typer.main.get_command(app)
    return {name: {"help": " ".join((sub.help or "").split()),
                   "params": {p.name: {"opts": sorted(p.opts + p.secondary_opts),
                                       "help": " ".join((getattr(p, "help", None) or "").split()),
                                       "default": repr(p.default) if not callable(p.default) else "callable",
                                       "required": p.required}
                              for p in sub.params}}
            for name, sub in command.commands.items()}


def test_every_command_and_option_is_still_there_as_it_was():
    now = describe()
    assert set(GOLDEN) <= set(now)
    for name, before in GOLDEN.items():
        assert now[name]["help"] == before["help"], name
        for param, spec in before["params"].items():
            assert now[name]["params"].get(param) == spec, f"{name} {param}"


def test_every_command_answers_help():
    runner = CliRunner()
    for name in GOLDEN:
        result = runner.invoke(app, [name, "--help"])
        assert result.exit_code == 0 and "Usage:" in result.output, name


def test_every_option_and_argument_says_what_it_is_in_plain_names():
    command = typer.main.get_command(app)
    context = typer.Context(command)
    for name, sub in command.commands.items():
        for param in sub.params:
            assert getattr(param, "help", None), f"{name} {param.name} has no help text"
            metavar = param.make_metavar(context) if hasattr(param, "make_metavar") else ""
            assert "list[" not in str(metavar) and "{" not in str(param.metavar or ""), f"{name} {param.name}"
    usage = CliRunner().invoke(app, ["predict", "--help"], terminal_width=200).output
    assert "RUN" in usage and "<list" not in usage and "--cache DIR" in usage.replace("  ", " ")
