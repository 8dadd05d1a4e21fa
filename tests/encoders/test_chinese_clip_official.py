"""sgmft's Chinese-CLIP equals the official implementation: identical random weights built by the
official ``cn_clip`` code (ViT-B/16 with RBT3), saved as an official release file, loaded by
sgmft through `transformers`; tokens, text and image features, and token sequences compared
with ``cn_clip``'s own ``tokenize``, ``encode_text`` and ``encode_image``. The official code
runs without torchvision (only its image transform needs it; that transform is a bicubic
resize to 224x224 and the CLIP mean/std, done here with PIL as torchvision does for a PIL
image). "Equal" is within 1e-4 of the largest value, in fp32."""

import json
import random
import sys
import types
from importlib import util

import numpy as np
import pytest
import torch
from PIL import Image

pytestmark = pytest.mark.skipif(util.find_spec("cn_clip") is None,
                                reason="cn-clip is not installed (scripts/setup.sh installs it)")
#: relative tolerance: |sgmft - official| <= TOLERANCE * max |official|
TOLERANCE = 1e-4
MEAN = np.array([0.48145466, 0.4578275, 0.40821073], np.float32)
STD = np.array([0.26862954, 0.26130258, 0.27577711], np.float32)


def import_official():
    """The official ``cn_clip.clip`` package, imported without torchvision: its image transforms
    (unused here) get placeholders while it imports, and the placeholders leave at once (so no
    other library takes them for torchvision)."""
    placeholders = {}
    if util.find_spec("torchvision") is None:
        transforms = types.ModuleType("torchvision.transforms")
        for name in ("Compose", "ToTensor", "Normalize", "Resize", "InterpolationMode"):
            setattr(transforms, name, type(name, (), {}))
        placeholders = {"torchvision": types.ModuleType("torchvision"), "torchvision.transforms": transforms}
    sys.modules.update(placeholders)
    try:
        import cn_clip.clip as clip
        from cn_clip.clip.model import CLIP
    finally:
        for name in placeholders:
            sys.modules.pop(name, None)
    return clip, CLIP


@pytest.fixture(scope="module")
def official():
    return import_official()


def config_of(name: str) -> dict:
    root = util.find_spec("cn_clip").submodule_search_locations[0]
    with open(f"{root}/clip/model_configs/{name}.json", encoding="utf-8") as handle:
        return json.load(handle)


@pytest.fixture(scope="module")
def reference(official, tmp_path_factory):
    """The official ViT-B/16 + RBT3 model with seeded random weights, and its release file."""
    _, clip_class = official
    torch.manual_seed(0)
    model = clip_class(**config_of("ViT-B-16"), **config_of("RBT3-chinese")).eval()
    with torch.no_grad():           # LayerNorms and projections away from their neutral starts
        for name, parameter in model.named_parameters():
            if "ln" in name or "LayerNorm" in name or name in ("text_projection", "visual.proj"):
                parameter.add_(torch.randn_like(parameter) * 0.05)
    folder = tmp_path_factory.mktemp("official")
    path = folder / "clip_cn_vit-b-16.pt"
    state = {f"module.{k}": v for k, v in model.state_dict().items()}
    torch.save({"epoch": 1, "name": "test", "state_dict": state}, path)
    half = folder / "clip_cn_vit-b-16-fp16.pt"
    torch.save({"state_dict": {f"module.{k}": v.half() for k, v in model.state_dict().items()}}, half)
    return model, path, half


@pytest.fixture(scope="module")
def ours(reference, tmp_path_factory):
    from sgmft.encoders.chinese_clip import ChineseCLIPEncoder

    with pytest.MonkeyPatch.context() as patch:    # the variable as it was afterwards, set or not
        patch.setenv("SGMFT_CACHE", str(tmp_path_factory.mktemp("sgmft-cache")))
        yield ChineseCLIPEncoder(checkpoint=str(reference[1]))


FRAGMENTS = ["今天在公司加班到很晚", "周末和朋友去吃火锅", "😂😂", "🔥好吃🔥", "ＡＢＣ１２３", "，！？：；",
             "臺灣的風景真美", "說話要算數", "這麼晚了還在學校", "Hello World", "iPhone 15 Pro Max",
             "http://t.cn/A6abcd12", "https://weibo.com/u/123?from=feed", "@小王同学", "#日常#", "[哈哈]",
             "[泪]", "//@路人甲:同感", "在健身房跑了5公里", "看了场电影", "ＯＫ", "café naïve", "１０月１日",
             "东京タワー", "서울", "\u3000全角空格\u3000", "a" * 30, "超长" * 40, "e-mail: a.b@c.com",
             "100%", "#话题#真的吗", "～～～", "🇨🇳", "👨‍👩‍👧", "Ω≈ç√∫", "123456789012345678901234567890"]


def weibo_texts(count: int = 1200, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    texts = list(FRAGMENTS)
    while len(texts) < count:
        texts.append(" ".join(rng.choice(FRAGMENTS) for _ in range(rng.randint(1, 6))))
    return texts


def close(ours_value: np.ndarray, official_value: np.ndarray) -> float:
    """The largest difference relative to the largest official value."""
    return float(np.abs(ours_value - official_value).max() / np.abs(official_value).max())


def test_token_ids_equal_the_official_tokenizer(official, ours):
    clip, _ = official
    texts = weibo_texts()
    assert any(len(t) > 60 for t in texts) and len(texts) >= 1000
    expected = clip.tokenize(texts, context_length=52)
    got = ours._tokenize(texts)["input_ids"]
    mismatched = [t for t, a, b in zip(texts, got, expected, strict=True) if not torch.equal(a, b)]
    assert mismatched == []
    assert ours.tokenizer.vocab_size == 21128


def test_text_features_and_token_states_equal_the_official_model(official, ours, reference):
    clip, _ = official
    model = reference[0]
    texts = weibo_texts(64, seed=1)
    tokens = clip.tokenize(texts, context_length=52)
    with torch.no_grad():
        expected = model.encode_text(tokens).numpy()
        mask = tokens.ne(0).float()
        states = (model.bert(tokens, attention_mask=mask)[0] @ model.text_projection).numpy()
    assert close(ours.encode_texts(texts), expected) <= TOLERANCE
    pooled, token_states = ours.encode_texts_with_tokens(texts)
    real = mask.bool().numpy()           # a padded position's state is an artefact of attention code
    assert close(pooled, expected) <= TOLERANCE and close(token_states[real], states[real]) <= TOLERANCE
    assert not token_states[~real].any() and (~real).any()     # sgmft stores zeros there


def pixels(images: list[Image.Image]) -> torch.Tensor:
    """cn_clip's transform for PIL images: bicubic resize to 224x224, RGB, CLIP mean and std."""
    arrays = [(np.asarray(im.convert("RGB").resize((224, 224), Image.Resampling.BICUBIC), np.float32) / 255
               - MEAN) / STD for im in images]
    return torch.from_numpy(np.stack(arrays).transpose(0, 3, 1, 2).copy())


def photos() -> list[Image.Image]:
    skimage = pytest.importorskip("skimage.data")
    return [Image.fromarray(getattr(skimage, name)()).convert("RGB")
            for name in ("astronaut", "coffee", "chelsea", "rocket", "camera")]


def test_image_features_and_patch_states_equal_the_official_model(ours, reference):
    model = reference[0]
    images = photos()
    x = pixels(images)
    with torch.no_grad():
        expected = model.encode_image(x).numpy()
        visual = model.visual
        h = visual.conv1(x).flatten(2).permute(0, 2, 1)
        h = torch.cat([visual.class_embedding + torch.zeros(len(h), 1, h.shape[-1]), h], dim=1)
        h = visual.ln_pre(h + visual.positional_embedding)
        h = visual.transformer(h.permute(1, 0, 2)).permute(1, 0, 2)
        states = (visual.ln_post(h) @ visual.proj).numpy()
    assert close(ours.encode_images(images), expected) <= TOLERANCE
    pooled, patch_states = ours.encode_images_with_tokens(images)
    assert patch_states.shape == (5, 197, 512)
    assert close(pooled, expected) <= TOLERANCE and close(patch_states, states) <= TOLERANCE


def test_an_fp16_release_loads_into_fp32_and_is_converted_once(official, reference, tmp_path, monkeypatch):
    from sgmft.encoders import chinese_clip_convert
    from sgmft.encoders.chinese_clip import ChineseCLIPEncoder

    monkeypatch.setenv("SGMFT_CACHE", str(tmp_path))
    clip, clip_class = official
    torch.manual_seed(0)
    rounded = clip_class(**config_of("ViT-B-16"), **config_of("RBT3-chinese")).eval()
    rounded.load_state_dict({k: v.half().float() for k, v in reference[0].state_dict().items()})
    encoder = ChineseCLIPEncoder(checkpoint=str(reference[2]), dtype="float32")
    assert encoder.model.dtype == torch.float32
    texts = weibo_texts(16, seed=2)
    with torch.no_grad():
        expected = rounded.encode_text(clip.tokenize(texts, context_length=52)).numpy()
    assert close(encoder.encode_texts(texts), expected) <= TOLERANCE
    folders = list((tmp_path / "chinese-clip").glob("*/model.safetensors"))
    assert len(folders) == 1 and not list((tmp_path / "chinese-clip").glob(".*.tmp"))
    calls = []
    monkeypatch.setattr(chinese_clip_convert, "read_state_dict", lambda path: calls.append(path))
    ChineseCLIPEncoder(checkpoint=str(reference[2]))          # the cached conversion: nothing read
    assert calls == []


def test_the_architecture_is_read_from_the_weights_and_foreign_files_are_refused(reference, tmp_path):
    from sgmft.encoders.chinese_clip_convert import infer_config, read_state_dict

    state = read_state_dict(reference[1])
    config = infer_config(state)
    assert (config.vision_config.hidden_size, config.vision_config.num_hidden_layers,
            config.vision_config.patch_size, config.vision_config.image_size) == (768, 12, 16, 224)
    assert (config.text_config.hidden_size, config.text_config.num_hidden_layers,
            config.text_config.num_attention_heads, config.projection_dim) == (768, 3, 12, 512)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a readable PyTorch checkpoint"):
        read_state_dict(tmp_path / "junk.pt")
    torch.save({"state_dict": {"visual.layer1.0.conv1.weight": torch.zeros(1)}}, tmp_path / "rn50.pt")
    with pytest.raises(ValueError, match="ResNet-50"):
        infer_config(read_state_dict(tmp_path / "rn50.pt"))


def test_a_checkpoint_missing_a_weight_is_refused_and_a_stale_conversion_redone(reference, tmp_path):
    from sgmft.encoders.chinese_clip_convert import FORMAT, converted_folder

    state = torch.load(reference[1], weights_only=True)["state_dict"]
    dropped = next(k for k in state if "text_projection" in k)
    torch.save({"state_dict": {k: v for k, v in state.items() if k != dropped}}, tmp_path / "cut.pt")
    with pytest.raises(ValueError, match="missing text_projection"):
        converted_folder(tmp_path / "cut.pt", tmp_path / "cache")
    folder = converted_folder(reference[1], tmp_path / "cache")
    done = json.loads((folder / "done.json").read_text())
    assert done["format"] == FORMAT
    (folder / "done.json").write_text(json.dumps({**done, "format": FORMAT - 1}))   # an older layout
    written = (folder / "model.safetensors").stat().st_mtime_ns
    assert converted_folder(reference[1], tmp_path / "cache") == folder
    assert (folder / "model.safetensors").stat().st_mtime_ns != written           # converted again
    assert json.loads((folder / "done.json").read_text())["format"] == FORMAT
