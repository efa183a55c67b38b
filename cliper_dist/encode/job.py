"""The encode job: dataset shards -> per-view CLIP embeddings -> the item feature store.

Rank 0 lists the shards whose part file is missing or stale and broadcasts the list; each
rank encodes its round-robin share (possibly none) with DataLoader workers doing decode and
tokenization; finished shards are written as they complete. After a barrier rank 0 merges
the parts. No collective runs inside the loop, so uneven shares cannot deadlock.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch.utils.data import DataLoader

from cliper_dist import config as config_lib
from cliper_dist import dist
from cliper_dist.data.dataset import DatasetDir
from cliper_dist.data.schema import TEXT_FIELDS, write_json
from cliper_dist.data.shards import assign_shards
from cliper_dist.encode import store
from cliper_dist.encode.encoder import ClipEncoder, load_encoder
from cliper_dist.encode.pipeline import IMAGE_CORRUPT, IMAGE_MISSING, EncodeBatch, ShardBatches, default_image
from cliper_dist.encode.views import ViewsConfig
from cliper_dist.errors import UserError

log = dist.log


@dataclass
class EncodeConfig:
    data: str = ""  # dataset directory (tools/convert.py output)
    out: str = ""  # feature directory to write
    model: str = ""  # open_clip model name or model config .json
    pretrained: str = ""  # local checkpoint file or directory ("" = random init, for tests only)
    batch_size: int = 64
    workers: int = 2  # DataLoader worker processes per rank
    device: str = "auto"
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"  # auto: bf16 autocast on GPU, fp32 on CPU
    tau: float = 0.1
    default_image: str = ""  # image used for items without one ("" = mid-grey)
    views: ViewsConfig = field(default_factory=ViewsConfig)


def fingerprint(cfg: EncodeConfig, encoder: ClipEncoder, shard_sha: str) -> str:
    """What a part depends on: a part with another fingerprint is stale and recomputed."""
    key = json.dumps({"shard": shard_sha, "model": encoder.model_name, "ckpt": encoder.checkpoint_sha256,
                      "views": asdict(cfg.views), "default_image": cfg.default_image}, sort_keys=True)
    return hashlib.sha256(key.encode()).hexdigest()[:32]


def _autocast(device: torch.device, precision: str):
    if precision == "fp32" or (precision == "auto" and device.type != "cuda"):
        return contextlib.nullcontext()
    dtype = torch.float16 if precision == "fp16" else torch.bfloat16
    return torch.autocast(device_type=device.type, dtype=dtype)


@torch.no_grad()
def encode_batch(encoder: ClipEncoder, batch: EncodeBatch, device: torch.device, precision: str):
    """(image (B, D), text_views (B, C, D)) as float32, raw (not L2-normalised) like CLIPER."""
    b, c, length = batch.tokens.shape
    with _autocast(device, precision):
        image = encoder.model.encode_image(batch.image.to(device, non_blocking=True))
        text = encoder.model.encode_text(batch.tokens.view(b * c, length).to(device, non_blocking=True))
    return image.float().cpu().numpy(), text.float().view(b, c, -1).cpu().numpy()


def run(cfg: EncodeConfig, info: dist.DistInfo) -> dict | None:
    for key in ("data", "out", "model"):
        if not getattr(cfg, key):
            raise UserError(f"encode: '{key}' is required (--{key} or {key}=...)")
    cfg.views.validate()
    dataset = DatasetDir.open(cfg.data)
    out = Path(cfg.out)
    (out / store.PARTS).mkdir(parents=True, exist_ok=True)
    encoder = load_encoder(cfg.model, cfg.pretrained or None, info.device)
    if info.is_main:
        config_lib.save(cfg, out / "config.yaml")
        log.info("encode: %d items in %d shards, model %s (D=%d), %d views, world size %d",
                 dataset.num_items, len(dataset.shard_names), encoder.model_name, encoder.embed_dim,
                 len(cfg.views.names), info.world_size)

    shas = {s["name"]: s["sha256"] for s in dataset.manifest["shards"]}
    prints = {name: fingerprint(cfg, encoder, shas[name]) for name in dataset.shard_names}
    pending = None
    if info.is_main:
        pending = [n for n in dataset.shard_names if not store.part_is_done(out, n, prints[n])]
        log.info("encode: %d shards to encode, %d already done", len(pending), len(dataset.shard_names) - len(pending))
    pending = dist.broadcast_object(pending)
    mine = assign_shards(pending, info.rank, info.world_size)

    stats = encode_shards(cfg, encoder, dataset, mine, prints, out, info)
    all_stats = dist.all_gather_object(stats)
    dist.barrier()
    if not info.is_main:
        return None
    merged = store.merge_parts(out, dataset.shard_names, dataset.num_items, cfg.tau)
    status = merged.pop("image_status")
    missing_ids = np.flatnonzero(status == IMAGE_MISSING).tolist()
    corrupt_ids = np.flatnonzero(status == IMAGE_CORRUPT).tolist()
    (out / "missing_images.txt").write_text("".join(f"{i}\n" for i in missing_ids + corrupt_ids))
    manifest = {
        "model": encoder.model_name, "model_arg": cfg.model, "checkpoint": encoder.checkpoint,
        "checkpoint_sha256": encoder.checkpoint_sha256, "embed_dim": encoder.embed_dim,
        "context_length": encoder.context_length, "views": cfg.views.names,
        "templates": dict(cfg.views.templates), "missing_text": cfg.views.missing, "tau": cfg.tau,
        "dtype": "float32", "precision": cfg.precision, "dataset": str(Path(cfg.data).resolve()),
        "counts": {"items": dataset.num_items, "missing_image": len(missing_ids), "corrupt_image": len(corrupt_ids),
                   "empty_text_fields": dict(zip(TEXT_FIELDS, merged["empty_fields"] or [0] * len(TEXT_FIELDS)))},
        "arrays": merged["arrays"],
    }
    store.write_manifest(out, manifest)
    write_json(out / "stats.json", {"world_size": info.world_size, "ranks": all_stats})
    log.info("encode: wrote %s (%d items; %d without image, %d corrupt image)",
             out, dataset.num_items, len(missing_ids), len(corrupt_ids))
    return manifest


def encode_shards(cfg: EncodeConfig, encoder: ClipEncoder, dataset: DatasetDir, shards: list[str],
                  prints: dict[str, str], out: Path, info: dist.DistInfo) -> dict:
    """Encode this rank's shards; write each one's part as soon as its last batch is done."""
    sizes = dataset.shard_sizes
    batches = ShardBatches([(n, str(dataset.shard_path(n))) for n in shards], encoder.preprocess,
                           encoder.tokenizer, cfg.views, cfg.batch_size,
                           default_image(cfg.default_image))
    workers = min(cfg.workers, len(shards))
    loader = DataLoader(batches, batch_size=None, num_workers=workers,
                        pin_memory=info.device.type == "cuda", prefetch_factor=4 if workers else None)
    open_shards: dict[str, list] = {}
    items, t_data, t_model = 0, 0.0, 0.0
    total = sum(sizes[n] for n in shards)
    bar = dist.Progress(total, desc="encode", unit="item")
    start = tick = time.perf_counter()
    for batch in loader:
        t_data += time.perf_counter() - tick
        tick = time.perf_counter()
        if len(batch.index):
            image, views = encode_batch(encoder, batch, info.device, cfg.precision)
            open_shards.setdefault(batch.shard, []).append(
                (batch.index.numpy(), image, views, batch.image_status.numpy(), batch.empty_fields.numpy()))
        if batch.last:
            _finish_shard(out, batch.shard, prints[batch.shard], open_shards.pop(batch.shard, []), sizes[batch.shard])
        items += len(batch.index)
        bar.update(len(batch.index))
        t_model += time.perf_counter() - tick
        tick = time.perf_counter()
    if open_shards:
        raise RuntimeError(f"shards ended without their last batch: {sorted(open_shards)}")
    bar.close()
    seconds = time.perf_counter() - start
    return {"rank": info.rank, "shards": len(shards), "items": items, "seconds": round(seconds, 3),
            "items_per_s": round(items / seconds, 2) if seconds > 0 else 0.0,
            "data_wait_s": round(t_data, 3), "model_s": round(t_model, 3)}


def _finish_shard(out: Path, shard: str, fp: str, rows: list, expected: int) -> None:
    if rows:
        index, image, views, status, empty = (np.concatenate(x) for x in zip(*rows))
    else:
        index, image, views = np.zeros(0, np.int64), np.zeros((0, 0), np.float32), np.zeros((0, 0, 0), np.float32)
        status, empty = np.zeros(0, np.int64), np.zeros((0, len(TEXT_FIELDS)), bool)
    if len(index) != expected:
        raise RuntimeError(f"shard {shard}: decoded {len(index)} samples, the manifest lists {expected}")
    store.write_part(out, shard, fp, index, image, views, status, empty)
