"""`sgmft predict --manifest ... --ray`: the same prediction, its posts predicted on a Ray cluster.

The driver reads and checks the manifest in blocks exactly as the local path does
(`sgmft.serving.batch`: the same row errors, the same order, the same writers and ``--resume``).
One pool of actors serves the whole job (`ray.util.ActorPool`): each actor loads the run, its
encoders and the feature caches once, then predicts batches of posts as the driver streams them
in, a block per call, a window of blocks at a time (what bounds the posts in flight); the records
come back in order to the driver, which writes them block by block (Parquet, JSONL, JSON or CSV).
The records equal the local path's, byte for byte (tested; at 200,000 posts too, where calls of
256 posts had moved 0.4 % of the novelty scores in their fourth decimal: a matrix product's last
bits depend on its shape). An actor pool rather than a Ray Data
``map_batches`` pipeline: the driver must keep the manifest's order and its resumable writers,
and a Ray Data dataset is made from a finished list, so each window was a new dataset with a new
pool, every actor loading the run again. Run folders, caches and images must sit where every
actor can read them. Needs the optional extra: ``pip install 'sgmft[ray]'``.
"""

from __future__ import annotations

import itertools
import pickle
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sgmft.data.manifest import Block
from sgmft.serving.batch import BlockPredictor, Predicted


class PredictActor:
    """A Ray actor: a run's block predictor, loaded once for the job; predicts a batch of posts
    per call."""

    def __init__(self, run: str, device: str, min_gain: float, caches: list[str], options: dict[str, Any],
                 threads: int):
        import torch

        from sgmft.encoders.cache import load_cache
        from sgmft.serving.predictor import Predictor

        torch.set_num_threads(threads)
        predictor = Predictor(run, device=device, min_gain=min_gain)
        self.predict = BlockPredictor(predictor, [load_cache(folder) for folder in caches],
                                      predictor.run.split, options)
        self.calls = 0

    def posts(self, posts: bytes) -> tuple[bytes, int]:
        """The records (pickled) of pickled posts, and how many came from a cache."""
        self.calls += 1
        records, from_cache = self.predict(pickle.loads(posts))
        return pickle.dumps(records), from_cache

    def answered(self) -> int:
        """The batches this actor predicted (over every window of the job)."""
        return self.calls


@dataclass
class RayWindows:
    """Predicts blocks on Ray with one actor pool, ``window_rows`` rows in flight at a time (see
    the module docstring). ``actors`` holds the pool's actors while a job runs."""

    run: Path
    device: str = "cpu"
    address: str | None = None
    workers: int = 2
    gpus_per_worker: float = 0.0
    window_rows: int = 65_536

    def __call__(self, blocks: Iterator[Block], predict: BlockPredictor) -> Predicted:
        import ray
        import torch
        from ray.util import ActorPool

        from sgmft.encoders.ray_extract import _connect

        started = _connect(self.address, self.workers)
        options = {"run": str(self.run), "device": self.device, "min_gain": predict.predictor.min_gain,
                   "caches": [str(Path(c.paths[0]).parent) for c in _chunked(predict)],
                   "options": predict.options, "threads": torch.get_num_threads()}
        remote = ray.remote(num_cpus=1, num_gpus=self.gpus_per_worker or None)(PredictActor)
        self.actors = [remote.remote(**options) for _ in range(self.workers)]
        pool = ActorPool(self.actors)
        try:
            while True:
                window = list(itertools.islice(blocks, max(1, self.window_rows // 4096)))
                if not window:
                    return
                # a call per block: an actor computes exactly what the local path computes for
                # it (the same batch shapes, so the same bits, novelty scores included)
                items = [(w, pickle.dumps(block.posts)) for w, block in enumerate(window)]
                found: dict[int, tuple[list, int]] = {w: ([], 0) for w in range(len(window))}
                answers = pool.map(lambda actor, item: actor.posts.remote(item[1]), items)
                for (w, _), (records, count) in zip(items, answers, strict=True):
                    found[w] = (found[w][0] + pickle.loads(records), found[w][1] + count)
                for w, block in enumerate(window):
                    yield block, *found[w]
        finally:
            if started:
                ray.shutdown()


def _chunked(predict: BlockPredictor) -> list:
    """The memory-mapped features of each cache the driver found (their folders go to the actors)."""
    return [cache.text for cache in predict.caches if hasattr(cache.text, "paths")]
