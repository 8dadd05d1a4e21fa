"""`sgmft predict --manifest --ray`: the local path's records, predicted by an actor pool on a
local Ray cluster."""

import json

import pytest

ray = pytest.importorskip("ray", reason="the Ray extra is not installed (pip install 'sgmft[ray]')")

from sgmft.serving.batch import predict_manifest  # noqa: E402
from sgmft.serving.ray_predict import RayWindows  # noqa: E402
from tests.conftest import with_images, write_jsonl  # noqa: E402


def test_ray_gives_the_local_records(predictor, sgmft_run, demo_folder, tmp_path):
    rows = [json.loads(line) for line in (demo_folder / "manifest.jsonl").read_text().splitlines()][:24]
    for row in with_images(rows, demo_folder, tmp_path):
        row["image"] = str(tmp_path / row["image"])
    rows[2]["image"] = str(tmp_path / "gone.jpg")
    manifest = write_jsonl(tmp_path / "posts.jsonl", rows)
    local, remote = tmp_path / "local.jsonl", tmp_path / "ray.jsonl"
    predict_manifest(predictor, manifest, local, progress=False, block_rows=10)
    ray.init(num_cpus=3, include_dashboard=False, log_to_driver=False)
    try:
        windows = RayWindows(sgmft_run, workers=2, window_rows=8192)     # 2 blocks a window: 2 windows
        summary = predict_manifest(predictor, manifest, remote, progress=False, block_rows=10,
                                   windows=windows)
        # one pool for the job: its 2 actors (each loaded the run once) answered the 3 batches of both
        assert len(windows.actors) == 2 and sum(ray.get([a.answered.remote() for a in windows.actors])) == 3
    finally:
        ray.shutdown()
    assert summary.predicted == 23 and summary.errors == 1 and summary.from_cache == 23
    assert remote.read_text() == local.read_text()
