"""Novelty and drift: conformal p-values that flag at their nominal rate on posts like the
training posts and far more on shifted ones; the domain classifier's AUC; the streamed sample."""

import numpy as np
import pytest

from sgmft.decision.drift import DriftSample, drift_in_words, drift_report, hanley_mcneil
from sgmft.decision.novelty import ALPHA, NoveltyIndex, Reduction, fit_novelty, nearest_distances


def draw(rng, n, shift=0.0, dims=(12, 8)):
    """Two modalities of features from one population; ``shift`` moves the first three axes'
    means, so the direction of the features changes (the scores read normalised features)."""
    out = {}
    for name, d in zip(("text", "image"), dims, strict=True):
        x = rng.normal(0, 1, (n, d)) + 3
        x[:, :3] += 4 * shift
        out[name] = x
    return out


def index_of(rng, n=600, held=300, **options) -> NoveltyIndex:
    train = draw(rng, n)
    return fit_novelty(lambda name, rows: train[name][rows], n, draw(rng, held), **options)


def test_nearest_distances_by_hand():
    refs = np.array([[0.0, 0.0], [3.0, 4.0], [1.0, 0.0]])
    got = nearest_distances(refs, np.array([[0.0, 0.0], [3.0, 3.0]]), k=2)
    assert got == pytest.approx(np.array([[0.0, 1.0], [1.0, np.sqrt(13)]]), abs=1e-5)


def test_the_reduction_keeps_the_distance_to_its_span():
    rng = np.random.default_rng(0)
    flat = np.c_[rng.normal(size=(200, 2)), np.zeros((200, 2))] + [5, 0, 0, 0]  # varies in 2 of 4 axes
    reduction = Reduction.fit(flat, components=2)
    inside = reduction(flat[:5])
    assert inside.shape == (5, 3) and np.abs(inside[:, -1]).max() < 1e-3
    outside = reduction(np.array([[5.0, 0.0, 0.0, 5.0]]))
    assert outside[0, -1] > 0.5  # off the span: the last coordinate says how far


def test_flags_on_exchangeable_posts_fire_at_their_nominal_rate():
    rates = []
    for seed in range(20):
        rng = np.random.default_rng(seed)
        index = index_of(rng)
        flags = index.flags(draw(rng, 300))
        rates.append(flags["unlike"].mean(0))
        assert all(((p > 0) & (p <= 1)).all() for p in flags["p"].values())
    rate = np.mean(rates, 0)
    # 20 x 300 p-values per modality; a valid conformal p-value flags at most alpha (plus noise)
    assert (rate <= ALPHA + 3 * np.sqrt(ALPHA * (1 - ALPHA) / 6000) + 0.01).all()
    assert (rate >= ALPHA / 3).all()


def test_posts_of_a_shifted_population_are_flagged_and_told_apart():
    rng = np.random.default_rng(3)
    index = index_of(rng)
    shifted = draw(rng, 300, shift=1.5)
    flags = index.flags(shifted)
    assert flags["unlike"].mean() > 0.5
    report = drift_report(index, index.reduced(shifted), flags["unlike"])
    assert report["text"]["auc"] > 0.9 and report["text"]["auc_low"] > 0.5
    assert "unlike the training posts" in drift_in_words(report)
    same = draw(rng, 300)
    calm = drift_report(index, index.reduced(same), index.flags(same)["unlike"])
    assert calm["text"]["auc_low"] < 0.5 < calm["text"]["auc_high"] + 0.05
    assert "no shift detected" in drift_in_words(calm)


def test_a_missing_modality_is_not_flagged_nor_scored():
    rng = np.random.default_rng(4)
    index = index_of(rng)
    flags = index.flags(draw(rng, 4, shift=5.0), present=np.array([[1, 0], [0, 1], [1, 1], [1, 1]], bool))
    assert np.isnan(flags["p"]["image"][0]) and np.isnan(flags["p"]["text"][1])
    assert flags["unlike"].tolist() == [[True, False], [False, True], [True, True], [True, True]]


def test_without_a_calibration_part_the_folds_calibrate_it():
    rng = np.random.default_rng(5)
    train = draw(rng, 400)
    fold = np.arange(400) % 4
    index = fit_novelty(lambda name, rows: train[name][rows], 400, None, fold)
    assert "other folds" in index.how and len(index.calibration["text"]) == 400
    assert fit_novelty(lambda name, rows: train[name][rows], 400, None, None) is None


def test_the_index_round_trips_through_its_file(tmp_path):
    rng = np.random.default_rng(6)
    index = index_of(rng)
    index.save(tmp_path / "novelty.safetensors")
    back = NoveltyIndex.load(tmp_path / "novelty.safetensors")
    posts = draw(rng, 50, shift=0.5)
    assert np.allclose(back.flags(posts)["p"]["text"], index.flags(posts)["p"]["text"])
    assert back.how == index.how and back.alpha == index.alpha
    # the held-out posts' features (they grow with the calibration part) are read when first used
    assert not back.calibration_features._read
    assert np.array_equal(back.calibration_features["image"], index.calibration_features["image"])
    assert set(back.calibration_features._read) == {"image"}
    index.save(tmp_path / "novelty.safetensors")          # replaced under an open run: refused
    with pytest.raises(RuntimeError, match="replaced after it was opened"):
        back.calibration_features["text"]


def test_the_streamed_sample_is_the_same_whatever_the_blocks():
    rng = np.random.default_rng(7)
    index = index_of(rng)
    posts = draw(rng, 120, shift=1.0)
    ids = [f"p{i}" for i in range(120)]
    reduced, unlike = index.reduced(posts), index.flags(posts)["unlike"]
    whole, blocks = DriftSample(limit=50), DriftSample(limit=50)
    whole.add(ids, reduced, unlike)
    for start in (80, 0, 40):  # another order, in blocks, through a saved state
        part = slice(start, start + 40)
        blocks.add(ids[part], {n: r[part] for n, r in reduced.items()}, unlike[part])
        blocks = DriftSample.from_state(blocks.state(), limit=50)
    assert np.array_equal(whole.keys, blocks.keys) and np.allclose(whole.rows["text"], blocks.rows["text"])
    report = whole.report(index)
    assert report["text"]["posts"] == 120 and report["text"]["tested_on"] == 50
    assert report["text"]["flagged"] == pytest.approx(unlike[:, 0].mean(), abs=1e-4)


def test_hanley_mcneil_by_hand():
    # AUC 0.5 with 10 and 10: q1 = 1/3, q2 = 1/3; var = (0.25 + 9 (1/3 - 1/4) * 2) / 100
    assert hanley_mcneil(0.5, 10, 10) == pytest.approx(np.sqrt((0.25 + 18 / 12) / 100))


def test_faiss_and_the_matrix_product_find_the_same_neighbours(monkeypatch):
    pytest.importorskip("faiss")
    rng = np.random.default_rng(8)
    refs, queries = rng.normal(size=(700, 24)).astype(np.float16), rng.normal(size=(50, 24))
    with_faiss = nearest_distances(refs, queries, 5)
    monkeypatch.setitem(__import__("sys").modules, "faiss", None)      # import faiss -> ImportError
    without = nearest_distances(refs, queries, 5, chunk=16)
    assert np.allclose(with_faiss, without, atol=1e-4)


def test_new_posts_like_the_training_posts_are_not_told_apart_by_the_reduction_alone():
    # more dimensions than components and few posts: the posts a PCA is fitted on lie in its span
    # and new ones do not; the classifier's references must not be those posts
    rng = np.random.default_rng(9)
    train = draw(rng, 200, dims=(120, 120))
    index = fit_novelty(lambda name, rows: train[name][rows], 200, draw(rng, 100, dims=(120, 120)))
    fresh = draw(rng, 200, dims=(120, 120))
    report = drift_report(index, index.reduced(fresh))
    assert all(report[name]["auc_low"] < 0.5 for name in ("text", "image")), report
