"""WebDataset shards of items: writing them atomically, listing and splitting them for readers."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from cliper_dist.data.schema import SHARD_DIR, item_key, shard_name


@dataclass(frozen=True)
class ShardInfo:
    name: str
    samples: int
    first_index: int
    last_index: int
    sha256: str


def write_shard(path: str | Path, samples: list[dict]) -> ShardInfo:
    """Write one tar of item samples ({"index", "fields", "image": bytes | None}) atomically.

    The tar is built in memory, hashed, then renamed into place, so a crash never leaves a
    truncated shard under its final name and a rerun can trust every shard it finds.
    """
    path = Path(path)
    buf = io.BytesIO()
    # Plain tarfile rather than webdataset's TarWriter: importing webdataset pulls in torch
    # (~2 s and a few 100 MB in every converter worker). Fixed mtime/mode: same input, same bytes.
    with tarfile.open(fileobj=buf, mode="w|", format=tarfile.USTAR_FORMAT) as tar:
        for s in samples:
            members = {"json": json.dumps(s["fields"], ensure_ascii=False).encode()}
            if s.get("image") is not None:
                members["jpg"] = s["image"]
            for ext in sorted(members):
                info = tarfile.TarInfo(f"{item_key(s['index'])}.{ext}")
                info.size, info.mtime, info.mode = len(members[ext]), 0, 0o444
                tar.addfile(info, io.BytesIO(members[ext]))
    data = buf.getvalue()
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    indices = [s["index"] for s in samples]
    return ShardInfo(path.name, len(samples), min(indices, default=-1), max(indices, default=-1),
                     hashlib.sha256(data).hexdigest())


def shard_paths(dataset_dir: str | Path, names: list[str]) -> list[str]:
    return [str(Path(dataset_dir) / SHARD_DIR / n) for n in names]


def assign_shards(names: list[str], rank: int, world_size: int) -> list[str]:
    """Round-robin shards over ranks: disjoint and complete, and a rank may get none."""
    return names[rank::world_size]


def iter_shard(path: str | Path) -> Iterator[dict]:
    """Raw samples of one tar as dicts of bytes keyed by extension, plus ``__key__``.

    The caller has already chosen this shard for its rank and worker, so webdataset's own
    node and worker splitting is switched off (it would hand worker k>0 nothing).
    """
    import webdataset as wds  # here, not at the top: it imports torch, which writers do not need

    yield from wds.WebDataset(str(path), shardshuffle=False, nodesplitter=None, workersplitter=None,
                              empty_check=False)


def default_shard_path(dataset_dir: str | Path, i: int) -> Path:
    return Path(dataset_dir) / SHARD_DIR / shard_name(i)
