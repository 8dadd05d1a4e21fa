"""Named model variants: every row of the paper's Tables 1-4 as configuration overrides."""

from __future__ import annotations

from typing import Any

#: variant name -> ModelConfig overrides (on top of the run's model config).
VARIANTS: dict[str, dict[str, Any]] = {
    "sg-mft": {},
    # Table 2: module ablation
    "baseline": {"text_input": "word_mean", "sim": False, "fusion": "concat"},
    "encoder": {"sim": False, "fusion": "concat"},
    "encoder+sfm": {"sim": False, "fusion": "sfm"},
    "encoder+sim": {"sim": True, "fusion": "concat"},
    # Table 3: fusion module after SIM
    "sim+asymmetric": {"fusion": "asymmetric"},
    "sim+merge": {"fusion": "merge"},
    "sim+coattention": {"fusion": "coattention"},
    # Table 4: where the similarity-aware FFN sits
    "sff-image": {"sff_side": "image"},
    # Table 1: compared methods on the same features
    "mplug": {"sim": False, "fusion": "asymmetric"},
    "unis-mmc": {"sim": False, "fusion": "concat", "head": "unis-mmc"},
    "bridgetower": {"sim": False, "fusion": "bridge"},
    "balance-mla": {"sim": False, "fusion": "coattention", "head": "balance-mla"},
    "fusion-cnn": {"text_input": "textcnn", "sim": False, "fusion": "concat"},
}

#: table -> [(row label, variant)], in the paper's row order.
TABLES: dict[str, list[tuple[str, str]]] = {
    "Table 1: comparison with existing methods": [
        ("mPLUG", "mplug"), ("UniS-MMC", "unis-mmc"), ("BridgeTower", "bridgetower"),
        ("BalanceMLA", "balance-mla"), ("feature-level fusion CNNs", "fusion-cnn"),
        ("Ours (SG-MFT)", "sg-mft"),
    ],
    "Table 2: module ablation": [
        ("Baseline", "baseline"), ("Baseline + encoder", "encoder"),
        ("Baseline + encoder + SFM", "encoder+sfm"), ("Baseline + encoder + SIM", "encoder+sim"),
        ("Baseline + encoder + SIM + SFM", "sg-mft"),
    ],
    "Table 3: fusion module": [
        ("Asymmetric Co-Attention", "sim+asymmetric"), ("Merge-Attention", "sim+merge"),
        ("Co-Attention", "sim+coattention"), ("Ours (SFM)", "sg-mft"),
    ],
    "Table 4: similarity-aware feed-forward block": [
        ("Image-wise", "sff-image"), ("Text-wise (ours)", "sg-mft"),
    ],
}

#: the paper's figures: t-SNE of M_fuse for these variants.
FIGURES: dict[str, list[str]] = {
    "figure5_module_ablation": ["baseline", "encoder", "encoder+sfm", "encoder+sim", "sg-mft"],
    "figure7_fusion_modules": ["sim+asymmetric", "sim+merge", "sim+coattention", "sg-mft"],
    "figure8_sff_side": ["sff-image", "sg-mft"],
}


def variant_overrides(name: str) -> dict[str, Any]:
    if name not in VARIANTS:
        raise KeyError(f"unknown variant {name!r}; available: {', '.join(VARIANTS)}")
    return dict(VARIANTS[name])
