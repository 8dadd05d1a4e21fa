import numpy as np
import pytest
import torch
from PIL import Image

from sgmft.data.images import load_image
from sgmft.serving.predictor import PostInput, PredictionError, Predictor


def test_prediction_has_label_probabilities_and_evidence(predictor, demo_folder):
    image = load_image(demo_folder / "images" / "gym-000.jpg")
    [result] = predictor.predict([PostInput("今天在健身房跑步", image)])
    assert result.label in predictor.labels
    assert set(result.probabilities) == set(predictor.labels)
    assert sum(result.probabilities.values()) == pytest.approx(1.0, abs=1e-4)
    assert result.label == max(result.probabilities, key=result.probabilities.get)
    gate = result.evidence["similarity_gate"]
    assert gate["gate"] == "softmax"
    # softmax over D = 16 elements: the mean weight of the cross-modal path is exactly 1/16
    assert gate["cross_attention_weight_mean"] == pytest.approx(1 / 16, abs=1e-5)
    for name in ("text_only", "image_only"):
        assert "probe" in result.evidence[name]["source"]
        assert result.evidence[name]["label"] in predictor.labels
    assert result.warnings == []


def test_unimodal_evidence_comes_from_the_fitted_probes(predictor, demo_folder):
    """The demo's own hot-pot post: its text alone must say restaurant (the old zeroed-image
    answer was "gym"), and the image-alone answer must match the image probe by hand."""
    image = load_image(demo_folder / "images" / "restaurant-003.jpg")
    [result] = predictor.predict([PostInput("周末和朋友去吃火锅，太好吃了[馋嘴]", image)])
    assert result.evidence["text_only"]["label"] == "restaurant"
    features = predictor.encode([PostInput(None, image)]).tensors["image"]
    probes = predictor.run.model.probes
    by_hand = (features @ probes.image_weight.T + probes.image_bias).argmax(-1).item()
    assert result.evidence["image_only"]["label"] == predictor.labels[by_hand]


def test_batch_equals_one_at_a_time(predictor, demo_folder):
    posts = [PostInput(t, load_image(demo_folder / "images" / f"{label}-001.jpg"))
             for t, label in [("看电影", "cinema"), ("在家做饭", "home"), ("逛商场", "shopping")]]
    together = predictor.predict(posts)
    for post, result in zip(posts, together, strict=True):
        [alone] = predictor.predict([post])
        for label in predictor.labels:
            assert alone.probabilities[label] == pytest.approx(result.probabilities[label], abs=1e-5)


def test_one_modality_only_is_predicted_with_the_training_mean(predictor):
    [text_only] = predictor.predict([PostInput("在公司加班", None)])
    assert any("no image" in w and "training mean" in w for w in text_only.warnings)
    assert "image_only" not in text_only.evidence and "text_only" in text_only.evidence
    [image_only] = predictor.predict([PostInput("[哈哈] http://t.cn/x", Image.new("RGB", (30, 30)))])
    assert any("empty after cleaning" in w for w in image_only.warnings)
    missing = predictor.missing("image", 2)["image"]
    assert torch.equal(missing[0], predictor.run.model.probes.image_mean)


def test_nothing_usable_is_an_error(predictor):
    with pytest.raises(PredictionError):
        predictor.predict([PostInput("[哈哈]", None)])
    assert predictor.predict([]) == []


def test_every_variant_gives_probe_evidence(unis_run):
    predictor = Predictor(unis_run)
    [result] = predictor.predict([PostInput("在公司加班", Image.new("RGB", (40, 40), (90, 90, 90)))])
    assert "probe" in result.evidence["text_only"]["source"]
    assert "similarity_gate" not in result.evidence
    assert np.isclose(sum(result.evidence["image_only"]["probabilities"].values()), 1.0, atol=1e-4)
