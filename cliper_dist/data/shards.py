"""WebDataset shards of items: writing them atomically, listing and splitting them for readers."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from cliper_dist.data.schema import atomic_write_bytes, item_key


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
    atomic_write_bytes(path, data)
    indices = [s["index"] for s in samples]
    return ShardInfo(path.name, len(samples), min(indices, default=-1), max(indices, default=-1),
                     hashlib.sha256(data).hexdigest())


def assign_shards(names: list[str], rank: int, world_size: int) -> list[str]:
    """Round-robin shards over ranks: disjoint and complete, and a rank may get none."""
    return names[rank::world_size]


def read_shard(path: str | Path) -> Iterator[dict]:
    """Samples of one tar, whole, as dicts of bytes keyed by extension plus ``__key__``.

    No node or worker splitting: callers assign whole shards. (``webdataset.WebDataset`` of a
    single url splits it by worker and hands every DataLoader worker but one an empty shard.)
    """
    from webdataset.tariterators import tarfile_samples  # here: webdataset imports torch

    yield from tarfile_samples([{"url": str(path)}])
