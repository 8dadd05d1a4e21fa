from pathlib import Path

import numpy as np
import pytest
import torch

from sgmft.data.manifest import Manifest
from sgmft.data.posts import Post
from sgmft.encoders.cache import FeatureCache
from sgmft.models.config import ModelConfig
from sgmft.training.data import Vocabulary, batches, post_tensors


def test_vocabulary_by_frequency_with_pad_and_unknown(tmp_path):
    vocab = Vocabulary.build([("公司", "加班"), ("公司", "开会")])
    assert vocab.tokens[:3] == ["<pad>", "<unk>", "公司"] and len(vocab) == 5
    ids = vocab.encode([("公司", "没见过"), ("加班", "开会", "公司")], length=2)
    assert ids.tolist() == [[2, 1], [vocab.tokens.index("加班"), vocab.tokens.index("开会")]]
    vocab.save(tmp_path / "v.json")
    assert Vocabulary.load(tmp_path / "v.json") == vocab


def test_batches_in_order():
    tensors = {"x": torch.arange(5), "y": torch.arange(5) * 10}
    chunks = list(batches(tensors, 2, torch.tensor([4, 3, 2, 1, 0])))
    assert [c["x"].tolist() for c in chunks] == [[4, 3], [2, 1], [0]]
    assert [c["y"].tolist() for c in batches(tensors, 3)] == [[0, 10, 20], [30, 40]]


def test_post_tensors_follow_the_ids_and_hold_word_ids_only_for_a_word_model():
    posts = [Post(f"p{i}", "", Path(f"{i}.jpg"), ("home", "gym")[i % 2], None, None, i + 1, tokens,
                  f"{i:064x}") for i, tokens in enumerate([("公司", "加班"), ("健身",), ("公司",)])]
    manifest = Manifest(Path("m.jsonl"), posts, ("home", "gym"))
    text, image = np.arange(6, dtype=np.float32).reshape(3, 2), np.arange(9, dtype=np.float32).reshape(3, 3)
    cache = FeatureCache(["p0", "p1", "p2"], text, image, {})
    vocab = Vocabulary.build([("公司", "加班")])
    features = post_tensors(manifest, cache, ["p2", "p0"], vocab, ModelConfig())
    assert set(features) == {"text", "image", "label"}
    assert features["text"][np.arange(2)].tolist() == [[4, 5], [0, 1]]
    assert features["label"].tolist() == [0, 0]
    reader = ModelConfig(text_input="word_mean", max_tokens=3)
    words = post_tensors(manifest, cache, ["p1", "p0"], vocab, reader, with_labels=False)
    assert "label" not in words and words["tokens"].tolist() == [[1, 0, 0], [2, 3, 0]]
    assert words["image"][np.arange(2)].tolist() == [[3, 4, 5], [0, 1, 2]]
    with pytest.raises(ValueError, match="'p1' has label 'gym', not one of"):
        post_tensors(Manifest(Path("m.jsonl"), posts, ("home",)), cache, ["p0", "p1"], vocab, ModelConfig())
