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
    assert not [w for w in result.warnings if "no usable" in w or "no image" in w]   # both were there


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


def test_a_missing_modality_gets_no_weight_in_the_mixture(fallback_predictor, demo_folder):
    """Text-only and image-only posts with the fallback on: the missing modality's probe weight
    goes to the other modality's probe, and the probabilities are that mixture / T."""
    predictor = fallback_predictor
    probes, model = predictor.run.model.probes, predictor.run.model
    probes.set_mixture((0.4, 0.3, 0.2, 0.1))           # every part weighs: the renormalising shows
    image = load_image(demo_folder / "images" / "gym-001.jpg")
    try:
        posts = ((PostInput("今天在健身房跑步", None), "image"), (PostInput(None, image), "text"))
        for post, missing in posts:
            [result] = predictor.predict([post])
            assert result.evidence["mixture"][missing] == 0.0
            assert sum(result.evidence["mixture"].values()) == pytest.approx(1.0, abs=1e-3)
            assert any(f"no {'usable text' if missing == 'text' else 'image'}" in w for w in result.warnings)
            features = predictor.encode([post])
            outputs = model(features.tensors)
            parts = [torch.softmax(outputs.head_logits, -1), torch.softmax(outputs.probes["text"], -1),
                     torch.softmax(outputs.probes["image"], -1), probes.prior[None]]
            weights = {"text": [0.4, 0.0, 0.5, 0.1], "image": [0.4, 0.5, 0.0, 0.1]}[missing]
            mixed = sum(w * p for w, p in zip(weights, parts, strict=True)) / sum(weights)
            expected = torch.softmax(torch.log(mixed) / model.temperature, -1)[0]
            got = torch.tensor([result.probabilities[label] for label in predictor.labels])
            assert torch.allclose(got, expected, atol=1e-5)
    finally:
        probes.set_mixture(tuple(predictor.run.info["mixture"]["weights"].values()))


def test_prediction_sets_and_unsure_answers(fallback_predictor, predictor, demo_folder):
    post = PostInput("周末和朋友去吃火锅", load_image(demo_folder / "images" / "restaurant-002.jpg"))
    [result] = fallback_predictor.predict([post], coverage=0.9)
    decided = result.best_guess or result.label          # unsure or not, the decision lies in its set
    assert result.set and decided in result.set and result.coverage == 0.9
    [wide] = fallback_predictor.predict([post], coverage=0.999)
    assert set(result.set) <= set(wide.set)
    [unsure] = fallback_predictor.predict([post], min_confidence=0.999999)
    assert unsure.label == "unsure" and unsure.best_guess == decided
    assert any("unsure" in w for w in unsure.warnings)
    assert unsure.to_dict()["best_guess"] == decided
    # the fast preset's run kept no held-out posts: the only set it can promise is every label
    [everything] = predictor.predict([post], coverage=0.9)
    assert everything.set == predictor.labels and any("every label" in w for w in everything.warnings)
    with pytest.raises(ValueError, match="between 0 and 1"):
        predictor.predict([post], coverage=1.5)


def test_an_answer_no_better_than_the_prior_is_unsure(fallback_predictor, demo_folder):
    predictor, probes = fallback_predictor, fallback_predictor.run.model.probes
    post = PostInput("周末和朋友去吃火锅", load_image(demo_folder / "images" / "restaurant-002.jpg"))
    probes.set_mixture((0.0, 0.0, 0.0, 1.0))           # the prior alone: the label counts, nothing learned
    try:
        [result] = predictor.predict([post], coverage=0.9)
        assert result.label == "unsure" and result.best_guess in predictor.labels
        assert any("no better than guessing" in w for w in result.warnings)
        assert result.best_guess in result.set         # the decision lies in its set
        predictor.min_gain = 0.0
        [plain] = predictor.predict([post])
        assert plain.label == result.best_guess
    finally:
        predictor.min_gain = 0.05
        probes.set_mixture(tuple(predictor.run.info["mixture"]["weights"].values()))


def test_run_notes_say_a_run_did_not_learn_and_is_not_calibrated():
    from sgmft.serving.predictor import run_notes

    assert run_notes({"calibration": {"rule": "fitted on the worst fold"}}) == []
    notes = run_notes({"did_not_learn": ["the training loss ended at 1.09, near chance"],
                       "calibration": {"rule": "not fitted: no out-of-fold error to fit it on"}})
    assert notes[0] == ("the run this answer comes from did not learn: the training loss ended at 1.09, "
                        "near chance")
    assert "not calibrated (not fitted: no out-of-fold error" in notes[1]
    assert "no held-out posts" in run_notes({})[0]


def test_evidence_says_when_a_part_is_at_chance_or_the_parts_disagree():
    from sgmft.serving.predictor import _disagreement, _uninformative, mixture_in_words

    assert _uninformative(torch.full((8,), 1 / 8)) and not _uninformative(torch.tensor([0.9, 0.05, 0.05]))
    text = {"label": "gym", "probabilities": {"gym": 0.8}, "uninformative": False}
    image = {"label": "home", "probabilities": {"home": 0.7}, "uninformative": False}
    [note] = _disagreement({"text_only": text, "image_only": image})
    assert "disagree" in note and "gym (0.80)" in note and "home (0.70)" in note
    notes = _disagreement({"text_only": text, "image_only": {**image, "uninformative": True}})
    assert notes == ["the image alone is uninformative here (close to chance)"]
    assert mixture_in_words({"fused": 1.0, "text": 0.0, "image": 0.0, "prior": 0.0}) == \
        "the answer comes from the fused model alone"
    assert mixture_in_words({"fused": 0.7, "text": 0.3, "image": 0.0, "prior": 0.0}) == \
        "the answer blends 70 % the fused model and 30 % the text"
