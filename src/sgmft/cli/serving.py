"""Use a trained run: ``sgmft predict``, ``sgmft serve`` and ``sgmft export`` (``sgmft profile``:
`sgmft.cli.profiling`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from sgmft.cli.common import (
    AllowOutsideRoot,
    BatchSize,
    Device,
    ImageRoot,
    RunFolder,
    RunLabels,
    parse_labels,
    reported,
    rows_exit,
)
from sgmft.words import plural

app = typer.Typer()
Coverage = Annotated[float | None, typer.Option(
    help="Also give the prediction set: the labels that hold the true one with this probability "
         "(e.g. 0.9), calibrated on posts held out of training; a run that held none out gives every "
         "label.")]
MinConfidence = Annotated[float | None, typer.Option(
    help="Answer 'unsure' when the top probability is below this (e.g. 0.6).")]
CacheDirs = Annotated[list[Path] | None, typer.Option(
    "--cache", metavar="DIR",
    help="A feature cache folder that may hold the posts' features (repeatable); the run's own is always "
         "looked in.")]
MinGain = Annotated[float, typer.Option(
    help="Answer 'unsure' when the answer's probability is less than this above its share of the "
         "training posts (no better than guessing from the label counts; 0 turns it off).")]


NovelUnsure = Annotated[bool, typer.Option(
    help="Answer 'unsure' (with the best guess) for a post unlike the training posts in both its text "
         "and its image.")]


def _predictor(run: Path, device: str = "cpu", min_gain: float = 0.05, novel_unsure: bool = True):
    from sgmft.serving.predictor import Predictor

    with reported():
        return Predictor(run, device=device, min_gain=min_gain, novel_unsure=novel_unsure)


def print_prediction(result: dict, explain: bool = False) -> None:
    """One prediction in words: the label (or the set), a bar per class, and the evidence; with
    ``explain`` how the model got there (the similarity gate, what each probe is)."""
    typer.echo(f"label: {result['label']}" + (f" (best guess {result['best_guess']})"
                                              if result.get("best_guess") else ""))
    if result.get("set") is not None:
        members = result["set"]
        typer.echo(f"set ({result['coverage']:.0%} coverage): "
                   + (members[0] if len(members) == 1 else "one of: " + ", ".join(members)))
    if result.get("unlike_training"):
        typer.echo("unlike the posts this model was trained on: "
                   + ", ".join(f"{name} p = {p:.3f}" for name, p in result["novelty"].items()
                               if p is not None)
                   + " (p-values of looking like the training posts)")
    width = max(len(label) for label in result["probabilities"])
    for label, p in sorted(result["probabilities"].items(), key=lambda kv: -kv[1]):
        typer.echo(f"  {label:{width}s} {p:6.3f}  {'#' * round(40 * p)}")
    evidence = result["evidence"]
    gate = evidence.get("similarity_gate")
    if gate and explain:
        typer.echo(f"similarity gate P^m ({gate['gate']}): mean cross-attention weight "
                   f"{gate['cross_attention_weight_mean']:.4f} "
                   f"(max {gate['cross_attention_weight_max']:.4f}), "
                   f"self-attention {gate['self_attention_weight_mean']:.4f}")
    for name in ("text", "image"):
        only = evidence.get(f"{name}_only")
        if only:
            note = ", uninformative" if only["uninformative"] else ""
            source = f"; {only['source']}" if explain else ""
            top = only["probabilities"][only["label"]]
            typer.echo(f"{name} alone: {only['label']} ({top:.3f}{note}{source})")
    if "mixture" in evidence:
        typer.echo(f"{evidence['mixture_words']} (the fallback mixture chosen out of fold)")
    for warning in result["warnings"]:
        typer.echo(f"note: {warning}")


@app.command()
def predict(
    run: RunFolder,
    text: Annotated[str | None, typer.Option(help="The post's text.")] = None,
    image: Annotated[Path | None, typer.Option(help="The post's image file.")] = None,
    manifest: Annotated[Path | None, typer.Option(help="Predict every row of a manifest.")] = None,
    out: Annotated[Path | None, typer.Option(help="Output of --manifest: .jsonl or .csv.")] = None,
    image_root: ImageRoot = None,
    allow_outside_root: AllowOutsideRoot = False,
    labels: RunLabels = None,
    skip_invalid: Annotated[bool, typer.Option(
        "--skip-invalid", help="Leave bad rows out of the output (counted) instead of writing an "
                               "error record for each; the exit status is then 0 when any post was "
                               "predicted.")] = False,
    batch_size: BatchSize = 64,
    device: Device = "cpu",
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON for one post.")] = False,
    explain: Annotated[bool, typer.Option(
        "--explain", help="Also say how the model got there: the similarity gate's attention weights and "
                          "what each modality's probe is.")] = False,
    coverage: Coverage = None,
    min_confidence: MinConfidence = None,
    min_gain: MinGain = 0.05,
    novel_unsure: NovelUnsure = True,
    resume: Annotated[bool, typer.Option(
        help="With --manifest: continue a killed prediction into the same --out where it stopped.")] = False,
    block_rows: Annotated[int, typer.Option(
        min=1, help="With --manifest: rows read, predicted and written at a time; a killed run resumes "
                    "after its last whole block.")] = 4096,
    cache: CacheDirs = None,
    ray: Annotated[str | None, typer.Option(
        "--ray", metavar="[ADDRESS]",
        help="With --manifest: predict on a Ray cluster: --ray alone starts a local one, --ray auto or "
             "--ray ray://HOST:PORT joins one (sgmft[ray]).")] = None,
    workers: Annotated[int, typer.Option(help="With --ray: predicting actors (one model each).")] = 2,
    gpus_per_worker: Annotated[float, typer.Option(help="With --ray: GPUs per actor.")] = 0.0,
) -> None:
    """Predict the label of one post (--text/--image) or of a whole manifest (--manifest --out),
    streamed: rows are read, predicted and written a block at a time. With --manifest the exit
    status is 0 when every row was predicted, 3 when some rows failed (each has an error record),
    4 when none could be predicted."""
    from sgmft.data.images import ImageError, load_image
    from sgmft.serving.predictor import PostInput, PredictionError

    if manifest is not None:
        from sgmft.data.fields import check_manifest_file
        from sgmft.serving.batch import FORMATS, check_output, predict_manifest

        if out is None:
            raise typer.BadParameter(f"--manifest needs --out FILE ({', '.join(FORMATS)})")
        with reported():
            check_output(out)
            check_manifest_file(manifest)
        predictor = _predictor(run, device, min_gain, novel_unsure)
        extra = {}
        if ray is not None:
            from sgmft.serving.ray_predict import RayWindows

            address = None if ray == "local" else ray
            extra["windows"] = RayWindows(run, device, address, workers, gpus_per_worker)
        with reported():
            result = predict_manifest(predictor, manifest, out, image_root, batch_size,
                                      list(parse_labels(labels) or []) or None, skip_invalid,
                                      coverage=coverage, min_confidence=min_confidence, resume=resume,
                                      caches=tuple(cache or ()), outside_root=allow_outside_root,
                                      block_rows=block_rows, **extra)
        typer.echo(f"predicted {plural(result.predicted, 'post')}, {plural(result.errors, 'row error')}, "
                   f"{plural(result.left_out, 'invalid row')} left out -> {out}"
                   + (f" (features of {result.from_cache} from a feature cache)" if result.from_cache else "")
                   + (f" (resumed after row {result.resumed_rows})" if result.resumed_rows else ""))
        if result.drift and "words" in result.drift:
            typer.echo(result.drift["words"] + f" -> {out.name}.drift.json")
        if not result.predicted:
            typer.echo(f"error: no post of {manifest} could be predicted", err=True)
        rows_exit(result.predicted, result.errors + result.left_out, skip_invalid)
        return
    if text is None and image is None:
        raise typer.BadParameter("give --text and/or --image, or --manifest")
    with reported(ImageError):
        pil = load_image(image) if image is not None else None
    predictor = _predictor(run, device, min_gain, novel_unsure)
    with reported(PredictionError):
        result = predictor.predict([PostInput(text, pil)], coverage, min_confidence)[0].to_dict()
    if json_output:
        typer.echo(json.dumps(result, ensure_ascii=False, indent=2))
    else:
        print_prediction(result, explain)


@app.command()
def serve(
    run: RunFolder,
    host: Annotated[str, typer.Option(
        help="Address to listen on (127.0.0.1: this machine only).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    max_upload_mb: Annotated[float, typer.Option(help="Largest accepted image upload.")] = 10.0,
    device: Device = "cpu",
    coverage: Annotated[float, typer.Option(
        help="Coverage of the prediction sets given when a request does not ask (0: none).")] = 0.9,
    min_confidence: MinConfidence = None,
    min_gain: MinGain = 0.05,
    novel_unsure: NovelUnsure = True,
) -> None:
    """Serve the run over HTTP (FastAPI + uvicorn): /predict, /predict/batch, /health, /labels,
    /docs, and a web page at /."""
    import socket

    import uvicorn

    from sgmft.serving.app import create_app

    try:   # before minutes of loading: is the port free?
        with socket.create_server((host, port)):
            pass
    except OSError as exc:
        typer.echo(f"error: cannot serve on {host}:{port}: {exc.strerror or exc}; choose another --port",
                   err=True)
        raise typer.Exit(1) from None
    predictor = _predictor(run, device, min_gain, novel_unsure)
    if predictor.imported:
        typer.echo("error: this run was trained on imported features and has no encoder to read posts "
                   "with; predict manifests of imported features instead (sgmft predict RUN --manifest "
                   "MANIFEST --cache DIR)", err=True)
        raise typer.Exit(1)
    uvicorn.run(create_app(predictor=predictor, max_upload_bytes=int(max_upload_mb * 1024 * 1024),
                           coverage=coverage or None, min_confidence=min_confidence), host=host, port=port)


@app.command()
def export(run: RunFolder, onnx: Annotated[Path, typer.Option(help="ONNX file to write.")],
           device: Device = "cpu") -> None:
    """Export the SG-Encoder, classifier and probes as ONNX, checked against PyTorch."""
    from sgmft.serving.export import export_onnx

    with reported(RuntimeError):
        errors = export_onnx(run, onnx, device=device)
    typer.echo(f"wrote {onnx}; largest |ONNX - PyTorch|: "
               + ", ".join(f"{k} {v:.2e}" for k, v in errors.items()))
