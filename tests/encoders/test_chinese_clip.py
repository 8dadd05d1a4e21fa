"""Chinese-CLIP through transformers, with a tiny random checkpoint saved to a temp folder:
the same loading and encoding code path a real checkpoint takes."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from sgmft.encoders import create_encoder

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *"今天在公司加班很晚去健身房锻炼了", "hello"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from transformers import ChineseCLIPConfig, ChineseCLIPModel

    folder = tmp_path_factory.mktemp("tiny-chinese-clip")
    (folder / "vocab.txt").write_text("\n".join(VOCAB) + "\n", encoding="utf-8")
    (folder / "preprocessor_config.json").write_text(json.dumps(
        {"image_mean": [0.48145466, 0.4578275, 0.40821073],
         "image_std": [0.26862954, 0.26130258, 0.27577711]}))
    torch.manual_seed(0)
    config = ChineseCLIPConfig(
        text_config={"vocab_size": len(VOCAB), "hidden_size": 32, "num_hidden_layers": 2,
                     "num_attention_heads": 4, "intermediate_size": 64,
                     "max_position_embeddings": 64},
        vision_config={"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
                       "intermediate_size": 64, "image_size": 32, "patch_size": 8},
        projection_dim=16,
    )
    ChineseCLIPModel(config).save_pretrained(folder)
    return folder


def test_loads_from_local_folder_and_encodes(checkpoint):
    encoder = create_encoder("chinese-clip", checkpoint=str(checkpoint))
    assert encoder.dim == (16, 16) and encoder.shared_space
    assert encoder.preprocess.size == 32 and encoder.preprocess.resample == "bicubic"
    assert encoder.tokenizer.tokenize("今天在公司加班") == list("今天在公司加班")
    texts = encoder.encode_texts(["今天在公司加班", "去健身房锻炼了", "hello"])
    images = encoder.encode_images([Image.new("RGB", (50, 40), (255, 0, 0)),
                                    Image.new("RGB", (20, 90), (0, 0, 255))])
    assert texts.shape == (3, 16) and images.shape == (2, 16)
    assert not np.allclose(texts[0], texts[1]) and not np.allclose(images[0], images[1])


def test_features_equal_the_models_own_projection(checkpoint):
    """[CLS] state through the text projection, vision pooler through the visual projection."""
    encoder = create_encoder("chinese-clip", checkpoint=str(checkpoint))
    model = encoder.model
    tokens = encoder.tokenizer(["今天在公司加班"], padding="max_length", max_length=52,
                               return_tensors="pt")
    assert tokens["input_ids"].shape == (1, 52)
    with torch.no_grad():
        cls_state = model.text_model(**tokens).last_hidden_state[:, 0]
        expected = model.text_projection(cls_state)
    np.testing.assert_allclose(encoder.encode_texts(["今天在公司加班"]), expected.numpy(), atol=1e-5)
    pixels = torch.from_numpy(encoder.preprocess.batch([Image.new("RGB", (32, 32), (9, 99, 199))]))
    with torch.no_grad():
        expected_image = model.visual_projection(model.vision_model(pixel_values=pixels).pooler_output)
    np.testing.assert_allclose(encoder.encode_images([Image.new("RGB", (32, 32), (9, 99, 199))]),
                               expected_image.numpy(), atol=1e-5)


def test_token_states_in_the_projected_space(checkpoint):
    encoder = create_encoder("chinese-clip", checkpoint=str(checkpoint))
    texts = ["今天在公司加班", "hello"]
    pooled, tokens = encoder.encode_texts_with_tokens(texts)
    assert tokens.shape == (2, 52, 16)
    np.testing.assert_allclose(pooled, encoder.encode_texts(texts), atol=1e-5)
    images = [Image.new("RGB", (40, 40), (0, 128, 255))]
    pooled, patches = encoder.encode_images_with_tokens(images)
    assert patches.shape == (1, 1 + 16, 16)   # [CLS] + (32 / 8)^2 patches
    np.testing.assert_allclose(pooled, encoder.encode_images(images), atol=1e-5)


def test_unknown_encoder_name():
    with pytest.raises(KeyError, match="unknown encoder 'nope'"):
        create_encoder("nope")
