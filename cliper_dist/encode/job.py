"""The encode job: dataset shards -> per-view CLIP embeddings -> the item feature store.

Rank 0 lists the shards whose part file is missing or stale and broadcasts the list; each
rank encodes its round-robin share (possibly none) with DataLoader workers doing decode and
tokenization; finished shards are written as they complete. After the ranks gather their
stats rank 0 merges the parts. No collective runs inside the loop (progress goes through
the c10d store), so uneven shares cannot deadlock.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch.utils.data import DataLoader

from cliper_dist import config as config_lib
from cliper_dist import dirs, dist, files
from cliper_dist.data import schema
from cliper_dist.data.dataset import DatasetDir
from cliper_dist.data.features import FeatureCounts, FeatureManifest
from cliper_dist.data.shards import assign_shards
from cliper_dist.encode import store
from cliper_dist.encode.encoder import ClipEncoder, autocast, autocast_dtype, load_encoder
from cliper_dist.encode.pipeline import (IMAGE_CORRUPT, IMAGE_MISSING, EncodeBatch, ImageNormalizer, ShardBatches,
                                         default_image, split_preprocess)
from cliper_dist.encode.progress import GlobalProgress
from cliper_dist.encode.views import TextConfig, ViewsConfig
from cliper_dist.errors import UserError

log = dist.log


@dataclass
class EncodeConfig:
    data: str = ""  # dataset directory (tools/convert.py output)
    out: str = ""  # feature directory to write
    model: str = ""  # open_clip model name or model config .json
    pretrained: str = ""  # local checkpoint file or directory ("" = random init, for tests only)
    batch_size: int = 64  # items per forward; a text forward holds >= batch_size * views prompts
    workers: int = 2  # DataLoader worker processes per rank (decode, resize, tokenize)
    prefetch: int = 4  # batches each worker prepares ahead
    threads: int = 0  # torch intra-op threads per rank (0 = leave torch's default / OMP_NUM_THREADS)
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto: cuda (nccl) where visible, else cpu (gloo)
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"  # auto: bf16 autocast on GPU, fp32 on CPU
    tau: float = 0.1  # eq. 2 temperature; changing it on a rerun re-merges without re-encoding
    default_image: str = ""  # image used for items without a usable one ("" = mid-grey)
    views: ViewsConfig = field(default_factory=ViewsConfig)
    text: TextConfig = field(default_factory=TextConfig)

    def validate(self) -> None:
        for key in ("data", "out", "model"):
            if not getattr(self, key):
                raise UserError(f"encode: '{key}' is required (--{key} or {key}=...)")
        if self.batch_size < 1 or self.workers < 0 or self.prefetch < 1 or self.threads < 0:
            raise UserError("encode: batch_size and prefetch must be >= 1, workers and threads >= 0")
        if self.tau <= 0:
            raise UserError("encode: tau must be > 0")
        self.views.validate()
        self.text.validate()


def fingerprint(cfg: EncodeConfig, encoder: ClipEncoder, shard_sha: str, dtype: torch.dtype) -> str:
    """What a part depends on: a part with another fingerprint is stale and recomputed.

    tau is not part of it: similarity and fusions are computed at merge time from the
    stored raw view embeddings.
    """
    key = json.dumps({"shard": shard_sha, "model": encoder.model_name, "ckpt": encoder.checkpoint_sha256,
                      "views": asdict(cfg.views), "text": asdict(cfg.text), "context": encoder.context_length,
                      "dtype": str(dtype), "default_image": cfg.default_image}, sort_keys=True)
    return hashlib.sha256(key.encode()).hexdigest()[:32]


def run(cfg: EncodeConfig, info: dist.DistInfo) -> FeatureManifest | None:
    """Encode every pending shard, then (rank 0) merge; returns the manifest on rank 0."""
    started = time.perf_counter()
    cfg.validate()
    dataset = DatasetDir.open(cfg.data)
    if dataset.num_items == 0:
        raise UserError(f"{cfg.data}: the dataset has no items")
    with_image = dataset.manifest["counts"].get("with_image", dataset.num_items)
    if info.is_main and with_image < dataset.num_items / 2:
        log.warning("encode: only %d of %d items have an image; the others are encoded with the default image "
                    "(%s/missing_images.txt will list them, with the reason of each)", with_image, dataset.num_items,
                    cfg.out)
    dirs.check_output(cfg.out, dirs.FEATURES, {"--data": cfg.data, "--pretrained": cfg.pretrained})
    dist.check_shared_dir(cfg.out)
    out = Path(cfg.out)
    (out / schema.PARTS_DIR).mkdir(parents=True, exist_ok=True)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    encoder = load_encoder(cfg.model, cfg.pretrained or None, info.device, cfg.text.context_length,
                           cfg.text.keep_positions)
    dtype = autocast_dtype(info.device, cfg.precision)
    shas = {s["name"]: s["sha256"] for s in dataset.manifest["shards"]}
    prints = {name: fingerprint(cfg, encoder, shas[name], dtype) for name in dataset.shard_names}
    plan = None
    if info.is_main:
        config_lib.save(cfg, out / "config.yaml")
        files.remove_temporaries(out / schema.PARTS_DIR)
        pending = [n for n in dataset.shard_names if not store.part_is_done(out, n, prints[n])]
        log.info("encode: %d items in %d shards (%d to encode, %d already done), model %s (D=%d, %d text "
                 "positions), %d views, world size %d", dataset.num_items, len(dataset.shard_names), len(pending),
                 len(dataset.shard_names) - len(pending), encoder.model_name, encoder.embed_dim,
                 encoder.context_length, len(cfg.views.names), info.world_size)
        plan = (pending, uuid.uuid4().hex)
    pending, run_id = dist.broadcast_object(plan)
    loaded = time.perf_counter()

    mine = assign_shards(pending, info.rank, info.world_size)
    progress = GlobalProgress(sum(dataset.shard_sizes[n] for n in pending), run_id, info.world_size)
    stats = encode_shards(cfg, encoder, dataset, mine, prints, out, info, dtype, progress)
    all_stats = dist.all_gather_object(stats)  # after the loop: every part of this run is on disk
    if not info.is_main:
        return None
    encoded = time.perf_counter()
    merged = store.merge_parts(out, dataset.shard_names, dataset.num_items, cfg.tau)
    status = merged.pop("image_status")
    missing_ids = np.flatnonzero(status == IMAGE_MISSING)
    corrupt_ids = np.flatnonzero(status == IMAGE_CORRUPT)
    write_missing_images(out, dataset, status)
    items_encoded = sum(s["items"] for s in all_stats)
    done = time.perf_counter()
    timing = {"load_s": round(loaded - started, 3), "encode_s": round(encoded - loaded, 3),
              "merge_s": round(done - encoded, 3), "total_s": round(done - started, 3),
              "items_encoded": items_encoded, "shards_encoded": len(pending),
              "items_per_s": round(items_encoded / (encoded - loaded), 2) if items_encoded else 0.0}
    manifest = FeatureManifest(
        model=encoder.model_name, model_arg=cfg.model, checkpoint=encoder.checkpoint,
        checkpoint_sha256=encoder.checkpoint_sha256, embed_dim=encoder.embed_dim,
        context_length=encoder.context_length, views=list(cfg.views.names), templates=dict(cfg.views.templates),
        missing_text=cfg.views.missing, text=asdict(cfg.text), tau=cfg.tau, dtype="float32",
        compute_dtype=str(dtype).removeprefix("torch."), precision=cfg.precision,
        dataset=str(Path(cfg.data).resolve()),
        counts=FeatureCounts(items=dataset.num_items, missing_image=len(missing_ids), corrupt_image=len(corrupt_ids),
                             empty_text_fields=dict(zip(schema.TEXT_FIELDS, merged["empty_fields"])),
                             chunked_views=dict(zip(cfg.views.names, merged["chunked_views"]))),
        arrays=merged["arrays"],
        derived={"fused_concat": "text_views.transpose(1, 0, 2).reshape(N, C * D): not stored, "
                                 "FeatureStore.fused_concat() builds it"},
        timing=timing)
    manifest.write(out)
    files.write_json(out / "stats.json", {"world_size": info.world_size, **timing, "progress_items": progress.shown,
                                    "ranks": all_stats})
    log.info("encode: wrote %s (%d items; %d encoded at %.1f items/s; %d without image, %d corrupt image)",
             out, dataset.num_items, items_encoded, timing["items_per_s"], len(missing_ids), len(corrupt_ids))
    return manifest


def write_missing_images(out: Path, dataset: DatasetDir, status: np.ndarray) -> None:
    """``missing_images.txt``: index, item id and reason of every item encoded with the default image."""
    flagged = {int(i): s for i, s in zip(np.flatnonzero(status != 0), status[status != 0])}
    ids: dict[int, str] = {}
    if flagged and (dataset.path / schema.ITEMS).is_file():
        ids = {row["index"]: row.get("item_id", "") for row in files.read_jsonl(dataset.path / schema.ITEMS)
               if row["index"] in flagged}
    reason = {IMAGE_MISSING: "missing", IMAGE_CORRUPT: "corrupt"}
    lines = "".join(f"{i}\t{ids.get(i, '')}\t{reason[int(s)]}\n" for i, s in sorted(flagged.items()))
    files.write_text(out / "missing_images.txt", lines)


@dataclass
class _Launched:
    """One batch whose forward has been queued; on GPU its results are still being copied."""

    batch: EncodeBatch
    image: torch.Tensor | None  # (B, D) float32 on the CPU once ``ready`` has fired
    text: torch.Tensor | None  # (B, C, D)
    ready: torch.cuda.Event | None


def launch_batch(encoder: ClipEncoder, normalizer: ImageNormalizer, batch: EncodeBatch, num_views: int,
                 device: torch.device, dtype: torch.dtype) -> _Launched:
    """Queue one batch's image and text forwards (raw, not L2-normalised, like CLIPER).

    Chunks of one (item, view) are summed in float32. On GPU the results are copied back
    asynchronously, so the next batch is queued before this one is waited for.
    """
    b = len(batch.index)
    if b == 0:
        return _Launched(batch, None, None, None)
    with torch.inference_mode(), autocast(device, dtype):
        image = encoder.model.encode_image(normalizer(batch.image, device)).float()
        chunks = encoder.encode_text(batch.tokens, device, groups=num_views).float()
        if len(chunks) == b * num_views:  # one chunk per view: owner is 0..B*C-1 in order
            text = chunks
        else:
            text = torch.zeros(b * num_views, chunks.shape[1], device=device).index_add_(
                0, batch.owner.to(device, non_blocking=True), chunks)
        text = text.view(b, num_views, -1)
    if device.type != "cuda":
        return _Launched(batch, image, text, None)
    image, text = image.to("cpu", non_blocking=True), text.to("cpu", non_blocking=True)
    ready = torch.cuda.Event()
    ready.record()
    return _Launched(batch, image, text, ready)


def encode_shards(cfg: EncodeConfig, encoder: ClipEncoder, dataset: DatasetDir, shards: list[str],
                  prints: dict[str, str], out: Path, info: dist.DistInfo, dtype: torch.dtype,
                  progress: GlobalProgress) -> dict:
    """Encode this rank's shards; write each one's part as soon as its last batch is done."""
    sizes = dataset.shard_sizes
    image_stage, normalizer = split_preprocess(encoder.preprocess)
    batches = ShardBatches([(n, str(dataset.shard_path(n))) for n in shards], image_stage, encoder.tokenizer,
                           encoder.context_length, cfg.views, cfg.text, cfg.batch_size,
                           default_image(cfg.default_image))
    workers = min(cfg.workers, len(shards))
    loader = DataLoader(batches, batch_size=None, num_workers=workers, pin_memory=info.device.type == "cuda",
                        prefetch_factor=cfg.prefetch if workers else None)
    num_views = len(cfg.views.names)
    open_shards: dict[str, list] = {}
    counts = {"items": 0, "missing_image": 0, "corrupt_image": 0, "chunks": 0}
    t_data = t_model = t_write = 0.0

    def land(job: _Launched) -> None:
        nonlocal t_write
        batch = job.batch
        if job.ready is not None:
            job.ready.synchronize()
        if job.image is not None:
            chunks = torch.bincount(batch.owner, minlength=len(batch.index) * num_views).view(-1, num_views)
            open_shards.setdefault(batch.shard, []).append(
                (batch.index.numpy(), job.image.numpy(), job.text.numpy(), batch.image_status.numpy(),
                 batch.empty_fields.numpy(), chunks.numpy()))
            counts["chunks"] += len(batch.owner)
        n = len(batch.index)
        counts["items"] += n
        counts["missing_image"] += int((batch.image_status == IMAGE_MISSING).sum())
        counts["corrupt_image"] += int((batch.image_status == IMAGE_CORRUPT).sum())
        if batch.last:
            tick = time.perf_counter()
            _finish_shard(out, batch.shard, prints[batch.shard], open_shards.pop(batch.shard, []), sizes[batch.shard],
                          num_views)
            t_write += time.perf_counter() - tick
        progress.update(n)

    start = tick = time.perf_counter()
    inflight: _Launched | None = None
    for batch in loader:
        now = time.perf_counter()
        t_data, tick = t_data + now - tick, now
        launched = launch_batch(encoder, normalizer, batch, num_views, info.device, dtype)
        if inflight is not None:
            land(inflight)
        inflight = launched
        now = time.perf_counter()
        t_model, tick = t_model + now - tick, now
    if inflight is not None:
        land(inflight)
    t_model += time.perf_counter() - tick
    if open_shards:
        raise RuntimeError(f"shards ended without their last batch: {sorted(open_shards)}")
    seconds = time.perf_counter() - start
    progress.finish()
    return {"rank": info.rank, "shards": len(shards), **counts, "seconds": round(seconds, 3),
            "items_per_s": round(counts["items"] / seconds, 2) if seconds > 0 else 0.0,
            "data_wait_s": round(t_data, 3), "model_s": round(t_model - t_write, 3), "write_s": round(t_write, 3),
            "workers": workers, "threads": torch.get_num_threads()}


def _finish_shard(out: Path, shard: str, fp: str, rows: list, expected: int, num_views: int) -> None:
    if rows:
        index, image, views, status, empty, chunks = (np.concatenate(x) for x in zip(*rows))
    else:
        index, image, views = np.zeros(0, np.int64), np.zeros((0, 0), np.float32), np.zeros((0, 0, 0), np.float32)
        status, empty = np.zeros(0, np.int64), np.zeros((0, len(schema.TEXT_FIELDS)), bool)
        chunks = np.zeros((0, num_views), np.int64)
    if len(index) != expected:
        raise RuntimeError(f"shard {shard}: decoded {len(index)} samples, the manifest lists {expected}")
    store.write_part(out, shard, fp, index, image, views, status, empty, chunks)
