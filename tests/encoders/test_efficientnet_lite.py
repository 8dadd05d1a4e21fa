import numpy as np
import pytest
import torch
from PIL import Image

from sgmft.encoders.efficientnet_lite import Conv2dSame, EfficientNetLite0, EfficientNetLite0Encoder


def test_same_padding_matches_tensorflow_output_sizes():
    conv = Conv2dSame(1, 1, 3, stride=2, bias=False)
    for size in (224, 225, 7):
        assert conv(torch.zeros(1, 1, size, size)).shape[-1] == -(-size // 2)


def test_same_padding_values_on_a_hand_computed_case():
    conv = Conv2dSame(1, 1, 2, stride=2, bias=False)
    conv.weight.data.fill_(1.0)
    x = torch.arange(9.0).reshape(1, 1, 3, 3)
    # TF SAME for k=2, s=2 on 3 pixels pads 0 before and 1 after.
    expected = torch.tensor([[[[0 + 1 + 3 + 4, 2 + 5], [6 + 7, 8]]]], dtype=torch.float32)
    assert torch.equal(conv(x), expected)


def test_architecture_matches_the_packaged_weights_strictly():
    from sgmft.encoders.efficientnet_lite import load_lite0_weights

    model = load_lite0_weights()
    assert sum(p.numel() for p in model.parameters()) == 4_652_008
    assert model.feature_map(torch.zeros(1, 3, 224, 224)).shape == (1, 1280, 7, 7)
    assert isinstance(EfficientNetLite0(), torch.nn.Module)


@pytest.fixture(scope="module")
def encoder():
    return EfficientNetLite0Encoder()


def test_imagenet_top1_on_real_photos(encoder):
    """scikit-image's photos: an espresso, a cat, a rocket on its launch pad."""
    skdata = pytest.importorskip("skimage.data")
    photos = [Image.fromarray(getattr(skdata, name)()).convert("RGB")
              for name in ("coffee", "chelsea", "rocket")]
    logits = encoder.classify(photos)
    assert logits.argmax(1)[0] == 967                      # espresso
    assert logits.argmax(1)[1] in {281, 282, 285}          # tabby / tiger / Egyptian cat
    assert {657, 744, 812} & set(np.argsort(-logits[2])[:5].tolist())  # missile/projectile/shuttle


def test_pooled_features_shape_and_batch_invariance(encoder):
    images = [Image.new("RGB", (50, 80), (i * 40, 100, 200 - i * 30)) for i in range(6)]
    features = encoder.encode(images)
    assert features.shape == (6, 1280) and features.dtype == np.float32
    np.testing.assert_allclose(encoder.encode(images[2:3])[0], features[2], rtol=1e-4, atol=1e-5)
    assert encoder.encode([]).shape == (0, 1280)


def test_patch_tokens_are_the_feature_map(encoder):
    images = [Image.new("RGB", (64, 48), (10 * i, 200, 90)) for i in range(3)]
    pooled, tokens = encoder.encode_with_tokens(images)
    assert tokens.shape == (3, 49, 1280)
    np.testing.assert_allclose(pooled, encoder.encode(images), atol=1e-4)
    np.testing.assert_allclose(tokens.mean(axis=1), pooled, atol=1e-5)


#: bf16 image features must stay this close to fp32 (cosine similarity per image) for
#: `--precision bf16` to be offered; measured 0.9989-0.9997 on these photos, at least 0.9945 on
#: the demo set's rendered images (benchmarks/scale.py)
BF16_COSINE = 0.99


def test_bf16_features_stay_within_the_stated_tolerance_of_fp32(encoder):
    skdata = pytest.importorskip("skimage.data")
    photos = [Image.fromarray(getattr(skdata, name)()).convert("RGB")
              for name in ("coffee", "chelsea", "rocket", "astronaut", "camera")]
    exact, low = encoder.encode(photos), EfficientNetLite0Encoder(precision="bf16").encode(photos)
    assert low.dtype == np.float32                          # features are stored as float32 anyway
    cosine = (exact * low).sum(1) / np.linalg.norm(exact, axis=1) / np.linalg.norm(low, axis=1)
    assert cosine.min() >= BF16_COSINE and cosine.max() < 1.0   # close, and really computed in bf16
    with pytest.raises(ValueError, match="CUDA"):
        EfficientNetLite0Encoder(precision="fp16")


def test_bf16_on_a_cpu_without_native_bf16_warns(monkeypatch, caplog):
    import sgmft.encoders.efficientnet_lite as module

    for native, warned in ((False, True), (True, False)):
        caplog.clear()
        monkeypatch.setattr(module, "native_cpu_bf16", lambda native=native: native)
        EfficientNetLite0Encoder(precision="bf16")
        assert ("emulated" in caplog.text) is warned
