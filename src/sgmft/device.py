"""Where and in which arithmetic a model runs: devices checked before any work, and the
``auto`` precision (bf16 where the hardware computes it natively, fp32 elsewhere)."""

from __future__ import annotations

import torch

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def check_device(device: str) -> str:
    """``device`` if this machine has it; ValueError in words otherwise (a typo, or CUDA asked
    for where there is none)."""
    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError):
        raise ValueError(f"--device {device!r}: expected cpu, cuda or cuda:N") from None
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {device}: no CUDA device is available here (torch "
                             f"{torch.__version__}, torch.cuda.is_available() is False)")
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            count = torch.cuda.device_count()
            raise ValueError(f"--device {device}: this machine has {count} CUDA device(s)")
    elif parsed.type != "cpu":
        raise ValueError(f"--device {device!r}: expected cpu, cuda or cuda:N")
    return device


def native_cpu_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX tiles), as torch reports it."""
    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def resolve_precision(precision: str, device: str = "cpu") -> str:
    """``auto`` -> bf16 where ``device`` computes it natively (a CPU with AVX512-BF16 or AMX, a
    CUDA device with bf16 support), else fp32; any other value is returned as it is."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r}; expected one of {', '.join(PRECISIONS)}")
    if precision != "auto":
        return precision
    if torch.device(device).type == "cuda":
        return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if native_cpu_bf16() else "fp32"
