"""open_clip model loading: a model name or config JSON + a local checkpoint -> ready encoder.

No weights are downloaded: ``pretrained`` must be a local file (.pt/.bin/.safetensors, plain
or ``{"state_dict": {"module.*": ...}}``) or a directory (an open_clip ``local-dir`` with
``open_clip_config.json``, or one holding a single checkpoint file).
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from cliper_dist import files
from cliper_dist.compat import ensure_torchvision_importable
from cliper_dist.errors import UserError

ensure_torchvision_importable()
import open_clip  # noqa: E402  (needs the torchvision fix first)
from open_clip.transformer import text_global_pool  # noqa: E402

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

    def encode_text(self, tokens: torch.Tensor, device: torch.device, groups: int = 1) -> torch.Tensor:
        """(T, L) CPU tokens -> (T, D) raw text embeddings on ``device``, in the rows' order.

        With a causal text tower pooled at the end-of-text token (every open_clip ``CLIP``),
        the columns after a row's end token cannot change its embedding. So rows are sorted
        by length, split into ``groups`` and each group runs only up to its longest row: a
        batch of short field prompts no longer pays for 77 (or 248) positions.
        """
        if not _trims_padding(self.model):
            return self.model.encode_text(tokens.to(device, non_blocking=True))
        ends = text_ends(self.model, tokens)  # planned on the CPU: no device sync per group
        order = torch.argsort(ends, stable=True)
        ends = ends[order]
        text = tokens.to(device, non_blocking=True)[order.to(device, non_blocking=True)]
        bounds = [int(b) for b in torch.linspace(0, len(order), groups + 1).round()]
        parts = [_encode_prefix(self.model, text[lo:hi, :int(ends[hi - 1]) + 1])
                 for lo, hi in zip(bounds, bounds[1:]) if hi > lo]
        return torch.cat(parts)[torch.argsort(order).to(device, non_blocking=True)]


def autocast_dtype(device: torch.device, precision: str) -> torch.dtype:
    """``precision`` (auto | fp32 | bf16 | fp16) on ``device``: auto is bf16 on GPU, fp32 on CPU."""
    if precision == "fp32" or (precision == "auto" and device.type != "cuda"):
        return torch.float32
    return torch.float16 if precision == "fp16" else torch.bfloat16


def autocast(device: torch.device, dtype: torch.dtype) -> contextlib.AbstractContextManager:
    """Mixed precision in ``dtype``; a no-op for float32."""
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


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


def load_encoder(model: str, pretrained: str | None, device: torch.device, context_length: int = 0,
                 keep_positions: int = 20) -> ClipEncoder:
    """The model with ``context_length`` text positions (0: the checkpoint's own).

    A checkpoint's positional embedding decides its context: a Long-CLIP checkpoint (248
    rows) loads into a 77-position model config as a 248-position model. Asking for more
    positions than the checkpoint has stretches its embedding the Long-CLIP way
    (``stretch_positions``), not open_clip's plain linear resize.
    """
    ckpt, local_dir = resolve_checkpoint(pretrained)
    name = local_dir or resolve_model_name(model)
    trained = _text_positions(ckpt) if ckpt else None
    positions = context_length or (trained.shape[0] if trained is not None else None)
    if trained is not None and positions < trained.shape[0]:
        raise UserError(f"text.context_length={positions} is shorter than the checkpoint's "
                        f"{trained.shape[0]} positions (use 0 to keep them)")
    if local_dir and context_length:
        raise UserError("text.context_length needs a checkpoint file; a local-dir model keeps its config's")
    try:
        clip, _, preprocess = open_clip.create_model_and_transforms(
            name, pretrained=ckpt, device=device, weights_only=False, force_context_length=positions)
    except (RuntimeError, AssertionError, KeyError) as e:  # keys or shapes that do not fit the architecture
        raise UserError(f"checkpoint {pretrained} does not fit model {model}: {_load_error(e)}") from None
    clip.eval()
    if trained is not None and positions != trained.shape[0]:
        with torch.no_grad():  # replaces open_clip's linear resize done while loading
            _text_position_param(clip).copy_(stretch_positions(trained, positions, keep_positions))
    tokenizer = open_clip.get_tokenizer(name, context_length=positions)
    context = int(tokenizer.context_length)
    with torch.no_grad():  # the output width, whatever the architecture calls its projection
        embed_dim = int(clip.encode_text(tokenizer([""]).to(device)).shape[-1])
    sha = files.file_sha256(ckpt) if ckpt else None
    return ClipEncoder(clip, preprocess, tokenizer, name, ckpt or local_dir, sha, embed_dim, context)


def stretch_positions(pos: torch.Tensor, length: int, keep: int = 20) -> torch.Tensor:
    """Long-CLIP's positional-embedding stretch: (L, W) -> (length, W).

    The first ``keep`` rows (well trained on short captions) stay; row ``keep + k`` of the
    rest takes the fractional source position ``keep + k * (L - keep) / (length - keep)``,
    interpolated linearly and extrapolated from the last two rows past the end. For 77 ->
    248 with keep 20 this is exactly Long-CLIP's 4x interpolation.
    """
    n, _ = pos.shape
    if not 2 <= n <= length or keep >= n:
        raise UserError(f"cannot stretch {n} text positions to {length} keeping {keep}")
    src = pos.float()
    t = keep + torch.arange(length - keep, dtype=torch.float64) * (n - keep) / (length - keep)
    lo = t.floor().long().clamp(max=n - 2)
    w = (t - lo).to(src.dtype).unsqueeze(1)
    tail = src[lo] * (1 - w) + src[lo + 1] * w
    return torch.cat([src[:keep], tail]).to(pos.dtype)


def _text_position_param(clip: torch.nn.Module) -> torch.nn.Parameter:
    pos = getattr(clip, "positional_embedding", None)
    return pos if pos is not None else clip.text.positional_embedding


def _load_error(e: BaseException, details: int = 2) -> str:
    """torch's load_state_dict error as one line: its first mismatching tensors, not its header."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    if len(lines) > 1 and lines[0].startswith("Error(s) in loading state_dict"):
        lines = lines[1:]
    text = "; ".join(ln[:300] for ln in lines[:details]) or e.__class__.__name__
    return text + (f" (and {len(lines) - details} more)" if len(lines) > details else "")


def _text_positions(ckpt: str) -> torch.Tensor | None:
    """The text positional embedding stored in a checkpoint; a file that is no checkpoint is a
    one-line error (torch raises any of half a dozen types for a truncated or foreign file)."""
    try:
        return _read_text_positions(ckpt)
    except Exception as e:  # noqa: BLE001 - reported with its type, never swallowed
        first = (str(e).splitlines() or [""])[0][:200]
        raise UserError(f"--pretrained {ckpt} is not a readable checkpoint ({e.__class__.__name__}: {first})") \
            from None


def _read_text_positions(ckpt: str) -> torch.Tensor | None:
    if ckpt.endswith(".safetensors"):
        from safetensors import safe_open

        with safe_open(ckpt, framework="pt") as f:
            keys = list(f.keys())
            key = _position_key(keys)
            return f.get_tensor(key) if key else None
    try:  # zip checkpoints: only the tensors read below leave the disk
        state = torch.load(ckpt, map_location="cpu", mmap=True, weights_only=False)
    except RuntimeError:  # legacy or TorchScript files cannot be memory-mapped
        state = open_clip.factory.load_state_dict(ckpt, weights_only=False)
    if isinstance(state, torch.jit.ScriptModule):
        state = state.state_dict()
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    key = _position_key(list(state))
    return state[key].detach().clone() if key else None


def _position_key(keys: list[str]) -> str | None:
    for key in keys:
        if key.removeprefix("module.") in ("positional_embedding", "text.positional_embedding"):
            return key
    return None


def _trims_padding(clip: torch.nn.Module) -> bool:
    return (isinstance(clip, open_clip.CLIP) and clip.attn_mask is not None
            and clip.text_pool_type in ("argmax", "eos"))


def text_ends(clip: torch.nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """(T,) position of each row's pooled end-of-text token (where ``text_global_pool`` reads)."""
    if clip.text_pool_type == "argmax":  # the end token has the highest id
        return tokens.argmax(dim=-1)
    return (tokens == clip.text_eos_id).int().argmax(dim=-1)


def _encode_prefix(clip: torch.nn.Module, text: torch.Tensor) -> torch.Tensor:
    """open_clip's ``CLIP.encode_text`` on the first L = text.shape[1] positions only."""
    length = text.shape[1]
    cast_dtype = clip.transformer.get_cast_dtype()
    x = clip.token_embedding(text).to(cast_dtype)
    x = x + clip.positional_embedding[:length].to(cast_dtype)
    x = clip.transformer(x, attn_mask=clip.attn_mask[:length, :length])
    x = clip.ln_final(x)
    x = text_global_pool(x, text, clip.text_pool_type, eos_token_id=clip.text_eos_id)
    if clip.text_projection is None:
        return x
    return clip.text_projection(x) if isinstance(clip.text_projection, torch.nn.Linear) else x @ clip.text_projection


def save_random_checkpoint(model: str, out: str | Path, seed: int = 0, context_length: int | None = None) -> Path:
    """A random-init checkpoint for ``model``: what tests and the demo load like real weights.

    ``context_length`` makes e.g. a Long-CLIP-shaped checkpoint (248 text positions).
    """
    name = resolve_model_name(model)
    torch.manual_seed(seed)
    clip = open_clip.create_model(name, pretrained=None, force_context_length=context_length)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(clip, out)
    return out


def save_checkpoint(clip: torch.nn.Module, path: str | Path) -> None:
    """The open_clip checkpoint format that ``load_encoder`` (and open_clip) read: {"state_dict": ...}."""
    with files.atomic_open(path, "wb") as f:
        torch.save({"state_dict": clip.state_dict()}, f)
