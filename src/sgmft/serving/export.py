"""`sgmft export RUN --onnx FILE`: the SG-Encoder and classifier as ONNX, checked against PyTorch.

The exported graph takes the frozen encoders' features (so a deployment runs the head without
PyTorch): the model's `input_names`, i.e. ``text`` (B, D_text) and ``image`` (B, D_image)
float32, plus ``tokens`` (B, T) int64 for word-level variants, or ``text_tokens`` and
``image_tokens`` (B, L, D) float32 for the sequence reading; and ``present`` (B, 2) float32,
1 where a post has its text (column 0) and its image (column 1), 0 where it has none: a missing
modality's features are replaced by their training mean in the graph (pass anything, zeros say),
and the fallback mixture gives its probe's weight to the other one, as `sgmft predict` does;
outputs ``probabilities`` (B, C;
calibrated: the run's temperature is in the graph), ``logits`` (B, C), ``fused`` (M_fuse, B, F),
``text_only`` and ``image_only`` (B, C), the unimodal probes' probabilities, ``best_guess`` (B,)
int64, the decided label's index (with the run's decision offsets), and ``label`` (B,) int64, the
same index or -1 for "unsure" by the rule of `sgmft predict` and `evaluate`
(`MultimodalModel.answer`: less than the run's ``min_gain`` above the label's training share).
The novelty flags (a post unlike the training posts is unsure too) need the run's nearest-neighbour
index and are not in the graph.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from sgmft.io import atomic_write
from sgmft.models.model import MultimodalModel
from sgmft.training.rundir import LoadedRun, load_run


class ExportHead(nn.Module):
    """The model as a function of plain tensors: (text or tokens, image) -> outputs."""

    def __init__(self, model: MultimodalModel):
        super().__init__()
        self.model = model

    def forward(self, *inputs: torch.Tensor):
        *features, present = inputs
        keep = present > 0.5                                                       # (B, 2)
        batch = dict(zip(self.model.input_names, features, strict=True))
        for column, name in enumerate(("text", "image")):
            has = keep[:, column]
            if name in batch:
                mean = getattr(self.model.probes, f"{name}_mean")
                batch[name] = torch.where(has[:, None], batch[name], mean.expand_as(batch[name]))
            if f"{name}_tokens" in batch:
                mean = getattr(self.model.inputs, f"{name}_stats").mean
                states = batch[f"{name}_tokens"]
                batch[f"{name}_tokens"] = torch.where(has[:, None, None], states, mean.expand_as(states))
        if "tokens" in batch:
            batch["tokens"] = torch.where(keep[:, :1], batch["tokens"], torch.zeros_like(batch["tokens"]))
        out = self.model({**batch, "present": keep})
        return (torch.softmax(out.logits, dim=-1), out.logits, out.fused,
                torch.softmax(out.probes["text"], -1), torch.softmax(out.probes["image"], -1),
                self.model.answer(out.logits), self.model.decide(out.logits))


OUTPUTS = ["probabilities", "logits", "fused", "text_only", "image_only", "label", "best_guess"]


def example_inputs(run: LoadedRun, batch: int = 2, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Random inputs of the run's input names and shapes, and ``present``: both modalities,
    the text alone and the image alone, in turn."""
    generator = torch.Generator().manual_seed(seed)
    features = run.info["features"]
    shapes = {"text": [features["dims"]["text"]], "image": [features["dims"]["image"]]}
    if features.get("token_shapes"):
        shapes |= {f"{k}_tokens": v for k, v in features["token_shapes"].items()}
    present = torch.tensor([[1.0, 1.0], [1.0, 0.0], [0.0, 1.0]]).repeat(batch, 1)[:batch]
    return (*(torch.randint(0, len(run.vocab), (batch, run.config.model.max_tokens), generator=generator)
              if name == "tokens" else torch.randn(batch, *shapes[name], generator=generator)
              for name in run.model.input_names), present)


def export_onnx(run_dir: str | Path, out: str | Path, opset: int = 17, check_batch: int = 5,
                tolerance: float = 1e-4, device: str = "cpu") -> dict[str, float]:
    """Write the ONNX file and return the largest absolute difference per output against
    PyTorch on random inputs of another batch size. The check runs on the written file before
    it takes ``out``'s name: when any difference exceeds ``tolerance`` it raises, and ``out`` is
    left as it was."""
    run = load_run(run_dir, device)
    head = ExportHead(run.model).eval()
    names = [*run.model.input_names, "present"]
    traced = tuple(x.to(device) for x in example_inputs(run, batch=3))
    errors: dict[str, float] = {}

    def write_and_check(tmp: Path) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the legacy exporter's deprecation and tracer notes
            torch.onnx.export(head, traced, str(tmp), dynamo=False, opset_version=opset,
                              input_names=names, output_names=OUTPUTS,
                              dynamic_axes={name: {0: "batch"} for name in [*names, *OUTPUTS]})
        errors.update(compare(tmp, head, run, names, check_batch, device))
        if max(errors.values()) > tolerance:
            raise RuntimeError(f"ONNX and PyTorch disagree beyond {tolerance}: {json.dumps(errors)}")

    atomic_write(out, write_and_check)
    return errors


def compare(path: Path, head: ExportHead, run: LoadedRun, names: list[str], batch: int,
            device: str) -> dict[str, float]:
    """The largest |ONNX - PyTorch| per output on random inputs of ``batch`` posts."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    inputs = example_inputs(run, batch, seed=1)
    with torch.no_grad():
        expected = [t.cpu().numpy() for t in head(*(x.to(device) for x in inputs))]
    got = session.run(None, {name: x.numpy() for name, x in zip(names, inputs, strict=True)})
    return {name: float(np.abs(a - b).max()) for name, a, b in zip(OUTPUTS, got, expected, strict=True)}
