"""Frozen encoders behind one interface, chosen by name: ``create_encoder("e5+effnet")``.

- ``chinese-clip``: the paper's backbone, from a local folder or the hub (``checkpoint=``).
- ``use+effnet``: multilingual Universal Sentence Encoder text + EfficientNet-Lite0 image
  (the offline default: more accurate than e5 on real data, see README).
- ``e5+effnet``: multilingual-e5-small text + EfficientNet-Lite0 image.
"""

from __future__ import annotations

from sgmft.encoders.base import (
    Encoder,
    FeatureDims,
    PairEncoder,
    available_encoders,
    create_encoder,
    register_encoder,
)

#: The encoder `sgmft extract` uses when none is named (chosen by accuracy, see README).
DEFAULT_ENCODER = "use+effnet"


@register_encoder("chinese-clip")
def _chinese_clip(**kwargs) -> Encoder:
    from sgmft.encoders.chinese_clip import ChineseCLIPEncoder

    return ChineseCLIPEncoder(**kwargs)


@register_encoder("e5+effnet")
def _e5_effnet(device: str = "cpu") -> Encoder:
    from sgmft.encoders.efficientnet_lite import EfficientNetLite0Encoder
    from sgmft.encoders.text_encoders import E5Small

    return PairEncoder("e5+effnet", E5Small(), EfficientNetLite0Encoder(device))


@register_encoder("use+effnet")
def _use_effnet(device: str = "cpu") -> Encoder:
    from sgmft.encoders.efficientnet_lite import EfficientNetLite0Encoder
    from sgmft.encoders.text_encoders import MultilingualUSE

    return PairEncoder("use+effnet", MultilingualUSE(), EfficientNetLite0Encoder(device))


__all__ = [
    "DEFAULT_ENCODER",
    "Encoder",
    "FeatureDims",
    "PairEncoder",
    "available_encoders",
    "create_encoder",
    "register_encoder",
]
