"""docs/tutorial.md, run as a new user would: every shell block after the set-up, in order."""

import os
import re
import subprocess
import sys
from pathlib import Path

TUTORIAL = Path(__file__).parent.parent / "docs" / "tutorial.md"


def blocks() -> list[str]:
    return re.findall(r"```bash\n(.*?)```", TUTORIAL.read_text(encoding="utf-8"), re.S)


def test_the_tutorial_runs_end_to_end(tmp_path):
    steps = blocks()
    assert len(steps) >= 6 and "scripts/setup.sh" in steps[0]       # set-up: done by CI itself
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "OMP_NUM_THREADS": "1"}
    env.pop("SGMFT_CACHE", None)
    script = "set -euo pipefail\n" + "\n".join(steps[1:])
    result = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout + result.stderr
    assert "10 valid posts, 0 invalid rows" in out
    assert "the features of all 10 posts were in" in out and "reused, nothing encoded" in out
    assert "split: the manifest's split column (7 train, 3 test)" in out
    assert "on 3 test posts" in out and "note: t-SNE needs at least 5 test posts" in out
    assert "label: " in out and "text alone:" in out
    assert "too few posts (7) to hold any out" in out                   # the run says it is tiny
    assert "only 3 test post(s)" in out                                 # and so does its evaluation
    assert "label: unsure" in out or "one of: " in out                  # the sofa post: no bold answer
    assert '"label":' in out                                           # the served prediction
    assert (tmp_path / "my" / "run" / "eval" / "metrics.json").is_file()
    assert (tmp_path / "my" / "profiles" / "profiles.png").is_file() and "estimated shares (pcc)" in out
    assert (tmp_path / "my" / "predictions.csv").read_text().startswith("id,row,user,split,true_label,label")
