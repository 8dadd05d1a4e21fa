import numpy as np
import pytest

from sgmft.encoders.text_encoders import E5Small, MultilingualUSE

SENTENCES = ["今天 公司 加班 很晚", "办公室 开会 老板 报表", "健身房 跑步机 五公里"]


@pytest.mark.parametrize("cls, dim", [(E5Small, 384), (MultilingualUSE, 512)])
def test_text_encoder_shapes_norm_and_meaning(cls, dim):
    encoder = cls()
    features = encoder.encode(SENTENCES)
    assert features.shape == (3, dim) and features.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(features, axis=1), 1.0, atol=1e-3)
    similarity = features @ features.T
    assert similarity[0, 1] > similarity[0, 2]   # two work posts closer than work vs gym
    assert encoder.encode([]).shape == (0, dim)
    np.testing.assert_allclose(encoder.encode(SENTENCES[:1])[0], features[0], atol=1e-4)


def test_texts_are_cut_to_the_encoder_context():
    from sgmft.encoders.base import CONTEXT_WORDS, truncate_words

    long = " ".join(f"w{i}" for i in range(10 * CONTEXT_WORDS))
    [cut] = truncate_words([long], CONTEXT_WORDS)
    assert cut.split() == [f"w{i}" for i in range(CONTEXT_WORDS)]
    assert truncate_words(["a b"], CONTEXT_WORDS) == ["a b"]
