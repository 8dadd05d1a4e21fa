"""`sgmft extract --ray`: the same cache as a local extraction, on a local 2-worker Ray cluster."""

import json
import os
import signal
import threading
import time

import psutil
import pytest

ray = pytest.importorskip("ray", reason="the Ray extra is not installed (pip install 'sgmft[ray]')")

from sgmft.data.demo import make_demo  # noqa: E402
from sgmft.data.manifest import load_manifest  # noqa: E402
from sgmft.encoders.cache import chunk_name, extract_features  # noqa: E402
from sgmft.encoders.ray_extract import extract_with_ray  # noqa: E402

SIZES = {"batch_size": 2, "chunk_size": 8}
#: the same chunks asked in bytes: 8 posts of use+effnet's 512 + 1,280 float32 features
BY_BYTES = {"batch_size": 2, "chunk_mib": 8 * (512 + 1280) * 4 / 2**20}


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    return load_manifest(make_demo(tmp_path_factory.mktemp("ray-demo"), posts_per_class=10))


@pytest.fixture(scope="module")
def local(manifest, tmp_path_factory):
    folder = tmp_path_factory.mktemp("local")
    extract_features(manifest, folder, "use+effnet", progress=False, **BY_BYTES)
    assert json.loads((folder / "cache.json").read_text())["chunk_size"] == SIZES["chunk_size"]
    return folder


def same_cache(a, b):
    header_a, header_b = (json.loads((f / "cache.json").read_text()) for f in (a, b))
    assert set(header_a) == set(header_b)
    assert {k: v for k, v in header_a.items() if k not in ("created", "finished")} == \
        {k: v for k, v in header_b.items() if k not in ("created", "finished")}
    for index in range(len(header_a["chunks"])):
        assert (a / chunk_name(index)).read_bytes() == (b / chunk_name(index)).read_bytes(), index


def test_two_workers_give_the_local_cache_byte_for_byte(cluster, manifest, local, tmp_path):
    # the chunks sized by bytes as the local path sizes them (the driver reads the encoder's widths)
    cache = extract_with_ray(manifest, tmp_path / "ray", "use+effnet", workers=2, progress=False, **BY_BYTES)
    assert len(cache) == len(manifest)
    same_cache(local, tmp_path / "ray")


def encoder_actors():
    titles = ((p, " ".join(p.info["cmdline"] or [])) for p in psutil.process_iter(["cmdline"]))
    return [p for p, title in titles if "EncoderActor" in title]


def test_a_killed_actor_is_retried_and_a_resume_recomputes_only_what_is_missing(cluster, manifest, local,
                                                                               tmp_path):
    folder = tmp_path / "ray"
    done = {}
    worker = threading.Thread(target=lambda: done.update(cache=extract_with_ray(
        manifest, folder, "use+effnet", workers=2, progress=False, **SIZES)))
    worker.start()
    deadline = time.time() + 300
    while not (folder / chunk_name(0)).exists() and time.time() < deadline:
        time.sleep(0.05)
    victims = encoder_actors()
    assert victims, "no encoder actor found to kill"
    os.kill(victims[0].pid, signal.SIGKILL)
    written_at_kill = len(list(folder.glob("chunk-*.safetensors")))
    worker.join(600)
    assert written_at_kill < 10 and len(done["cache"]) == len(manifest)   # killed mid-run
    same_cache(local, folder)
    # resuming recomputes only what is missing
    (folder / chunk_name(3)).unlink()
    kept = {i: (folder / chunk_name(i)).stat().st_mtime_ns for i in (0, 2, 4)}
    extract_with_ray(manifest, folder, "use+effnet", workers=2, progress=False, **SIZES)
    assert {i: (folder / chunk_name(i)).stat().st_mtime_ns for i in kept} == kept
    same_cache(local, folder)
