"""Posts in: ``sgmft demo``, ``sgmft validate`` and ``sgmft extract``."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

import typer

from sgmft.cli.common import (
    NOTHING_DONE,
    AllowOutsideRoot,
    Checkpoint,
    Device,
    EncoderName,
    ImageRoot,
    Labels,
    ManifestFile,
    SkipInvalid,
    load_for_command,
    parse_labels,
    reported,
    rows_exit,
)
from sgmft.words import plural

app = typer.Typer()


@app.command()
def demo(out: Annotated[Path, typer.Argument(help="Folder to write the demo set into.")] = Path(
        "demo/data"),
         posts_per_class: Annotated[int, typer.Option(help="Posts of each of the eight places.")] = 30,
         seed: Annotated[int, typer.Option(help="Seed of the texts, images, users and times.")] = 0,
         shift: Annotated[bool, typer.Option(
             help="A set with a shift: test posts from events unseen in training, whose images say "
                  "nothing of the label (docs/model.md, \"Beyond the paper\").")] = False) -> None:
    """Write the bundled demo set (rendered images, Weibo-style texts): a demo, not a benchmark."""
    from sgmft.data.demo import make_demo, make_shift_demo

    path = make_shift_demo(out, seed=seed) if shift else make_demo(out, posts_per_class, seed)
    typer.echo(f"wrote {path} ({len(path.read_text(encoding='utf-8').splitlines())} posts)")


@app.command()
def validate(manifest: ManifestFile, image_root: ImageRoot = None, labels: Labels = None,
             unlabelled: Annotated[bool, typer.Option(
                 help="Allow rows without a label (prediction manifests).")] = False,
             allow_outside_root: AllowOutsideRoot = False) -> None:
    """Check every row of a manifest and report each problem by row. Exit status 0 when every row
    is valid, 3 when some are not, 4 when none is (or the file holds no rows). Rows are read and
    checked a block at a time (image checks in processes), so memory stays flat."""
    from collections import Counter

    from sgmft import PLACES
    from sgmft.data.manifest import iter_manifest

    label_set = parse_labels(labels)
    counts: Counter[str] = Counter()
    valid, invalid, text_only, splits = 0, 0, 0, set()
    with reported():
        for block in iter_manifest(manifest, image_root, label_set, require_labels=not unlabelled,
                                   any_label=label_set is None, outside_root=allow_outside_root):
            for problem in block.problems:
                typer.echo(f"  {problem}")
            invalid += len(block.problems)
            valid += len(block.posts)
            counts.update(post.label for post in block.posts if post.label is not None)
            text_only += sum(post.image is None for post in block.posts)
            splits |= {post.split for post in block.posts if post.split is not None}
    if not valid and not invalid:
        typer.echo(f"error: {manifest} holds no posts (it is empty, or holds only a header or blank lines)",
                   err=True)
        raise typer.Exit(NOTHING_DONE)
    typer.echo(f"{manifest}: {plural(valid, 'valid post')}, {plural(invalid, 'invalid row')}"
               + (f", {text_only} of the posts text-only (no image: predicted from their text, left out "
                  "of training)" if text_only else ""))
    known = label_set or (PLACES if set(counts) <= set(PLACES) else tuple(sorted(counts)))
    if label_set is None and known != PLACES:
        typer.echo("  labels from the data (not the default places; --labels fixes the set):")
    typer.echo("  " + ", ".join(f"{label} {counts[label]}" for label in known))
    if splits:
        typer.echo(f"  split column: {', '.join(sorted(splits))} (train/evaluate follow it)")
    rows_exit(valid, invalid)


@app.command()
def extract(
    manifest: ManifestFile,
    out: Annotated[Path | None, typer.Option(help="Cache folder (default: beside the data).")] = None,
    encoder: EncoderName = None,
    checkpoint: Checkpoint = None,
    device: Device = "cpu",
    batch_size: Annotated[int, typer.Option(help="Posts encoded at a time.")] = 32,
    chunk_size: Annotated[int | None, typer.Option(
        help="Posts per chunk file of a new cache (default: as many as fill --chunk-mib).")] = None,
    chunk_mib: Annotated[float, typer.Option(help="Size of a chunk file of a new cache, in MiB.")] = 64,
    overwrite: Annotated[bool, typer.Option(help="Replace a cache of another encoder/manifest.")] = False,
    verify: Annotated[bool, typer.Option(
        help="Check every chunk already written by its SHA-256 (a full read; opening a cache checks "
             "sizes only) and rebuild those that differ.")] = False,
    sequences: Annotated[bool, typer.Option(
        help="Also store token states (text tokens, image patches) for model.reading=sequence.")] = False,
    precision: Annotated[str, typer.Option(
        help="Encoder arithmetic: auto (bf16 where the CPU or GPU computes it natively, else fp32), "
             "fp32, bf16 or fp16 (CUDA).")] = "auto",
    ray: Annotated[str | None, typer.Option(
        "--ray", metavar="[ADDRESS]",
        help="Extract on a Ray cluster: --ray alone starts a local one, --ray auto or "
             "--ray ray://HOST:PORT joins one (sgmft[ray]).")] = None,
    workers: Annotated[int, typer.Option(help="With --ray: encoder actors (one encoder each).")] = 2,
    gpus_per_worker: Annotated[float, typer.Option(help="With --ray: GPUs per encoder actor.")] = 0.0,
    image_root: ImageRoot = None,
    allow_outside_root: AllowOutsideRoot = False,
    labels: Labels = None,
    skip_invalid: SkipInvalid = False,
    from_file: Annotated[Path | None, typer.Option(
        "--from", help="Import features made elsewhere instead of encoding: a Parquet file with columns "
                       "id, text and image (lists of floats), one row per post.")] = None,
    dtype: Annotated[str | None, typer.Option(
        help="How the features are stored: float32, or float16 (half the disk and page cache; "
             "read as float32). Default: float32 for a new cache, as stored for one already there.")] = None,
) -> None:
    """Encode every post once, in batches, into an on-disk feature cache (resumable), or import
    features made elsewhere (--from FILE.parquet)."""
    from sgmft.encoders.features import ensure_features

    if dtype not in (None, "float32", "float16"):
        raise typer.BadParameter(f"{dtype!r}: expected float32 or float16", param_hint="--dtype")
    if chunk_size is not None and chunk_size < 1:
        raise typer.BadParameter(f"{chunk_size}: a chunk holds at least one post", param_hint="--chunk-size")
    if not chunk_mib > 0:
        raise typer.BadParameter(f"{chunk_mib}: expected a size above 0", param_hint="--chunk-mib")
    chunks = {"chunk_size": chunk_size, "chunk_mib": chunk_mib}
    if from_file is not None:
        _import(manifest, from_file, out, overwrite, image_root, labels, skip_invalid, allow_outside_root,
                dtype, chunks)
        return
    if gpus_per_worker > 0 and not device.startswith("cuda"):
        raise typer.BadParameter("--gpus-per-worker reserves GPUs for the encoder actors; add --device cuda, "
                                 "or encoding would run on their CPUs")
    loaded = load_for_command(manifest, image_root, labels, skip_invalid, outside_root=allow_outside_root)
    cluster = None if ray is None else {"address": None if ray == "local" else ray, "workers": workers,
                                        "gpus_per_worker": gpus_per_worker}
    with reported():
        cache, folder = ensure_features(loaded, encoder, checkpoint, out, device=device,
                                        batch_size=batch_size, **chunks, overwrite=overwrite,
                                        sequences=sequences, precision=precision, ray=cluster,
                                        verify=verify, dtype=dtype)
    dims = cache.header["dims"]
    shapes = cache.header.get("token_shapes")
    tokens = (f"; token sequences text {shapes['text'][0]}x{shapes['text'][1]}, "
              f"image {shapes['image'][0]}x{shapes['image'][1]}") if shapes else ""
    typer.echo(f"features of {len(cache)} posts in {folder} "
               f"(text {dims['text']}-d, image {dims['image']}-d, {cache.header['encoder']['name']}, "
               f"{cache.header.get('precision', 'fp32')}, stored in {cache.header.get('dtype', 'float32')}"
               f"{tokens})")


def _import(manifest: Path, source: Path, out: Path | None, overwrite: bool, image_root, labels,
            skip_invalid: bool, outside_root: bool, dtype: str | None, chunks: dict) -> None:
    from sgmft.encoders.features import default_cache_dir
    from sgmft.encoders.imported import IMPORTED, import_features

    loaded = load_for_command(manifest, image_root, labels, skip_invalid, outside_root=outside_root)
    folder = out or default_cache_dir(loaded, IMPORTED)
    with reported():
        cache = import_features(loaded, source, folder, overwrite, chunks["chunk_size"], dtype,
                                chunks["chunk_mib"])
    dims = cache.header["dims"]
    typer.echo(f"features of {len(cache)} posts imported from {source} into {folder} "
               f"(text {dims['text']}-d, image {dims['image']}-d, stored in {cache.header['dtype']})")
    typer.echo(f"next: sgmft train --data {manifest} --cache {folder}")


RAY_ADDRESS = re.compile(r"^(auto|local|ray://\S+|[\w.\-]*:\d+)$")


def with_ray_address(arguments: list[str]) -> list[str]:
    """``--ray`` takes an optional address, which typer cannot declare (its ``flag_value`` is not
    functional): a bare ``--ray`` (followed by nothing, by an option, or by anything that is not
    a Ray address such as the manifest) becomes ``--ray local`` before typer parses the line."""
    out = []
    for i, argument in enumerate(arguments):
        out.append(argument)
        following = arguments[i + 1] if i + 1 < len(arguments) else None
        if argument == "--ray" and (following is None or not RAY_ADDRESS.match(following)):
            out.append("local")
    return out
