"""Chunk-aware epochs: when the training rows span more cache chunks than can stay mapped, an
epoch reads them a window of chunks at a time, still every row once, seeded and resumable."""

import numpy as np

from sgmft.encoders import chunks
from sgmft.training.trainer import SHUFFLE_CHUNKS, chunked_order, epoch_order


def test_every_row_once_and_each_window_of_the_order_from_few_chunks():
    chunk_of = np.repeat(np.arange(100), 50)            # 100 chunks of 50 rows
    order = chunked_order(chunk_of, seed=3, epoch=1).numpy()
    assert np.array_equal(np.sort(order), np.arange(5000))
    window = SHUFFLE_CHUNKS * 50
    for start in range(0, 100 // SHUFFLE_CHUNKS * window, window):
        assert len(np.unique(chunk_of[order[start:start + window]])) == SHUFFLE_CHUNKS
    assert len(np.unique(chunk_of[order[100 // SHUFFLE_CHUNKS * window:]])) == 100 % SHUFFLE_CHUNKS
    assert np.array_equal(order, chunked_order(chunk_of, 3, 1).numpy())   # seeded: resumable
    assert not np.array_equal(order, chunked_order(chunk_of, 3, 2).numpy())
    # rows of one chunk do not come out in their stored order
    first = order[:window]
    assert not np.array_equal(np.sort(first), first)


def test_a_full_shuffle_while_the_chunks_fit_the_budget(monkeypatch):
    chunk_of = np.repeat(np.arange(10), 20)
    full = epoch_order(200, 0, 0, chunk_of)
    assert np.array_equal(full.numpy(), epoch_order(200, 0, 0).numpy())   # unchanged for small data
    monkeypatch.setattr(chunks, "OPEN_CHUNKS", 4)
    local = epoch_order(200, 0, 0, chunk_of).numpy()
    assert np.array_equal(local, chunked_order(chunk_of, 0, 0).numpy())
    assert len(np.unique(chunk_of[local[:20 * SHUFFLE_CHUNKS]])) <= SHUFFLE_CHUNKS
