import torch

from sgmft.models.similarity import SimilarityPolymerizer

TEXT = torch.tensor([[[1.0], [2.0]]])     # F_text = (1, 2), elements reading (B=1, L=2, w=1)
IMAGE = torch.tensor([[[3.0], [-1.0]]])   # F_image = (3, -1)


def test_modality_wise_softmax_eqs_1_and_3():
    p_m = SimilarityPolymerizer("softmax").modality_wise(TEXT, IMAGE)
    s_m = torch.tensor([3.0, -2.0])                              # eq 1
    expected = torch.exp(s_m) / torch.exp(s_m).sum()             # eq 3
    assert torch.allclose(p_m.flatten(), expected)
    assert torch.isclose(p_m.sum(), torch.tensor(1.0))


def test_gate_alternatives():
    sigmoid = SimilarityPolymerizer("sigmoid").modality_wise(TEXT, IMAGE)
    assert torch.allclose(sigmoid.flatten(), torch.sigmoid(torch.tensor([3.0, -2.0])))
    scaled = SimilarityPolymerizer("scaled_softmax").modality_wise(TEXT, IMAGE)
    assert torch.isclose(scaled.sum(), torch.tensor(2.0))        # D * softmax, mean 1


def test_softmax_over_all_elements_of_chunk_tokens():
    text, image = torch.ones(1, 2, 3), torch.ones(1, 2, 3)
    p_m = SimilarityPolymerizer().modality_wise(text, image)
    assert torch.allclose(p_m, torch.full((1, 2, 3), 1 / 6))


def test_element_wise_eqs_2_4_5():
    p_e = SimilarityPolymerizer.element_wise(TEXT, IMAGE)
    s_t = torch.tensor([[3.0, -1.0], [6.0, -2.0]])               # eq 2: F_text F_image^T
    assert torch.allclose(p_e[0], torch.softmax(s_t, dim=1))     # eqs 4-5: row-wise
    assert torch.allclose(p_e.sum(-1), torch.ones(1, 2))
    out = SimilarityPolymerizer()(TEXT, IMAGE)
    assert torch.allclose(out["p_e_image"][0], torch.softmax(s_t.T, dim=1))


def test_clipped_softmax_and_temperature():
    s_m = torch.tensor([3.0, -2.0])
    clipped = SimilarityPolymerizer("clipped_softmax").modality_wise(TEXT, IMAGE).flatten()
    assert torch.allclose(clipped, (2 * torch.softmax(s_m, 0)).clamp(max=1.0))
    assert clipped.max() <= 1.0
    warm = SimilarityPolymerizer("softmax", temperature=4.0).modality_wise(TEXT, IMAGE).flatten()
    assert torch.allclose(warm, torch.softmax(s_m / 4.0, 0))
