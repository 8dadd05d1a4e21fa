"""`sgmft predict --manifest ... --ray`: the same prediction, its posts predicted on a Ray cluster.

The driver reads and checks the manifest in blocks exactly as the local path does
(`sgmft.serving.batch`: the same row errors, the same order, the same writers and ``--resume``).
A window of blocks at a time becomes a Ray Data dataset of post batches; an actor pool, one
`sgmft.serving.batch.BlockPredictor` per actor (the run, its encoders and the feature caches
loaded once per actor and window), decodes the images and predicts; the records come back to the
driver, which writes them block by block (Parquet, JSONL, JSON or CSV). The records equal the
local path's (tested). Run folders, caches and images must sit where every actor can read them.
Needs the optional extra: ``pip install 'sgmft[ray]'``.
"""

from __future__ import annotations

import itertools
import pickle
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sgmft.data.manifest import Block
from sgmft.serving.batch import BlockPredictor, Predicted

#: posts per actor call
POSTS_PER_CALL = 256


class PredictActor:
    """A Ray actor: a run's block predictor, loaded once; predicts one batch of posts per call."""

    def __init__(self, run: str, device: str, min_gain: float, caches: list[str], options: dict[str, Any],
                 threads: int):
        import torch

        from sgmft.encoders.cache import load_cache
        from sgmft.serving.predictor import Predictor

        torch.set_num_threads(threads)
        predictor = Predictor(run, device=device, min_gain=min_gain)
        self.predict = BlockPredictor(predictor, [load_cache(folder) for folder in caches],
                                      predictor.run.part_of(), options)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        out: dict[str, list] = {"window": [], "records": [], "from_cache": []}
        for window, posts in zip(batch["window"], batch["posts"], strict=True):
            records, from_cache = self.predict(pickle.loads(posts))
            out["window"].append(int(window))
            out["records"].append(pickle.dumps(records))
            out["from_cache"].append(from_cache)
        return out


@dataclass
class RayWindows:
    """Predicts blocks on Ray, ``window_rows`` rows at a time (see the module docstring)."""

    run: Path
    device: str = "cpu"
    address: str | None = None
    workers: int = 2
    gpus_per_worker: float = 0.0
    window_rows: int = 65_536

    def __call__(self, blocks: Iterator[Block], predict: BlockPredictor) -> Predicted:
        import ray
        import torch

        from sgmft.encoders.ray_extract import _connect, _ordered_quiet_data

        started = _connect(self.address, self.workers)
        actor = {"run": str(self.run), "device": self.device, "min_gain": predict.predictor.min_gain,
                 "caches": [str(Path(c.paths[0]).parent) for c in _chunked(predict)],
                 "options": predict.options, "threads": torch.get_num_threads()}
        try:
            while True:
                window = list(itertools.islice(blocks, max(1, self.window_rows // 4096)))
                if not window:
                    return
                items = [{"window": w, "posts": pickle.dumps(block.posts[start:start + POSTS_PER_CALL])}
                         for w, block in enumerate(window)
                         for start in range(0, len(block.posts), POSTS_PER_CALL)]
                found: dict[int, tuple[list, int]] = {w: ([], 0) for w in range(len(window))}
                if items:
                    with _ordered_quiet_data():
                        parts = min(len(items), 4 * self.workers)    # so every actor gets work
                        dataset = ray.data.from_items(items, override_num_blocks=parts).map_batches(
                            PredictActor, batch_size=1, batch_format="numpy", num_cpus=1,
                            compute=ray.data.ActorPoolStrategy(size=self.workers),
                            num_gpus=self.gpus_per_worker or None, fn_constructor_kwargs=actor)
                        for row in dataset.iter_rows():
                            records, count = found[int(row["window"])]
                            found[int(row["window"])] = (records + pickle.loads(row["records"]),
                                                         count + int(row["from_cache"]))
                for w, block in enumerate(window):
                    yield block, *found[w]
        finally:
            if started:
                ray.shutdown()


def _chunked(predict: BlockPredictor) -> list:
    """The memory-mapped features of each cache the driver found (their folders go to the actors)."""
    return [cache.text for cache in predict.caches if hasattr(cache.text, "paths")]
