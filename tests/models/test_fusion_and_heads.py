import pytest
import torch

from sgmft.models.config import ModelConfig
from sgmft.models.fusion import SimilarityFusion
from sgmft.models.heads import BalanceMLAHead, MultimodalClassifier, UniSMMCHead
from sgmft.models.registry import FUSIONS

CONFIG = ModelConfig(heads=2, head_dim=4, ffn_hidden=8, fusion_layers=1)


@pytest.mark.parametrize("name", sorted(FUSIONS))
@pytest.mark.parametrize("length, width", [(12, 1), (3, 4)])
def test_every_fusion_module_shapes(name, length, width):
    fusion = FUSIONS.get(name)(length, width, CONFIG)
    out = fusion(torch.randn(5, length, width), torch.randn(5, length, width))
    assert out.fused.shape == (5, fusion.fused_dim)
    assert out.text.shape == out.image.shape == (5, fusion.stream_dim)
    assert fusion.fused_dim == (2 if name == "concat" else 1) * length * width


def test_sfm_is_the_sum_of_two_cross_attentions_eq_17():
    torch.manual_seed(0)
    sfm = SimilarityFusion(4, 1, CONFIG)
    text, image = torch.randn(2, 4, 1), torch.randn(2, 4, 1)
    expected = sfm.text_cross(text, image) + sfm.image_cross(image, text)
    assert torch.allclose(sfm(text, image).fused, expected.reshape(2, -1), atol=1e-6)


def test_classifier_has_five_fully_connected_layers():
    classifier = MultimodalClassifier(10, 8, (32, 16, 8, 4), 0.0)
    linears = [m for m in classifier.modules() if isinstance(m, torch.nn.Linear)]
    assert len(linears) == 5 and linears[-1].out_features == 8
    assert classifier(torch.randn(3, 10)).shape == (3, 8)


def test_unis_mmc_contrastive_pairs():
    head = UniSMMCHead(4, 3, 2, ModelConfig(temperature=1.0))
    text = torch.randn(4, 3, requires_grad=True)
    image = torch.randn(4, 3, requires_grad=True)
    no = torch.zeros(4, dtype=torch.bool)
    assert head.contrastive(text, image, no, no).item() == 0.0       # both wrong: no positives
    only_text = torch.tensor([True, True, True, True])
    head.contrastive(text, image, only_text, no).backward()
    assert text.grad is None or torch.count_nonzero(text.grad) == 0   # the right side is the anchor
    assert torch.count_nonzero(image.grad) > 0


def test_balance_mla_outputs_log_probabilities():
    head = BalanceMLAHead(6, 6, 3, CONFIG)
    from sgmft.models.fusion import Fused

    out = head(Fused(torch.randn(4, 6), torch.randn(4, 6), torch.randn(4, 6)))
    assert torch.allclose(out.logits.exp().sum(-1), torch.ones(4), atol=1e-5)
    assert set(out.unimodal) == {"text", "image"}
    assert head.loss(out, torch.tensor([0, 1, 2, 0])).item() > 0


def test_unis_mmc_keeps_learned_projections_under_a_shared_space():
    """Chinese-CLIP features (a shared space, the paper's D = 1024): the concat row keeps them as
    they are, UniS-MMC learns projections (starting as the identity), so its contrastive term
    has something to move and its logits are its own."""
    import torch

    from sgmft.models.config import ModelConfig
    from sgmft.models.model import MultimodalModel
    from sgmft.models.variants import variant_overrides

    def build(variant):
        torch.manual_seed(0)
        config = ModelConfig(**{**variant_overrides(variant), "classifier_hidden": (32, 16, 16, 8)})
        return MultimodalModel(config, 1024, 1024, 3, shared_space=True)

    concat, unis = build("encoder"), build("unis-mmc")
    assert isinstance(concat.inputs.text_proj, torch.nn.Identity)
    projection = unis.inputs.text_proj
    assert isinstance(projection, torch.nn.Linear) and torch.equal(projection.weight, torch.eye(1024))
    torch.manual_seed(1)
    batch = {"text": torch.randn(8, 1024), "image": torch.randn(8, 1024), "label": torch.arange(8) % 3}
    assert not torch.allclose(concat(batch).logits, unis(batch).logits)
    output = unis(batch)
    head = unis.head
    right = torch.ones(8, dtype=torch.bool)
    contrastive = head.contrastive(output.streams["text"], output.streams["image"], right, right)
    contrastive.backward()
    assert projection.weight.grad is not None and projection.weight.grad.abs().sum() > 0
