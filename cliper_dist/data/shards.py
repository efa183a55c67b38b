"""WebDataset shards of items: writing them atomically, reading them, splitting them over ranks."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from cliper_dist.data.schema import item_key
from cliper_dist.files import write_bytes


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
    write_bytes(path, data)
    indices = [s["index"] for s in samples]
    return ShardInfo(path.name, len(samples), min(indices, default=-1), max(indices, default=-1),
                     hashlib.sha256(data).hexdigest())


def assign_shards(names: list[str], rank: int, world_size: int) -> list[str]:
    """Round-robin shards over ranks: disjoint and complete, and a rank may get none."""
    return names[rank::world_size]


def read_shard(shard: str | Path | bytes) -> Iterator[dict]:
    """The samples of one tar (a path, or its bytes) in order, as WebDataset groups them:
    ``{"__key__": key, extension: bytes, ...}``, members sharing the name before the first dot.

    The one reader of shards (encode, verify, tools). Whole shards, no node or worker
    splitting: callers assign shards. Plain tarfile, streamed: ``webdataset.WebDataset`` reads
    the same samples (a test checks it), but importing it pulls in torch, and over a single
    url it splits by worker and hands every DataLoader worker but one an empty shard.
    """
    source = {"fileobj": io.BytesIO(shard)} if isinstance(shard, bytes) else {"name": str(shard)}
    sample: dict | None = None
    with tarfile.open(mode="r|", **source) as tar:
        for member in tar:
            if not member.isfile():
                continue
            key, _, ext = member.name.partition(".")
            if sample is not None and key != sample["__key__"]:
                yield sample
                sample = None
            sample = sample or {"__key__": key}
            sample[ext] = tar.extractfile(member).read()
    if sample is not None:
        yield sample
