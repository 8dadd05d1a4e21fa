"""The official Chinese-CLIP release checkpoints (the ``cn_clip`` code's ``.pt`` files) as
`transformers.ChineseCLIPModel` folders.

An official checkpoint is ``{"state_dict": {"module.visual...": ..., "module.bert...": ...}}``
(often fp16). `converted_folder` reads one, infers its architecture from the weights' shapes,
renames every weight to `transformers`' layout, and writes a folder `ChineseCLIPModel` and
`BertTokenizer` load offline (``config.json``, ``model.safetensors`` in the source's dtype,
``vocab.txt``, ``preprocessor_config.json``). The folder is cached under the user cache
(``$SGMFT_CACHE`` or ``~/.cache/sgmft``), keyed by the SHA-256 of the source file, and written
atomically, so the next run starts at once.

The mapping (the same one `transformers`' own conversion script makes, written here anew),
official -> `transformers`:

- ``bert.*`` (BERT embeddings and layers) -> ``text_model.*``; BERT's pooler is dropped (CLIP
  reads the [CLS] state);
- ``text_projection`` (H, E) -> ``text_projection.weight`` (E, H); ``visual.proj`` (W, E) ->
  ``visual_projection.weight`` (E, W): transposed;
- ``visual.conv1``, ``class_embedding``, ``positional_embedding``, ``ln_pre``, ``ln_post`` ->
  ``vision_model.embeddings.patch_embedding``, ``.class_embedding``,
  ``.position_embedding.weight``, ``vision_model.pre_layrnorm``, ``.post_layernorm``;
- in block N of ``visual.transformer.resblocks``: ``attn.in_proj_{weight,bias}`` (3W, ...) ->
  ``self_attn.{q,k,v}_proj`` (split in three), ``attn.out_proj`` -> ``self_attn.out_proj``,
  ``ln_1``, ``ln_2`` -> ``layer_norm1``, ``layer_norm2``, ``mlp.c_fc``, ``mlp.c_proj`` ->
  ``mlp.fc1``, ``mlp.fc2`` (of ``vision_model.encoder.layers.N``).

The attention heads cannot be read from the weights (the fused in-projection has the same
shape for any number of heads): they follow the official configurations, 64 wide everywhere
but in ViT-H/14, whose 1,280 channels make 16 heads of 80. The ResNet-50 release has no
`transformers` counterpart and is refused.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from sgmft.data.workdir import user_cache_dir
from sgmft.io import sha256_file

#: vision width -> width of one attention head, as in the official model configurations
VISION_HEAD_WIDTH = {1280: 80}
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
FORMAT = 1


def is_official_checkpoint(checkpoint: str) -> bool:
    """Whether ``checkpoint`` names an official release file (not a folder or hub id)."""
    return Path(checkpoint).is_file()


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The weights of an official checkpoint, without the ``module.`` prefix of its training."""
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:   # a pickle, a zip, a truncated file: say which file
        raise ValueError(f"{path} is not a readable PyTorch checkpoint: {exc}") from None
    state = saved.get("state_dict", saved) if isinstance(saved, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path} holds no state dict of tensors (expected {{'state_dict': {{...}}}})")
    return {key.removeprefix("module."): value for key, value in state.items()}


def _count(state: dict[str, Any], pattern: str) -> int:
    found = {int(m.group(1)) for key in state if (m := re.match(pattern, key))}
    return max(found) + 1 if found else 0


def infer_config(state: dict[str, torch.Tensor]):
    """The `transformers.ChineseCLIPConfig` of an official checkpoint, from its weights' shapes."""
    from transformers import ChineseCLIPConfig

    if "visual.conv1.weight" not in state:
        if any(key.startswith("visual.layer1") for key in state):
            raise ValueError("this is the ResNet-50 Chinese-CLIP: transformers has no ChineseCLIPModel "
                             "for it; use a ViT checkpoint (ViT-B/16, ViT-L/14, ViT-H/14)")
        raise ValueError("not a Chinese-CLIP checkpoint: no visual.conv1.weight among its weights")
    width, _, patch, _ = state["visual.conv1.weight"].shape
    positions = state["visual.positional_embedding"].shape[0] - 1
    grid = round(positions ** 0.5)
    hidden = state["bert.embeddings.word_embeddings.weight"].shape[1]
    text = {"vocab_size": state["bert.embeddings.word_embeddings.weight"].shape[0], "hidden_size": hidden,
            "num_hidden_layers": _count(state, r"bert\.encoder\.layer\.(\d+)\."),
            "num_attention_heads": hidden // 64,
            "intermediate_size": state["bert.encoder.layer.0.intermediate.dense.weight"].shape[0],
            "max_position_embeddings": state["bert.embeddings.position_embeddings.weight"].shape[0],
            "type_vocab_size": state["bert.embeddings.token_type_embeddings.weight"].shape[0],
            "hidden_act": "gelu", "layer_norm_eps": 1e-12}
    vision = {"hidden_size": width, "patch_size": patch, "image_size": grid * patch,
              "num_hidden_layers": _count(state, r"visual\.transformer\.resblocks\.(\d+)\."),
              "num_attention_heads": width // VISION_HEAD_WIDTH.get(width, 64),
              "intermediate_size": state["visual.transformer.resblocks.0.mlp.c_fc.weight"].shape[0],
              "projection_dim": state["visual.proj"].shape[1], "hidden_act": "quick_gelu",
              "layer_norm_eps": 1e-5}
    return ChineseCLIPConfig(text_config=text, vision_config=vision,
                             projection_dim=state["visual.proj"].shape[1])


VISION_RENAMES = (("ln_1.", "layer_norm1."), ("ln_2.", "layer_norm2."), ("mlp.c_fc.", "mlp.fc1."),
                  ("mlp.c_proj.", "mlp.fc2."), ("attn.out_proj.", "self_attn.out_proj."))


def convert_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official weight names and layouts -> `transformers.ChineseCLIPModel`'s (module docstring);
    an official weight the mapping does not know is an error, not silently dropped."""
    out: dict[str, torch.Tensor] = {}
    unknown = []
    for key, value in state.items():
        if key.startswith("bert.pooler."):
            continue                     # CLIP reads the [CLS] state, not BERT's pooler
        if key.startswith("bert."):
            out["text_model." + key.removeprefix("bert.")] = value
        elif key == "text_projection":
            out["text_projection.weight"] = value.T
        elif key == "visual.proj":
            out["visual_projection.weight"] = value.T
        elif key == "logit_scale":
            out[key] = value
        elif key.startswith("visual.transformer.resblocks."):
            out.update(_vision_block(key, value))
        elif key in VISION_TOP:
            out[VISION_TOP[key]] = value
        else:
            unknown.append(key)
    if unknown:
        raise ValueError(f"the checkpoint holds weights this conversion does not know: {unknown[:5]}")
    return {key: value.contiguous() for key, value in out.items()}


VISION_TOP = {"visual.conv1.weight": "vision_model.embeddings.patch_embedding.weight",
              "visual.class_embedding": "vision_model.embeddings.class_embedding",
              "visual.positional_embedding": "vision_model.embeddings.position_embedding.weight",
              "visual.ln_pre.weight": "vision_model.pre_layrnorm.weight",
              "visual.ln_pre.bias": "vision_model.pre_layrnorm.bias",
              "visual.ln_post.weight": "vision_model.post_layernorm.weight",
              "visual.ln_post.bias": "vision_model.post_layernorm.bias"}


def _vision_block(key: str, value: torch.Tensor) -> dict[str, torch.Tensor]:
    number, rest = re.match(r"visual\.transformer\.resblocks\.(\d+)\.(.*)", key).groups()
    prefix = f"vision_model.encoder.layers.{number}."
    if rest.startswith("attn.in_proj_"):
        kind = rest.removeprefix("attn.in_proj_")            # weight (3W, W) or bias (3W,)
        return {f"{prefix}self_attn.{name}_proj.{kind}": part
                for name, part in zip(("q", "k", "v"), value.chunk(3, dim=0), strict=True)}
    for old, new in VISION_RENAMES:
        if rest.startswith(old):
            return {prefix + new + rest.removeprefix(old): value}
    raise ValueError(f"the checkpoint holds a vision weight this conversion does not know: {key}")


def official_vocab() -> Path:
    """The 21,128-token Chinese BERT vocabulary that ships with the ``cn_clip`` package (found
    without importing it: its package imports torchvision)."""
    spec = importlib.util.find_spec("cn_clip")
    if spec is None or not spec.submodule_search_locations:
        raise ValueError("an official Chinese-CLIP checkpoint needs its vocabulary, which ships with "
                         "the cn_clip package: pip install --no-deps cn-clip==1.6.0")
    return Path(next(iter(spec.submodule_search_locations))) / "clip" / "vocab.txt"


def _source_hash(path: Path, cache: Path) -> str:
    """The file's SHA-256, remembered by path, size and modification time (a 2 GB checkpoint
    is read once)."""
    index_file = cache / "hashes.json"
    try:
        index = json.loads(index_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        index = {}
    info = path.stat()
    key = f"{path.resolve()}|{info.st_size}|{info.st_mtime_ns}"
    if key not in index:
        index[key] = sha256_file(path)
        from sgmft.io import atomic_write_json

        atomic_write_json(index_file, index)
    return index[key]


def _finished(folder: Path, digest: str) -> bool:
    """Whether ``folder`` holds a finished conversion of this format and of this source file
    (one of another format, or unreadable, is converted again)."""
    try:
        done = json.loads((folder / "done.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(done, dict) and done.get("format") == FORMAT and done.get("sha256") == digest \
        and (folder / "model.safetensors").is_file()


def check_complete(config, weights: dict[str, torch.Tensor], source: Path) -> None:
    """Every weight the `transformers` model of ``config`` has must come from the checkpoint,
    with its shape (as open_clip's and timm's loads are strict): a missing one would be left at
    its random start, silently."""
    from transformers import ChineseCLIPModel

    with torch.device("meta"):
        expected = ChineseCLIPModel(config).state_dict()
    missing = sorted(set(expected) - set(weights))
    wrong = sorted(k for k in set(expected) & set(weights)
                   if tuple(expected[k].shape) != tuple(weights[k].shape))
    problems = []
    if missing:
        problems.append(f"missing {', '.join(missing[:8])}" + (" ..." if len(missing) > 8 else ""))
    if wrong:
        problems.append(f"of another shape {', '.join(wrong[:8])}")
    if problems:
        raise ValueError(f"{source} does not hold every weight of the model its shapes describe: "
                         + "; ".join(problems))


def converted_folder(checkpoint: str | Path, cache: Path | None = None) -> Path:
    """The `transformers` folder of an official checkpoint, converted now or found cached."""
    from safetensors.torch import save_file

    path = Path(checkpoint)
    cache = cache or user_cache_dir() / "chinese-clip"
    cache.mkdir(parents=True, exist_ok=True)
    digest = _source_hash(path, cache)
    folder = cache / digest[:16]
    if _finished(folder, digest):
        return folder
    state = read_state_dict(path)
    config = infer_config(state)
    weights = convert_state_dict(state)
    check_complete(config, weights, path)
    temporary = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=cache))
    try:
        config.save_pretrained(temporary)
        save_file(weights, str(temporary / "model.safetensors"), metadata={"format": "pt"})
        shutil.copyfile(official_vocab(), temporary / "vocab.txt")
        (temporary / "preprocessor_config.json").write_text(json.dumps({
            "image_mean": list(CLIP_MEAN), "image_std": list(CLIP_STD),
            "size": {"height": config.vision_config.image_size, "width": config.vision_config.image_size},
            "resample": 3}), encoding="utf-8")
        (temporary / "done.json").write_text(json.dumps({"format": FORMAT, "source": str(path.resolve()),
                                                         "sha256": digest}), encoding="utf-8")
        shutil.rmtree(folder, ignore_errors=True)   # a half-written one from a killed run
        os.replace(temporary, folder)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
    return folder
