"""Writing the item feature store: per-shard part files and their merge (reading: ``data/features.py``).

Parts are written atomically, one per dataset shard, and carry a fingerprint (shard
checksum, checkpoint hash, views, long-text handling, compute dtype). A rerun keeps a part
only when its fingerprint matches, so resuming after a crash skips finished shards and
never mixes features of two models.
The merge assembles rows by item index into memory-mappable arrays (see ``schema``) and
derives similarity, SUM and SA from the raw view embeddings; Concat is not stored, it is
a reshape of ``text_views`` (``FeatureStore.fused_concat``).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch

from cliper_dist import files
from cliper_dist.data import schema
from cliper_dist.data.fusion import fuse_sa, fuse_sum, view_similarity


def part_path(out_dir: str | Path, shard: str) -> Path:
    return Path(out_dir) / schema.PARTS_DIR / (Path(shard).stem + ".npz")


def write_part(out_dir: str | Path, shard: str, fingerprint: str, index: np.ndarray, image: np.ndarray,
               text_views: np.ndarray, image_status: np.ndarray, empty_fields: np.ndarray,
               chunks: np.ndarray) -> None:
    """One finished shard: index (n,), image (n, D), text_views (n, C, D), flags, chunks per view (n, C)."""
    buf = io.BytesIO()
    np.savez(buf, fingerprint=np.array(fingerprint), index=index, image=image, text_views=text_views,
             image_status=image_status, empty_fields=empty_fields, chunks=chunks)
    files.write_bytes(part_path(out_dir, shard), buf.getvalue())


def part_is_done(out_dir: str | Path, shard: str, fingerprint: str) -> bool:
    path = part_path(out_dir, shard)
    if not path.is_file():
        return False
    try:
        with np.load(path) as part:
            return str(part["fingerprint"]) == fingerprint
    except (OSError, ValueError, KeyError):
        return False  # unreadable: recompute it


def merge_parts(out_dir: str | Path, shards: list[str], num_items: int, tau: float) -> dict:
    """Assemble all parts into item-aligned arrays; every item must appear exactly once."""
    out = Path(out_dir)
    seen = np.zeros(num_items, dtype=bool)
    arrays: dict[str, np.ndarray] = {}
    status = np.zeros(num_items, dtype=np.int8)
    empty_counts = np.zeros(len(schema.TEXT_FIELDS), dtype=np.int64)
    chunked = None
    for shard in shards:
        with np.load(part_path(out, shard)) as part:
            index = part["index"]
            if len(index) == 0:
                continue
            if (index < 0).any() or (index >= num_items).any() or seen[index].any():
                raise RuntimeError(f"part {shard}: item indices out of range or already merged")
            seen[index] = True
            image, views = part["image"], part["text_views"]
            if not arrays:
                n_views, dim = views.shape[1], views.shape[2]
                arrays[schema.IMAGE] = _open(out / f"{schema.IMAGE}.npy", (num_items, dim))
                arrays[schema.TEXT_VIEWS] = _open(out / f"{schema.TEXT_VIEWS}.npy", (n_views, num_items, dim))
            arrays[schema.IMAGE][index] = image
            arrays[schema.TEXT_VIEWS][:, index] = views.transpose(1, 0, 2)
            status[index] = part["image_status"]
            empty_counts += part["empty_fields"].sum(axis=0)
            views_chunked = (part["chunks"] > 1).sum(axis=0)
            chunked = views_chunked if chunked is None else chunked + views_chunked
    if not seen.all():
        missing = np.flatnonzero(~seen)
        raise RuntimeError(f"{len(missing)} items have no features after the merge (first: {missing[:5].tolist()})")
    for a in arrays.values():
        a.flush()
    derived = write_fusions(out, tau)
    with files.atomic_open(out / "image_status.npy", "wb") as f:
        np.save(f, status)
    return {"arrays": [schema.IMAGE, schema.TEXT_VIEWS, *derived, "image_status"], "image_status": status,
            "empty_fields": empty_counts.tolist(), "chunked_views": chunked.tolist()}


def write_fusions(out: Path, tau: float, block: int = 65536) -> list[str]:
    """similarity, SUM and SA fusions, and the MMRec export, computed block by block."""
    image = np.load(out / f"{schema.IMAGE}.npy", mmap_mode="r")
    views = np.load(out / f"{schema.TEXT_VIEWS}.npy", mmap_mode="r")
    n_views, n, dim = views.shape
    sim = _open(out / "similarity.npy", (n, n_views))
    fsum = _open(out / "fused_sum.npy", (n, dim))
    fsa = _open(out / "fused_sa.npy", (n, dim))
    for lo in range(0, n, block):
        hi = min(n, lo + block)
        v = torch.from_numpy(np.array(views[:, lo:hi].transpose(1, 0, 2)))
        s = view_similarity(v, torch.from_numpy(np.array(image[lo:hi])), tau)
        sim[lo:hi] = s.numpy()
        fsum[lo:hi] = fuse_sum(v).numpy()
        fsa[lo:hi] = fuse_sa(v, s).numpy()
    for a in (sim, fsum, fsa):
        a.flush()
    files.copy_file(out / f"{schema.IMAGE}.npy", out / schema.MMREC_IMAGE)
    files.copy_file(out / "fused_sa.npy", out / schema.MMREC_TEXT)
    return ["similarity", "fused_sum", "fused_sa", Path(schema.MMREC_IMAGE).stem, Path(schema.MMREC_TEXT).stem]


def _open(path: Path, shape: tuple[int, ...]) -> np.memmap:
    return np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=shape)
