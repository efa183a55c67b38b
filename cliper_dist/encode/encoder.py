"""open_clip model loading: a model name or config JSON + a local checkpoint -> ready encoder.

No weights are downloaded: ``pretrained`` must be a local file (.pt/.bin/.safetensors, plain
or ``{"state_dict": {"module.*": ...}}``) or a directory (an open_clip ``local-dir`` with
``open_clip_config.json``, or one holding a single checkpoint file).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from cliper_dist.compat import ensure_torchvision_importable
from cliper_dist.errors import UserError

ensure_torchvision_importable()
import open_clip  # noqa: E402  (needs the torchvision fix first)

_CHECKPOINT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


@dataclass
class ClipEncoder:
    model: torch.nn.Module
    preprocess: Callable  # PIL image -> (3, H, W) float tensor
    tokenizer: Callable  # list[str] -> (B, context_length) int tensor
    model_name: str
    checkpoint: str | None
    checkpoint_sha256: str | None
    embed_dim: int
    context_length: int


def resolve_model_name(model: str) -> str:
    """An open_clip model name, or a config JSON path registered under its file stem."""
    path = Path(model)
    if model.endswith(".json"):
        if not path.is_file():
            raise UserError(f"model config not found: {model}")
        try:
            cfg = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise UserError(f"{model}: not valid JSON ({e})") from None
        if not {"embed_dim", "vision_cfg", "text_cfg"} <= set(cfg):
            raise UserError(f"{model}: an open_clip model config needs embed_dim, vision_cfg and text_cfg")
        open_clip.add_model_config(path)
        return path.stem
    if model.startswith("local-dir:") or model in open_clip.list_models():
        return model
    raise UserError(f"unknown open_clip model '{model}' (a config .json path or one of: "
                    f"{', '.join(open_clip.list_models()[:8])}, ... see open_clip.list_models())")


def resolve_checkpoint(pretrained: str | None) -> tuple[str | None, str | None]:
    """(checkpoint file, local-dir model name) for a file or directory argument."""
    if not pretrained:
        return None, None
    path = Path(pretrained)
    if path.is_file():
        return str(path), None
    if path.is_dir():
        if (path / "open_clip_config.json").is_file():
            return None, f"local-dir:{path}"
        files = [p for p in sorted(path.iterdir()) if p.suffix in _CHECKPOINT_SUFFIXES]
        if len(files) == 1:
            return str(files[0]), None
        raise UserError(f"checkpoint directory {path} holds {len(files)} checkpoint files; name one")
    raise UserError(f"checkpoint not found: {pretrained} (no weights are downloaded; give a local file)")


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def load_encoder(model: str, pretrained: str | None, device: torch.device) -> ClipEncoder:
    ckpt, local_dir = resolve_checkpoint(pretrained)
    name = local_dir or resolve_model_name(model)
    try:
        clip, _, preprocess = open_clip.create_model_and_transforms(
            name, pretrained=ckpt, device=device, weights_only=False)
    except (RuntimeError, AssertionError, KeyError) as e:  # keys or shapes that do not fit the architecture
        reason = (str(e).splitlines() or [e.__class__.__name__])[0]
        raise UserError(f"checkpoint {pretrained} does not fit model {model}: {reason}") from None
    clip.eval()
    tokenizer = open_clip.get_tokenizer(name)
    context_length = int(getattr(clip, "context_length", None) or tokenizer.context_length)
    with torch.no_grad():  # the output width, whatever the architecture calls its projection
        embed_dim = int(clip.encode_text(tokenizer([""]).to(device)).shape[-1])
    sha = file_sha256(ckpt) if ckpt else None
    return ClipEncoder(clip, preprocess, tokenizer, name, ckpt or local_dir, sha, embed_dim, context_length)


def save_random_checkpoint(model: str, out: str | Path, seed: int = 0) -> Path:
    """A random-init checkpoint for ``model``: what tests and the demo load like real weights."""
    name = resolve_model_name(model)
    torch.manual_seed(seed)
    clip = open_clip.create_model(name, pretrained=None)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": clip.state_dict()}, out)
    return out
