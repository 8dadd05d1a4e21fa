import pytest
import torch

from sgmft.models.config import ModelConfig
from sgmft.models.model import MultimodalModel
from sgmft.models.variants import FIGURES, TABLES, VARIANTS, variant_overrides

SMALL = {"heads": 2, "head_dim": 4, "ffn_hidden": 8, "fusion_layers": 1, "dim": 16,
         "classifier_hidden": (16, 16, 8, 8), "embed_dim": 8, "textcnn_channels": 4}


def make_batch(n=6):
    torch.manual_seed(0)
    return {"text": torch.randn(n, 10), "image": torch.randn(n, 12),
            "tokens": torch.randint(0, 20, (n, 7)), "label": torch.arange(n) % 3,
            "text_tokens": torch.randn(n, 5, 10).half(), "image_tokens": torch.randn(n, 9, 12).half()}


def build(variant, **overrides):
    config = ModelConfig(**{**SMALL, **variant_overrides(variant), **overrides})
    return MultimodalModel(config, 10, 12, num_classes=3, vocab_size=20, token_lengths=(5, 9))


WORD_LEVEL = {v for v, o in VARIANTS.items() if o.get("text_input", "features") != "features"}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("reading", ["elements", "chunks", "sequence"])
def test_every_variant_shapes_and_gradients_reach_every_parameter(variant, reading):
    if reading == "sequence" and variant in WORD_LEVEL:
        with pytest.raises(ValueError, match="needs encoder features"):
            build(variant, reading=reading)
        return
    model = build(variant, reading=reading, chunks=4, seq_length=3)
    batch = make_batch()
    out = model(batch)
    assert out.logits.shape == (6, 3)
    assert out.fused.shape[0] == 6 and out.fused.ndim == 2
    assert (out.gate is not None) == model.config.sim
    model.loss(out, batch["label"]).backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None, f"{variant}/{reading}: no gradient for {name}"
        assert torch.isfinite(parameter.grad).all()
        assert parameter.grad.abs().sum() > 0, f"{variant}/{reading}: zero gradient for {name}"


def test_shared_space_keeps_d_and_unshared_projects():
    config = ModelConfig(**{**SMALL, "dim": None})
    shared = MultimodalModel(config, 12, 12, 3, shared_space=True)
    assert isinstance(shared.inputs.text_proj, torch.nn.Identity) and shared.inputs.length == 12
    unshared = MultimodalModel(config, 10, 12, 3, shared_space=False)
    assert unshared.inputs.dim == 256


def test_sequence_reading_maps_lengths_and_widths():
    model = build("sg-mft", reading="sequence", seq_length=4, dim=8)
    assert (model.inputs.length, model.inputs.width) == (4, 8)
    text, image = model.inputs(make_batch())
    assert text.shape == image.shape == (6, 4, 8)
    with pytest.raises(ValueError, match="--sequences"):
        MultimodalModel(ModelConfig(**{**SMALL, "reading": "sequence"}), 10, 12, 3)


def test_chunks_must_divide_d():
    with pytest.raises(ValueError, match="not divisible"):
        build("sg-mft", reading="chunks", chunks=5)


def test_unknown_fusion_and_bad_switch():
    with pytest.raises(KeyError, match="unknown fusion 'nope'"):
        build("sg-mft", fusion="nope")
    with pytest.raises(ValueError, match="gate"):
        ModelConfig(gate="tanh")


def test_tables_and_figures_name_known_variants():
    used = {v for rows in TABLES.values() for _, v in rows} | {v for vs in FIGURES.values() for v in vs}
    assert used <= set(VARIANTS) and len(TABLES) == 4


SWITCHES = [{"positional": True}, {"sfm_residual": True}, {"input_norm": "standard", "input_dropout": 0.2},
            {"modality_dropout": 0.5}, {"gate": "clipped_softmax", "gate_temperature": 2.0},
            {"gate": "sigmoid", "ca_query": "self"}, {"fallback": True}]


@pytest.mark.parametrize("switches", SWITCHES)
@pytest.mark.parametrize("reading", ["elements", "chunks", "sequence"])
def test_beyond_the_paper_switches_keep_every_parameter_learning(switches, reading):
    model = build("sg-mft", reading=reading, chunks=4, seq_length=3, **switches)
    batch = make_batch()
    model.train()
    out = model(batch)
    assert out.logits.shape == (6, 3) and set(out.probes) == {"text", "image"}
    model.loss(out, batch["label"], label_smoothing=0.1).backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, f"{switches}: {name}"


def test_modality_dropout_replaces_a_modality_by_its_training_mean():
    model = build("sg-mft", modality_dropout=0.999)
    batch = make_batch(400)
    model.inputs.fit_statistics(batch["text"] * 3 + 1, batch["image"])
    torch.manual_seed(0)
    text, image = model.inputs._drop_modalities(batch["text"], batch["image"])
    dropped_text = (text == model.inputs.text_stats.mean).all(-1)
    dropped_image = (image == model.inputs.image_stats.mean).all(-1)
    assert not (dropped_text & dropped_image).any()            # never both at once
    assert 0.4 < dropped_text.float().mean() < 0.6 and (dropped_text | dropped_image).float().mean() > 0.99
    standard = build("sg-mft", modality_dropout=0.999, input_norm="standard")
    standard.inputs.fit_statistics(batch["text"] * 3 + 1, batch["image"])
    prepared = standard.inputs._prepare(batch["text"] * 3 + 1, standard.inputs.text_stats)
    assert prepared.mean(0).abs().max() < 1e-5 and torch.allclose(prepared.std(0), torch.ones(10), atol=0.01)
    missing = standard.inputs._missing(prepared, standard.inputs.text_stats)
    assert torch.equal(missing, torch.zeros_like(prepared))


def test_present_weights_by_hand():
    from sgmft.models.fallback import present_weights

    mixture = torch.tensor([0.5, 0.1, 0.3, 0.1])
    present = torch.tensor([[True, True], [True, False], [False, True]])
    assert torch.allclose(present_weights(mixture, present, 3), torch.tensor(
        [[0.5, 0.1, 0.3, 0.1], [0.5, 0.4, 0.0, 0.1], [0.5, 0.0, 0.4, 0.1]]))
    assert torch.equal(present_weights(mixture, None, 2), mixture.expand(2, -1))


def test_fallback_mixture_by_hand():
    model = build("sg-mft", fallback=True)
    model.eval()
    prior = torch.linspace(1, 2, model.probes.prior.shape[0])
    prior = prior / prior.sum()
    model.probes.set_mixture((0.4, 0.2, 0.2, 0.2), prior)
    batch = make_batch()
    out = model(batch)
    parts = [torch.softmax(x, -1) for x in (out.head_logits, out.probes["text"], out.probes["image"])]
    expected = torch.log(0.4 * parts[0] + 0.2 * parts[1] + 0.2 * parts[2] + 0.2 * prior)
    assert torch.allclose(out.logits, expected, atol=1e-6)
    assert torch.allclose(torch.softmax(out.logits, -1).sum(-1), torch.ones(6))
    # a post without its image: the image probe's weight goes to the text probe
    present = torch.tensor([[True, False]] * 6)
    missing = model({**batch, "present": present})
    moved = torch.log(0.4 * parts[0] + 0.4 * parts[1] + 0.2 * prior)
    assert torch.allclose(missing.logits, moved, atol=1e-6)
    # a mixture all on the image answers a text-only post with the text probe, not uniformly
    model.probes.set_mixture((0.0, 0.0, 1.0, 0.0))
    alone = model({**batch, "present": present})
    assert torch.allclose(alone.logits, torch.log(parts[1]), atol=1e-5)
    model.probes.set_mixture((0.4, 0.2, 0.2, 0.2))
    # the temperature divides the output logits and keeps the argmax
    model.set_temperature(2.0)
    cooled = model(batch)
    assert torch.allclose(cooled.logits, expected / 2, atol=1e-6)
    assert torch.equal(cooled.logits.argmax(-1), out.logits.argmax(-1))
    with pytest.raises(ValueError, match="temperature"):
        model.set_temperature(0.0)


def test_the_cross_fit_ensemble_averages_its_members_fused_heads():
    torch.manual_seed(1)
    model, members = build("sg-mft", dropout=0.0), [build("sg-mft", dropout=0.0) for _ in range(2)]
    for m in (model, *members):
        for p in m.parameters():
            torch.nn.init.normal_(p, std=0.5)
    batch = make_batch()
    model.eval()
    alone = [torch.softmax(m.eval()(batch).head_logits, -1) for m in (model, *members)]
    model.add_members(members)
    out = model(batch)
    torch.testing.assert_close(torch.softmax(out.head_logits, -1), sum(alone) / 3, rtol=1e-5, atol=1e-6)
    model.use_members = False
    torch.testing.assert_close(torch.softmax(model(batch).head_logits, -1), alone[0])
    model.use_members = True
    model.train()                       # training fits the model's own head, never the mean
    torch.testing.assert_close(torch.softmax(model(batch).head_logits, -1), alone[0])
    assert len([k for k in model.state_dict() if k.startswith("members.1.")]) > 0


def test_the_answer_is_unsure_when_hardly_above_the_label_share():
    model = build("sg-mft")
    model.probes.set_mixture((1.0, 0.0, 0.0, 0.0), torch.tensor([0.5, 0.3, 0.2]))
    probs = torch.tensor([[0.52, 0.28, 0.20], [0.20, 0.70, 0.10], [0.30, 0.30, 0.40]])
    answers = model.answer(torch.log(probs))
    assert answers.tolist() == [-1, 1, 2]           # gains over the shares: 0.02, 0.4, 0.2
    assert model.answer(torch.log(probs), min_gain=0.0).tolist() == [0, 1, 2]
    assert model.answer(torch.log(probs), min_gain=0.3).tolist() == [-1, 1, -1]
