"""Frozen encoders behind one interface, chosen by name: ``create_encoder("e5+effnet")``.

- ``chinese-clip``: the paper's backbone, from a local folder or the hub (``checkpoint=``).
- ``use+effnet``: multilingual Universal Sentence Encoder text + EfficientNet-Lite0 image
  (the offline default: more accurate than e5 on real data, see README).
- ``e5+effnet``: multilingual-e5-small text + EfficientNet-Lite0 image.
"""

from __future__ import annotations

from sgmft.data.images import ImagePreprocess
from sgmft.encoders.base import (
    ENCODERS,
    Encoder,
    FeatureDims,
    PairEncoder,
    available_encoders,
    create_encoder,
    register_encoder,
)

#: The encoder `sgmft extract` uses when none is named (chosen by accuracy, see README).
DEFAULT_ENCODER = "use+effnet"


def image_preprocess_for(name: str, checkpoint: str | None = None) -> ImagePreprocess:
    """How encoder ``name`` resizes and normalises images, read without loading its weights
    (Ray's decoding tasks resize exactly as the encoder would)."""
    if name == "chinese-clip":
        from sgmft.encoders.chinese_clip import PAPER_CHECKPOINT, image_preprocess_of

        return image_preprocess_of(checkpoint or PAPER_CHECKPOINT)
    ENCODERS.get(name)   # an unknown name: the registry's error, listing what is available
    if name.endswith("+effnet"):
        from sgmft.encoders.efficientnet_lite import EfficientNetLite0Encoder

        return EfficientNetLite0Encoder.preprocess
    raise KeyError(f"no image preprocessing is known for encoder {name!r}")


@register_encoder("chinese-clip")
def _chinese_clip(precision: str = "fp32", **kwargs) -> Encoder:
    from sgmft.encoders.chinese_clip import ChineseCLIPEncoder

    dtype = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}[precision]
    return ChineseCLIPEncoder(dtype=dtype, **kwargs)


@register_encoder("e5+effnet")
def _e5_effnet(device: str = "cpu", precision: str = "fp32") -> Encoder:
    from sgmft.encoders.efficientnet_lite import EfficientNetLite0Encoder
    from sgmft.encoders.text_encoders import E5Small

    return PairEncoder("e5+effnet", E5Small(), EfficientNetLite0Encoder(device, precision=precision))


@register_encoder("use+effnet")
def _use_effnet(device: str = "cpu", precision: str = "fp32") -> Encoder:
    from sgmft.encoders.efficientnet_lite import EfficientNetLite0Encoder
    from sgmft.encoders.text_encoders import MultilingualUSE

    return PairEncoder("use+effnet", MultilingualUSE(), EfficientNetLite0Encoder(device, precision=precision))


__all__ = [
    "DEFAULT_ENCODER",
    "Encoder",
    "FeatureDims",
    "PairEncoder",
    "available_encoders",
    "create_encoder",
    "register_encoder",
]
