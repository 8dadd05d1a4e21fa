import math

import pytest
import torch

from sgmft.models.attention import QKV, MultiHeadAttention, _attend_generic, _attend_scalar, attend


def set_linear(layer: torch.nn.Linear, weight, bias=None) -> None:
    with torch.no_grad():
        layer.weight.copy_(torch.as_tensor(weight, dtype=torch.float32).reshape(layer.weight.shape))
        if layer.bias is not None:
            layer.bias.copy_(torch.as_tensor(0.0 if bias is None else bias).expand_as(layer.bias))


def test_hand_computed_single_head():
    """One head of width 1 with W^Q = W^K = W^V = W^O = 1: out_i = sum_j softmax_j(f_i g_j) g_j."""
    q, kv, out = QKV(1, 1, 1), QKV(1, 1, 1), torch.nn.Linear(1, 1)
    for layer in (q.query, q.key, q.value, kv.query, kv.key, kv.value, out):
        set_linear(layer, [1.0])
    f = torch.tensor([[[1.0], [2.0]]])
    g = torch.tensor([[[0.0], [1.0], [-1.0]]])
    expected = []
    for fi in (1.0, 2.0):
        weights = torch.softmax(torch.tensor([fi * 0.0, fi * 1.0, fi * -1.0]), 0)
        expected.append(float((weights * torch.tensor([0.0, 1.0, -1.0])).sum()))
    result = attend(f, g, q, kv, out)
    assert torch.allclose(result.squeeze(), torch.tensor(expected), atol=1e-6)
    # width 1 takes the closed form; the generic path gives the same numbers
    assert torch.allclose(_attend_generic(f, g, q, kv, out), result, atol=1e-6)


def test_scale_is_one_over_sqrt_head_dim():
    q = QKV(1, 1, 4)
    out = torch.nn.Linear(4, 1)
    set_linear(q.query, [1.0] * 4)
    set_linear(q.key, [1.0] * 4)
    set_linear(q.value, [1.0, 0, 0, 0])
    set_linear(out, [1.0, 0, 0, 0])
    f = torch.tensor([[[1.0], [0.0]]])
    # score_ij = 4 f_i f_j / sqrt(4) = 2 f_i f_j
    weights = torch.softmax(torch.tensor([2.0, 0.0]), 0)
    assert math.isclose(attend(f, f, q, q, out)[0, 0, 0].item(), weights[0].item(), rel_tol=1e-5)


@pytest.mark.parametrize("lq, lk", [(5, 5), (7, 3)])
def test_closed_form_equals_generic_attention(lq, lk):
    torch.manual_seed(0)
    q, kv, out = QKV(1, 8, 8), QKV(1, 8, 8), torch.nn.Linear(64, 1)
    a, b = torch.randn(3, lq, 1), torch.randn(3, lk, 1)
    assert torch.allclose(_attend_scalar(a, b, q, kv, out), _attend_generic(a, b, q, kv, out), atol=1e-5)


def test_closed_form_gradients_equal_generic():
    torch.manual_seed(1)
    q, out = QKV(1, 4, 8), torch.nn.Linear(32, 1)
    x = torch.randn(2, 6, 1, requires_grad=True)
    _attend_scalar(x, x, q, q, out).pow(2).sum().backward()
    closed = [x.grad.clone()] + [p.grad.clone() for p in q.parameters()]
    x.grad = None
    for p in q.parameters():
        p.grad = None
    _attend_generic(x, x, q, q, out).pow(2).sum().backward()
    generic = [x.grad] + [p.grad for p in q.parameters()]
    for a, b in zip(closed, generic, strict=True):
        assert torch.allclose(a, b, atol=1e-5)


def test_multi_head_attention_shapes_and_misuse():
    self_attention = MultiHeadAttention(4, 2, 3)
    cross_attention = MultiHeadAttention(4, 2, 3, cross=True)
    x, context = torch.randn(2, 5, 4), torch.randn(2, 7, 4)
    assert self_attention(x).shape == (2, 5, 4)
    assert cross_attention(x, context).shape == (2, 5, 4)
    with pytest.raises(ValueError):
        self_attention(x, context)
    with pytest.raises(ValueError):
        cross_attention(x)


def test_positions_of_scalar_tokens_by_hand():
    """score_ij = (s(f_i) + u_i) g_j + v_j with one head and unit weights (s(f) = f)."""
    from sgmft.models.attention import PositionBias

    q, kv, out = QKV(1, 1, 1), QKV(1, 1, 1), torch.nn.Linear(1, 1)
    for layer in (q.query, q.key, q.value, kv.query, kv.key, kv.value, out):
        set_linear(layer, [1.0])
    position = PositionBias(1, 2, 3)
    with torch.no_grad():
        position.query.copy_(torch.tensor([[0.5, -1.0]]))
        position.key.copy_(torch.tensor([[0.0, 2.0, -3.0]]))
    f, g = torch.tensor([[[1.0], [2.0]]]), torch.tensor([[[0.0], [1.0], [-1.0]]])
    keys = torch.tensor([0.0, 1.0, -1.0])
    expected = [float((torch.softmax((fi + ui) * keys + torch.tensor([0.0, 2.0, -3.0]), 0) * keys).sum())
                for fi, ui in ((1.0, 0.5), (2.0, -1.0))]
    assert torch.allclose(attend(f, g, q, kv, out, position).squeeze(), torch.tensor(expected), atol=1e-6)
    with pytest.raises(ValueError, match="scalar tokens"):
        attend(torch.ones(1, 2, 3), torch.ones(1, 3, 3), QKV(3, 1, 2), QKV(3, 1, 2), torch.nn.Linear(2, 3),
               position)
