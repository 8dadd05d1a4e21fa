"""Chinese-CLIP (Yang et al. 2022) through Hugging Face `transformers`, the paper's backbone.

Loads a `transformers` checkpoint from a local folder or a hub id (the paper's is
``OFA-Sys/chinese-clip-vit-huge-patch14``), or an official release file of the ``cn_clip``
code (``clip_cn_vit-h-14.pt``), converted once (`sgmft.encoders.chinese_clip_convert`). Text:
BERT tokenizer, context length 52, the [CLS] state through the bias-free text projection.
Image: bicubic resize straight to the square input size, CLIP mean/std, the vision pooler
through the visual projection. Both equal the official code's ``encode_text`` and
``encode_image`` (tests/encoders/test_chinese_clip_official.py).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from sgmft.data.images import ImagePreprocess
from sgmft.encoders.base import Encoder, FeatureDims
from sgmft.encoders.chinese_clip_convert import converted_folder, is_official_checkpoint

PAPER_CHECKPOINT = "OFA-Sys/chinese-clip-vit-huge-patch14"
CONTEXT_LENGTH = 52


def _pooled(output: Any) -> torch.Tensor:
    """`get_*_features` returns a tensor (transformers 4) or an output with the projection (5)."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output


def _image_preprocess(source: str, image_size: int) -> ImagePreprocess:
    """The checkpoint's mean/std from ``preprocessor_config.json`` when it is a local folder."""
    defaults = ImagePreprocess(size=image_size)
    config_file = Path(source) / "preprocessor_config.json"
    if not config_file.is_file():
        return defaults
    config = json.loads(config_file.read_text())
    return ImagePreprocess(
        size=image_size,
        resample="bicubic",
        mean=tuple(config.get("image_mean", defaults.mean)),
        std=tuple(config.get("image_std", defaults.std)),
    )


def local_source(checkpoint: str) -> str:
    """What `transformers` loads: the checkpoint itself (a folder or hub id), or the converted
    folder of an official release file."""
    return str(converted_folder(checkpoint)) if is_official_checkpoint(checkpoint) else checkpoint


def image_preprocess_of(checkpoint: str) -> ImagePreprocess:
    """A checkpoint's image preprocessing from its configuration alone (no weights)."""
    from transformers import ChineseCLIPConfig

    source = local_source(checkpoint)
    local = Path(source).is_dir()
    config = ChineseCLIPConfig.from_pretrained(source, local_files_only=local)
    return _image_preprocess(source, config.vision_config.image_size)


class ChineseCLIPEncoder(Encoder):
    """Frozen Chinese-CLIP: texts and images to the shared projected space (N, projection_dim)."""

    name = "chinese-clip"

    def __init__(
        self,
        checkpoint: str = PAPER_CHECKPOINT,
        device: str = "cpu",
        dtype: str = "float32",
        local_files_only: bool | None = None,
        context_length: int = CONTEXT_LENGTH,
    ):
        from transformers import BertTokenizer, ChineseCLIPModel

        # BertTokenizer, not the fast one: BertTokenizerFast(vocab_file=...) silently built a
        # 5-token vocabulary in transformers 5 (BACKBONES.md).
        source = local_source(checkpoint)
        local = Path(source).is_dir() if local_files_only is None else local_files_only
        self.checkpoint = checkpoint
        self.device = torch.device(device)
        self.dtype = getattr(torch, dtype)
        self.context_length = context_length
        self.tokenizer = BertTokenizer.from_pretrained(source, local_files_only=local)
        self.model = ChineseCLIPModel.from_pretrained(
            source, local_files_only=local, dtype=self.dtype
        ).to(self.device).eval()
        self.preprocess = _image_preprocess(source, self.model.config.vision_config.image_size)

    @property
    def dim(self) -> FeatureDims:
        width = self.model.config.projection_dim
        return FeatureDims(width, width)

    @property
    def shared_space(self) -> bool:
        return True

    @property
    def image_preprocess(self) -> ImagePreprocess:
        return self.preprocess

    def _tokenize(self, texts: list[str]):
        return self.tokenizer(list(texts), padding="max_length", truncation=True,
                              max_length=self.context_length, return_tensors="pt").to(self.device)

    def _pixels(self, images: list[Image.Image]) -> torch.Tensor:
        return torch.from_numpy(self.preprocess.batch(images)).to(self.device, self.dtype)

    @torch.inference_mode()
    def encode_texts(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim.text), np.float32)
        return _pooled(self.model.get_text_features(**self._tokenize(texts))).float().cpu().numpy()

    @torch.inference_mode()
    def encode_images(self, images: list[Image.Image]) -> np.ndarray:
        if not images:
            return np.zeros((0, self.dim.image), np.float32)
        pooled = self.model.get_image_features(pixel_values=self._pixels(images))
        return _pooled(pooled).float().cpu().numpy()

    @torch.inference_mode()
    def encode_texts_with_tokens(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Pooled (N, D) and every token state through the text projection (N, 52, D), so
        every post has the same length; padding positions are zeros (what a padded position
        computes is an artefact of the attention code: the official and the `transformers`
        BERT differ there, and only there)."""
        encoded = self._tokenize(texts)
        states = self.model.text_model(**encoded).last_hidden_state
        tokens = self.model.text_projection(states) * encoded["attention_mask"][..., None].to(states.dtype)
        tokens = tokens.float().cpu().numpy()
        return tokens[:, 0].copy(), tokens

    @torch.inference_mode()
    def encode_images_with_tokens(self, images: list[Image.Image]) -> tuple[np.ndarray, np.ndarray]:
        """Pooled (N, D) and [CLS] + patch states, post-LayerNorm, through the visual
        projection (N, 1 + patches, D)."""
        vision = self.model.vision_model
        states = vision(pixel_values=self._pixels(images)).last_hidden_state
        tokens = self.model.visual_projection(vision.post_layernorm(states)).float().cpu().numpy()
        return tokens[:, 0].copy(), tokens

    def config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "checkpoint": self.checkpoint,
            "projection_dim": self.dim.text,
            "dtype": str(self.dtype).removeprefix("torch."),
            "context_length": self.context_length,
            "padding_states": "zeros",
            "preprocess": self.preprocess.__dict__,
        }
