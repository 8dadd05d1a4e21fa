import pytest
import torch
import torch.nn.functional as F

from sgmft.models.attention import QKV, attend
from sgmft.models.config import ModelConfig
from sgmft.models.interaction import (
    FeedForward,
    InterpolationAttention,
    SimilarityFeedForward,
    SimilarityInteraction,
)


@pytest.fixture
def blocks():
    torch.manual_seed(0)
    own_qkv, other_qkv = QKV(1, 2, 4), QKV(1, 2, 4)
    block = InterpolationAttention(3, 1, 2, 4, "other")
    return block, own_qkv, other_qkv


def test_interpolation_endpoints_eqs_12_13(blocks):
    block, own_qkv, other_qkv = blocks
    own, other = torch.randn(2, 3, 1), torch.randn(2, 3, 1)
    sa = attend(own, own, own_qkv, own_qkv, block.sa_out)
    ca = attend(other, own, other_qkv, own_qkv, block.ca_out)   # eq 9: Q from the other modality
    norm = lambda x: F.layer_norm(x, (3, 1), block.norm.weight, block.norm.bias, block.norm.eps)  # noqa: E731
    ones, zeros = torch.ones(2, 3, 1), torch.zeros(2, 3, 1)
    assert torch.allclose(block(own, other, own_qkv, other_qkv, ones), norm(ca + own), atol=1e-6)
    assert torch.allclose(block(own, other, own_qkv, other_qkv, zeros), norm(sa + own), atol=1e-6)
    half = torch.full((2, 3, 1), 0.5)
    assert torch.allclose(block(own, other, own_qkv, other_qkv, half),
                          norm(0.5 * ca + 0.5 * sa + own), atol=1e-6)


def test_layer_norm_over_all_elements_for_scalar_tokens():
    block = InterpolationAttention(4, 1, 2, 2, "other")
    assert tuple(block.norm.normalized_shape) == (4, 1)
    assert tuple(InterpolationAttention(4, 8, 2, 2, "other").norm.normalized_shape) == (8,)


def test_similarity_feed_forward_hand_computed_eqs_14_to_16():
    sff = SimilarityFeedForward(length=2, width=1, hidden=1)
    with torch.no_grad():
        sff.w1.weight.fill_(1.0)
        sff.w1.bias.fill_(0.5)        # b1
        sff.w3.weight.fill_(2.0)
        sff.w2.weight.fill_(3.0)      # b2 is dropped: LayerNorm over all elements cancels it
    x = torch.tensor([[[1.0], [-2.0]]])
    other = torch.tensor([[[3.0], [4.0]]])
    p_e = torch.tensor([[[0.25, 0.75], [1.0, 0.0]]])
    inter = torch.tensor([0.25 * 3 + 0.75 * 4, 3.0])                       # eq 14: 3.75, 3
    ffn = torch.relu(torch.tensor([1.0, -2.0]) + 2 * inter + 0.5) * 3       # eq 15
    expected = F.layer_norm((ffn + torch.tensor([1.0, -2.0])).reshape(1, 2, 1), (2, 1))  # eq 16
    assert torch.allclose(sff(x, other, p_e), expected, atol=1e-6)


def test_plain_feed_forward_residual():
    ffn = FeedForward(length=1, width=3, hidden=2)
    with torch.no_grad():
        ffn.w2.weight.zero_()
        ffn.w2.bias.zero_()
    assert FeedForward(length=4, width=1, hidden=2).w2.bias is None
    x = torch.tensor([[[1.0, 2.0, 3.0]]])
    assert torch.allclose(ffn(x), F.layer_norm(x, (3,)), atol=1e-6)


@pytest.mark.parametrize("side", ["text", "image"])
def test_sim_puts_the_similarity_ffn_on_one_side(side):
    sim = SimilarityInteraction(6, 1, ModelConfig(sff_side=side, heads=2, head_dim=2))
    assert isinstance(sim.text_ffn if side == "text" else sim.image_ffn, SimilarityFeedForward)
    assert isinstance(sim.image_ffn if side == "text" else sim.text_ffn, FeedForward)
    text, image, gate = sim(torch.randn(4, 6, 1), torch.randn(4, 6, 1))
    assert text.shape == image.shape == gate.shape == (4, 6, 1)
    assert torch.allclose(gate.sum(dim=(1, 2)), torch.ones(4))
