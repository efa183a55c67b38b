"""DatasetWriter: normalised items + interactions -> the dataset directory contract.

Readers (one per source format) feed it items in catalog order and then interactions; it
assigns item and user indices, writes shards atomically as they fill, and finishes with
the id maps, the `.inter` file in index space and the manifest. Every input it cannot use
is counted and listed in ``rejects.jsonl`` with its reason: nothing disappears silently.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cliper_dist.convert.images import ImageRejected, reencode_jpeg
from cliper_dist.convert.text import text_fields
from cliper_dist.data import schema
from cliper_dist.data.interactions import Interactions, split_per_user, write_inter
from cliper_dist.data.shards import ShardInfo, write_shard
from cliper_dist.errors import UserError


@dataclass
class WriterOptions:
    shard_size: int = 1000
    max_image_side: int = 512
    jpeg_quality: int = 90
    split_seed: int = 999
    strict: bool = False


@dataclass
class Rejects:
    """Counted, listed inputs that were left out or degraded; strict mode raises on the first."""

    path: Path
    strict: bool
    counts: Counter = field(default_factory=Counter)
    rows: list[dict] = field(default_factory=list)

    def add(self, kind: str, reason: str, where: str, ident: str | None = None) -> None:
        if self.strict:
            raise UserError(f"{where}: {kind}: {reason}")
        self.counts[kind] += 1
        self.rows.append({"kind": kind, "id": ident, "where": where, "reason": reason})

    def write(self) -> None:
        schema.write_jsonl(self.path, self.rows)


class DatasetWriter:
    def __init__(self, out_dir: str | Path, options: WriterOptions = WriterOptions(), source: dict | None = None):
        self.out = Path(out_dir)
        (self.out / schema.SHARD_DIR).mkdir(parents=True, exist_ok=True)
        self.options = options
        self.source = source or {}
        self.rejects = Rejects(self.out / "rejects.jsonl", options.strict)
        self.item_index: dict[str, int] = {}
        self.items: list[dict[str, Any]] = []
        self.shards: list[ShardInfo] = []
        self._pending: list[dict] = []
        self.image_counts: Counter = Counter()

    def add_item(self, item_id: str, raw: dict[str, Any], image: bytes | None, where: str,
                 image_error: str | None = None) -> None:
        """One catalog record; ``image`` is the raw bytes (None: no image or ``image_error``)."""
        if not item_id:
            self.rejects.add("missing_item_id", "record has no item_id", where)
            return
        if item_id in self.item_index:
            self.rejects.add("duplicate_item", f"item_id {item_id!r} seen before; first record kept", where, item_id)
            return
        fields = text_fields(raw)
        if not any(fields.values()):
            self.rejects.add("empty_text", "no title, brand, categories or description (kept, all views Missing)",
                             where, item_id)
        jpeg = None
        if image is not None:
            try:
                jpeg = reencode_jpeg(image, self.options.max_image_side, self.options.jpeg_quality)
            except ImageRejected as e:
                image_error = str(e)
        if jpeg is not None:
            self.image_counts["with_image"] += 1
        elif image_error is not None:
            self.image_counts["corrupt_image"] += 1
            self.rejects.add("bad_image", f"{image_error} (kept without image)", where, item_id)
        else:
            self.image_counts["without_image"] += 1
        index = len(self.items)
        self.item_index[item_id] = index
        self.items.append({"index": index, "item_id": item_id, **fields, "has_image": jpeg is not None})
        self._pending.append({"index": index, "fields": {"item_id": item_id, **fields}, "image": jpeg})
        if len(self._pending) >= self.options.shard_size:
            self._flush()

    def _flush(self) -> None:
        if not self._pending:
            return
        path = self.out / schema.SHARD_DIR / schema.shard_name(len(self.shards))
        self.shards.append(write_shard(path, self._pending))
        self._pending = []

    def finish(self, user_ids: list[str], item_ids: list[str], splits: list[int] | None, where: list[str]) -> dict:
        """Map interactions to index space (unknown items are rejects), split, write everything."""
        self._flush()
        user_index: dict[str, int] = {}
        users, items, kept_splits = [], [], []
        for k, (u, i) in enumerate(zip(user_ids, item_ids)):
            idx = self.item_index.get(i)
            if idx is None:
                self.rejects.add("unknown_item", f"interaction names item {i!r} not in the catalog", where[k], i)
                continue
            users.append(user_index.setdefault(u, len(user_index)))
            items.append(idx)
            if splits is not None:
                kept_splits.append(splits[k])
        user = np.asarray(users, dtype=np.int64)
        item = np.asarray(items, dtype=np.int64)
        if splits is not None:
            inter = Interactions(user, item, np.asarray(kept_splits, dtype=np.int64))
        else:
            inter = split_per_user(user, item, seed=self.options.split_seed)
        write_inter(self.out / schema.INTERACTIONS, inter)
        schema.write_jsonl(self.out / schema.ITEMS, self.items)
        schema.write_jsonl(self.out / schema.USERS, ({"index": v, "user_id": k} for k, v in user_index.items()))
        self.rejects.write()
        manifest = {
            "format_version": 1,
            "source": self.source,
            "options": asdict(self.options),
            "counts": {
                "items": len(self.items),
                **{k: self.image_counts.get(k, 0) for k in ("with_image", "without_image", "corrupt_image")},
                "users": len(user_index),
                "interactions": {"total": len(inter), **inter.counts()},
                "rejects": dict(self.rejects.counts),
            },
            "shards": [asdict(s) for s in self.shards],
        }
        schema.write_json(self.out / schema.MANIFEST, manifest)
        return manifest

