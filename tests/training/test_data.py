import torch

from sgmft.training.data import Vocabulary, batches


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
