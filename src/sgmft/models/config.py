"""The model configuration: one flat dataclass, so any field can be set with ``--set key=value``.

Every choice the paper leaves open is a field here; ``docs/model.md`` gives the reasons for the
defaults, next to the equation each belongs to.
"""

from __future__ import annotations

from dataclasses import dataclass

#: width D the encoders' features are projected to when they do not share one space
DEFAULT_PROJECTION = 256


@dataclass
class ModelConfig:
    # inputs ("encoders" side of the wrapper)
    text_input: str = "features"      # features | word_mean (Table 2 Baseline) | textcnn (Meng et al.)
    dim: int | None = None            # common width D; None: keep a shared space's D, else 256
    reading: str = "elements"         # elements (n = D, w = 1) | chunks (k tokens of D / k)
                                      # | sequence (encoder token states, width D, length below)
    chunks: int = 16                  # k for the chunks reading
    seq_length: int = 16              # common length L of both modalities in the sequence reading
    # input regularisation (beyond the paper; docs/model.md "Beyond the paper")
    input_norm: str = "none"          # none | standard: z-score with the training split's statistics
    input_dropout: float = 0.0        # dropout on the frozen features, before the projections
    modality_dropout: float = 0.0     # training: share of posts whose text or image (half each) is
                                      # replaced by its training mean, as if that modality were missing
    positional: bool = False          # learned positions: token embeddings (chunks, sequence) or
                                      # per-head attention-score terms (elements)
    # SIM (section 3.2.1)
    sim: bool = True
    gate: str = "softmax"             # P^m of eq 3: softmax (paper) | sigmoid | scaled_softmax (D * softmax)
                                      # | clipped_softmax (min(D * softmax, 1))
    gate_temperature: float = 1.0     # tau in P^m = gate(S^m / tau)
    ca_query: str = "other"           # eq 9: queries of CA from the other modality (paper) | self
    sff_side: str = "text"            # Table 4: similarity-aware FFN on the text (paper) | image
    heads: int = 8                    # h of section 4.2
    head_dim: int = 8                 # width of one head, d_K
    ffn_hidden: int = 64              # d_h of eq 15
    # fusion (section 3.2.2, Table 3) and head (section 3.3, Table 1)
    fusion: str = "sfm"               # sfm | concat | coattention | merge | asymmetric | bridge
    fusion_layers: int = 2            # layers of coattention / asymmetric / bridge fusion
    sfm_residual: bool = False        # SFM: LayerNorm(X + CA(X)) per stream instead of eq 17's bare CA(X)
    head: str = "mlp5"                # mlp5 | unis-mmc | balance-mla
    classifier_hidden: tuple[int, ...] = (512, 256, 128, 64)
    dropout: float = 0.1
    # word-level text inputs
    embed_dim: int = 128
    textcnn_kernels: tuple[int, ...] = (3, 4, 5)
    textcnn_channels: int = 64
    max_tokens: int = 64
    # compared-method extras
    unimodal_loss_weight: float = 1.0   # UniS-MMC and BalanceMLA unimodal cross-entropies
    contrastive_weight: float = 0.1     # UniS-MMC's unimodality-supervised contrastive term
    temperature: float = 0.1            # UniS-MMC contrastive temperature
    # decision-level fallback (beyond the paper)
    fallback: bool = False            # predict a mixture of the fused head and the unimodal probes,
                                      # with weights chosen on the validation part after training
    decision: str = "argmax"          # the label: argmax of the probabilities (the paper; the most
                                      # accurate) | balanced (with per-label offsets chosen out of
                                      # fold for macro-F1, at no cost in accuracy there)
    ensemble: bool = False            # answer with the mean of the refit's and the fold models' fused
                                      # heads (the cross-fit ensemble: the fold models are trained
                                      # anyway; it narrows the spread over seeds on new events)
    calibration: str = "auto"         # the temperature, fitted out of fold: fit (any T) | auto (fit, but
                                      # never sharpen, T >= 1, when the folds could not hold out the
                                      # data's groups) | off (T = 1)

    def __post_init__(self) -> None:
        choices = {
            "text_input": ("features", "word_mean", "textcnn"),
            "reading": ("elements", "chunks", "sequence"),
            "gate": ("softmax", "sigmoid", "scaled_softmax", "clipped_softmax"),
            "input_norm": ("none", "standard"),
            "decision": ("argmax", "balanced"),
            "calibration": ("auto", "fit", "off"),
            "ca_query": ("other", "self"),
            "sff_side": ("text", "image"),
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"model.{name} = {getattr(self, name)!r}; expected one of {allowed}")
        self.classifier_hidden = tuple(self.classifier_hidden)
        self.textcnn_kernels = tuple(self.textcnn_kernels)
        if self.reading == "sequence" and self.text_input != "features":
            raise ValueError("the sequence reading needs encoder features (text_input = features)")
        for name in ("input_dropout", "modality_dropout", "dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"model.{name} = {getattr(self, name)}; expected a value in [0, 1)")
        if self.gate_temperature <= 0:
            raise ValueError(f"model.gate_temperature = {self.gate_temperature}; expected > 0")
        if len(self.classifier_hidden) != 4:
            raise ValueError("the paper's classifier has 5 fully connected layers: give 4 hidden widths")
