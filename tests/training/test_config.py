import json

import pytest

from sgmft.training.config import RunConfig, apply_overrides, preset_names, read_config_file, resolve_config


def test_defaults_are_the_papers_settings():
    config = RunConfig()
    assert (config.train.lr, config.train.batch_size, config.train.epochs) == (1e-5, 20, 30)
    assert config.train.betas == (0.9, 0.99) and config.model.heads == 8
    assert config.model.sim and config.model.fusion == "sfm" and config.model.sff_side == "text"


def test_round_trip_through_json():
    config = resolve_config("fast", ["model.gate=sigmoid", "train.seed=7"], variant="mplug")
    again = RunConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config


def test_presets_are_bundled():
    assert {"paper", "fast"} <= set(preset_names())
    assert read_config_file("paper")["train"]["lr"] == 1e-5


def test_precedence_defaults_preset_variant_set():
    config = resolve_config("fast", ["model.fusion=merge", "train.epochs=2"], variant="mplug")
    assert config.model.sim is False                    # from the variant
    assert config.model.fusion == "merge"               # --set wins over the variant
    assert config.train.epochs == 2 and config.train.lr == 5e-4 and config.model.dim == 64


def test_set_values_parse_as_json_or_strings():
    data = apply_overrides({}, ["model.classifier_hidden=[8,8,8,8]", "data.manifest=x.jsonl",
                                "model.dim=null"])
    assert data["model"] == {"classifier_hidden": [8, 8, 8, 8], "dim": None}
    assert data["data"]["manifest"] == "x.jsonl"


@pytest.mark.parametrize("override, message", [
    ("model.nope=1", "unknown model field"), ("bad=1", "unknown config section"),
    ("model.reading=diagonal", "model.reading"),
])
def test_bad_overrides_are_refused(override, message):
    with pytest.raises(ValueError, match=message):
        resolve_config(None, [override])


def test_unknown_preset_and_variant():
    with pytest.raises(FileNotFoundError, match="presets"):
        read_config_file("nope")
    with pytest.raises(KeyError, match="unknown variant"):
        resolve_config(None, [], variant="nope")


def test_config_file_on_disk(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"model": {"dim": 32}, "train": {"epochs": 3}}))
    config = resolve_config(str(path))
    assert config.model.dim == 32 and config.train.epochs == 3
