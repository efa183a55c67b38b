"""The item feature store: per-shard part files, their merge, and read access for training.

Parts are written atomically, one per dataset shard, and carry a fingerprint (shard
checksum, checkpoint hash, views, long-text handling, compute dtype). A rerun keeps a part only when its fingerprint matches,
so resuming after a crash skips finished shards and never mixes features of two models.
The merge assembles rows by item index into memory-mappable arrays (see ``schema``) and
derives similarity, SUM and SA from the raw view embeddings; Concat is not stored, it is
a reshape of ``text_views`` (``FeatureStore.fused_concat``).
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cliper_dist import dirs
from cliper_dist.data.schema import TEXT_FIELDS, atomic_write_bytes, read_json, write_json
from cliper_dist.errors import UserError
from cliper_dist.model.fusion import fuse_sa, fuse_sum, view_similarity

PARTS = "parts"
MANIFEST = "manifest.json"


def part_path(out_dir: str | Path, shard: str) -> Path:
    return Path(out_dir) / PARTS / (Path(shard).stem + ".npz")


def write_part(out_dir: str | Path, shard: str, fingerprint: str, index: np.ndarray, image: np.ndarray,
               text_views: np.ndarray, image_status: np.ndarray, empty_fields: np.ndarray,
               chunks: np.ndarray) -> None:
    """One finished shard: index (n,), image (n, D), text_views (n, C, D), flags, chunks per view (n, C)."""
    buf = io.BytesIO()
    np.savez(buf, fingerprint=np.array(fingerprint), index=index, image=image, text_views=text_views,
             image_status=image_status, empty_fields=empty_fields, chunks=chunks)
    atomic_write_bytes(part_path(out_dir, shard), buf.getvalue())


def remove_stale_temporaries(out_dir: str | Path) -> None:
    """Half-written files of a killed run (``.name.tmpPID``); their finished twins are kept."""
    for tmp in Path(out_dir, PARTS).glob(".*.tmp*"):
        tmp.unlink(missing_ok=True)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


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
    empty_counts = np.zeros(len(TEXT_FIELDS), dtype=np.int64)
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
                arrays["image"] = _open(out / "image.npy", (num_items, dim))
                arrays["text_views"] = _open(out / "text_views.npy", (n_views, num_items, dim))
            arrays["image"][index] = image
            arrays["text_views"][:, index] = views.transpose(1, 0, 2)
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
    np.save(out / "image_status.npy", status)
    return {"arrays": ["image", "text_views", *derived, "image_status"], "image_status": status,
            "empty_fields": empty_counts.tolist(), "chunked_views": chunked.tolist()}


def write_fusions(out: Path, tau: float, block: int = 65536) -> list[str]:
    """similarity, SUM and SA fusions, and the MMRec export, computed block by block."""
    image = np.load(out / "image.npy", mmap_mode="r")
    views = np.load(out / "text_views.npy", mmap_mode="r")
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
    # MMRec reads exactly these two names, rows = itemID.
    _copy(out / "image.npy", out / "image_feat.npy")
    _copy(out / "fused_sa.npy", out / "text_feat.npy")
    return ["similarity", "fused_sum", "fused_sa", "image_feat", "text_feat"]


def _open(path: Path, shape: tuple[int, ...]) -> np.memmap:
    return np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=shape)


def _copy(src: Path, dst: Path) -> None:
    tmp = dst.with_name(f".{dst.name}.tmp{os.getpid()}")
    with open(src, "rb") as fi, open(tmp, "wb") as fo:
        while block := fi.read(1 << 24):
            fo.write(block)
    os.replace(tmp, dst)


@dataclass(frozen=True)
class FeatureStore:
    """Read side: memory-mapped arrays of a finished encode run."""

    path: Path

    @classmethod
    def open(cls, path: str | Path, flag: str = "--features") -> "FeatureStore":
        path = Path(path)
        dirs.expect(path, (dirs.FEATURES,), flag)
        if not (path / MANIFEST).is_file():
            raise UserError(f"not a feature directory (no {MANIFEST}; did the encode job finish?): {path}")
        return cls(path)

    @property
    def manifest(self) -> dict:
        return read_json(self.path / MANIFEST)

    def array(self, name: str) -> np.ndarray:
        path = self.path / f"{name}.npy"
        if not path.is_file():
            raise UserError(f"feature array missing: {path}")
        return np.load(path, mmap_mode="r")

    def fused_concat(self) -> np.ndarray:
        """Concat fusion (N, C * D), built from ``text_views`` (not stored: it would duplicate them)."""
        views = self.array("text_views")
        return np.ascontiguousarray(views.transpose(1, 0, 2)).reshape(views.shape[1], -1)


def write_manifest(out_dir: str | Path, manifest: dict) -> None:
    write_json(Path(out_dir) / MANIFEST, json.loads(json.dumps(manifest, default=_jsonable)))


def _jsonable(x):
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    raise TypeError(type(x))
