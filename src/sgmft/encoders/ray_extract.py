"""`sgmft extract --ray`: the same feature cache, filled on a Ray cluster with Ray Data.

Ray Data reads the extraction plan's jobs (`sgmft.encoders.plan`: which texts and images each
chunk encodes, in which batches), decodes and resizes the images in parallel tasks, and encodes
in an actor pool with one encoder loaded per actor. The driver writes each chunk as soon as its
jobs are in, through the same `Extraction` as a local run, so the cache is the same: the same
``cache.json`` fields, the same chunk bytes and SHA-256s. For that, every actor computes with
the driver's number of torch threads (the last bits of a feature depend on it) and on the same
batches. A killed actor is restarted by Ray and its job retried; a killed driver resumes from
its finished chunks, like a local run. Needs the optional extra: ``pip install 'sgmft[ray]'``.
"""

from __future__ import annotations

import io
import logging
import pickle
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sgmft.data.images import PixelBudget, load_resized
from sgmft.data.manifest import Manifest
from sgmft.encoders.cache import (
    CHUNK_MIB,
    FeatureCache,
    encoder_chunk_rows,
    encoder_identity,
    encoder_info,
    extraction,
)
from sgmft.encoders.plan import Job, encode_job
from sgmft.limits import LIMITS
from sgmft.progress import progress_bar

log = logging.getLogger(__name__)


def _decode(row: dict[str, Any], preprocess) -> dict[str, Any]:
    """A Ray task: an image job's images decoded and resized to the encoder's input, as one
    (n, H, W, 3) uint8 array in ``.npy`` bytes (a text job passes through)."""
    if row["modality"] != "image":
        return {**row, "pixels": b""}
    budget = PixelBudget(LIMITS.batch_pixels)
    images = [np.asarray(load_resized(path, preprocess, budget)) for path in row["sources"]]
    buffer = io.BytesIO()
    np.save(buffer, np.stack(images))
    return {**row, "pixels": buffer.getvalue()}


class EncoderActor:
    """A Ray actor holding one encoder; encodes one job per call."""

    def __init__(self, encoder_name: str, options: dict[str, Any], device: str, sequences: bool,
                 threads: int, precision: str = "fp32"):
        from sgmft.encoders import create_encoder

        torch.set_num_threads(threads)
        self.encoder = create_encoder(encoder_name, device=device, precision=precision, **options)
        self.sequences = sequences
        self.info = pickle.dumps(encoder_info(self.encoder) | {"precision": precision})

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        from PIL import Image

        out: dict[str, list] = {"index": [], "entries": [], "info": []}
        for i in range(len(batch["index"])):
            job = Job(-1, str(batch["modality"][i]), (), tuple(str(s) for s in batch["sources"][i]))
            images = None
            if job.modality == "image":
                images = [Image.fromarray(a) for a in np.load(io.BytesIO(batch["pixels"][i]))]
            out["index"].append(int(batch["index"][i]))
            out["entries"].append(pickle.dumps(encode_job(self.encoder, job, self.sequences, images)))
            out["info"].append(self.info)
        return out


def _connect(address: str | None, workers: int) -> bool:
    """Join the cluster at ``address`` (``auto``, ``ray://...``), or start a local one; returns
    whether this call started Ray (and so must stop it)."""
    import ray

    if ray.is_initialized():
        return False
    if address:
        ray.init(address=address, log_to_driver=False)
    else:   # logical CPUs: one per encoder actor and two for decoding tasks
        ray.init(num_cpus=workers + 2, include_dashboard=False, log_to_driver=False)
    return True


def extract_with_ray(manifest: Manifest, out: str | Path, encoder_name: str,
                     encoder_options: dict[str, Any] | None = None, address: str | None = None,
                     workers: int = 2, gpus_per_worker: float = 0.0, batch_size: int = 32,
                     chunk_size: int | None = None, overwrite: bool = False, progress: bool = True,
                     text_config: dict[str, Any] | None = None, device: str = "cpu",
                     sequences: bool = False, precision: str = "fp32", verify: bool = False,
                     dtype: str | None = None, chunk_mib: float = CHUNK_MIB) -> FeatureCache:
    """`sgmft.encoders.cache.extract_features` on a Ray cluster (see the module docstring). A
    new cache without ``chunk_size`` has its posts per chunk set by ``chunk_mib`` from the
    encoder's widths, as the local path sets it: the driver builds the encoder once on its CPU
    to read them (``chunk_size`` spares it)."""
    import ray

    from sgmft.encoders import create_encoder, image_preprocess_for

    options = dict(encoder_options or {})
    identity = encoder_identity(encoder_name, options, sequences)

    def by_bytes() -> int:
        encoder = create_encoder(encoder_name, device="cpu", precision="fp32", **options)
        return encoder_chunk_rows(encoder, sequences, dtype or "float32", chunk_mib)

    with extraction(manifest, out, identity, overwrite, chunk_size or by_bytes, batch_size,
                    text_config or {}, verify, dtype) as job:
        if not job.todo:
            return job.finish(manifest)
        jobs = [work for index in job.todo for work in job.plan.jobs[index]]
        preprocess = image_preprocess_for(encoder_name, options.get("checkpoint"))
        started = _connect(address, workers)
        try:
            logging.getLogger("ray.data").setLevel(logging.WARNING)
            with _ordered_quiet_data():   # before the dataset exists: it keeps the context it finds
                items = [{"index": n, "modality": w.modality, "sources": list(w.sources)}
                         for n, w in enumerate(jobs)]
                dataset = ray.data.from_items(items)
                # a CPU share unlike the actors': Ray then keeps decoding in tasks of its own
                # instead of fusing it into the encoder actors
                dataset = dataset.map(_decode, fn_kwargs={"preprocess": preprocess}, num_cpus=0.5)
                dataset = dataset.map_batches(
                    EncoderActor, batch_size=1, batch_format="numpy", num_cpus=1,
                    compute=ray.data.ActorPoolStrategy(size=workers), num_gpus=gpus_per_worker or None,
                    fn_constructor_kwargs={"encoder_name": encoder_name, "options": options, "device": device,
                                           "sequences": job.sequences, "threads": torch.get_num_threads(),
                                           "precision": precision})
                _write_as_they_come(job, jobs, dataset.iter_rows(), progress)
        finally:
            if started:
                ray.shutdown()
        return job.finish(manifest)


@contextmanager
def _ordered_quiet_data():
    """Ray Data in job order and without progress bars while this extraction runs; the
    process's own settings come back afterwards."""
    import ray

    context = ray.data.DataContext.get_current()
    saved = context.execution_options.preserve_order, context.enable_progress_bars
    context.execution_options.preserve_order, context.enable_progress_bars = True, False
    try:
        yield
    finally:
        context.execution_options.preserve_order, context.enable_progress_bars = saved


def _write_as_they_come(job, jobs: list[Job], rows, progress: bool) -> None:
    """Put each job's features in the memo, and write every chunk whose jobs are all in, in
    chunk order."""
    waiting = {index: len(job.plan.jobs[index]) for index in job.todo}
    order, memo = list(job.todo), None
    bar = progress_bar(len(jobs), "extract (ray)", "job", disable=not progress)
    for row in rows:
        if memo is None:
            memo = job.start(pickle.loads(row["info"]))
        work = jobs[row["index"]]
        for key, entry in zip(work.keys, pickle.loads(row["entries"]), strict=True):
            memo.put(work.modality, key, entry)
        waiting[work.chunk] -= 1
        bar.update(1)
        while order and waiting[order[0]] == 0:
            job.write(order.pop(0), memo)
    bar.close()
    if memo is None:            # every chunk to write reuses features written before
        memo = job.start({})
    for index in order:
        job.write(index, memo)
