"""The package's layering holds (pyproject.toml's import-linter contracts, docs/architecture.md):
each layer imports only the layers below it, and no package's modules import each other in a
circle; and no source file grows past what a reader takes in at once."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "src" / "sgmft"


def _lint_imports() -> str | None:
    return shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or shutil.which("lint-imports")


@pytest.mark.skipif(_lint_imports() is None, reason="import-linter is not installed")
def test_import_contracts_are_kept():
    result = subprocess.run([_lint_imports(), "--no-cache"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout


def test_no_source_file_over_400_lines_and_no_cli_module_over_300():
    sizes = {path.relative_to(SOURCE).as_posix(): len(path.read_text(encoding="utf-8").splitlines())
             for path in SOURCE.rglob("*.py")}
    assert {name: n for name, n in sizes.items() if n > 400} == {}
    assert {name: n for name, n in sizes.items() if name.startswith("cli/") and n > 300} == {}
