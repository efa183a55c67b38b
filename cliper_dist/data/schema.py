"""The on-disk contracts between the jobs: dataset directory and feature store.

Dataset directory (written by ``tools/convert.py``, read by encode and train)::

    DATASET/
      manifest.json          counts, per-shard sample counts and sha256, source and options
      items.jsonl            {"index", "item_id", "title", "brand", "categories", "description", "image",
                              "has_image"}   (image: the catalog's path or URL)
      users.jsonl            {"index", "user_id"}
      interactions.inter     MMRec format in index space: userID<TAB>itemID<TAB>x_label
      rejects.jsonl          {"kind", "id", "where", "reason"}: inputs left out or degraded
      shards/shard-NNNNNN.tar  WebDataset samples: __key__ = item index (9 digits),
                               "json" = the item's fields, "jpg" = image (absent: no image)
      .progress/             the converter's per-shard done records (resume)

Feature store (written by ``launch/encode.py``, read by train)::

    FEATURES/
      manifest.json          model, checkpoint sha256, views, templates, tau, counts, timing
      parts/shard-NNNNNN.npz   one finished shard (atomic), merged once all are present
      image.npy              N x D      image embedding per item
      text_views.npy         C x N x D  one text embedding per view
      similarity.npy         N x C      softmax_j(cos(text_j, image) / tau)
      fused_sum.npy, fused_sa.npy  N x D  parameter-free fusions (Concat is derived from
                             text_views: ``FeatureStore.fused_concat()``)
      image_feat.npy, text_feat.npy     MMRec export (image, SA-fused text)
      image_status.npy       N          0 image used, 1 missing (default image), 2 corrupt
      missing_images.txt     index, item id and reason of every item encoded with the default image
      stats.json             per-rank throughput, data-wait vs model time, missing images
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable

# Text fields of an item, in prompt order. Every reader produces exactly these keys.
TEXT_FIELDS = ("title", "brand", "categories", "description")

SPLIT_TRAIN, SPLIT_VALID, SPLIT_TEST = 0, 1, 2
SPLIT_NAMES = {SPLIT_TRAIN: "train", SPLIT_VALID: "valid", SPLIT_TEST: "test"}

MANIFEST = "manifest.json"
ITEMS = "items.jsonl"
USERS = "users.jsonl"
INTERACTIONS = "interactions.inter"
SHARD_DIR = "shards"
SHARD_PATTERN = "shard-{:06d}.tar"
KEY_DIGITS = 9


def item_key(index: int) -> str:
    """WebDataset ``__key__`` of item ``index``; fixed width so keys sort like indices."""
    return f"{index:0{KEY_DIGITS}d}"


def key_index(key: str) -> int:
    return int(key)


def shard_name(i: int) -> str:
    return SHARD_PATTERN.format(i)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write to a temporary name beside ``path`` and rename: readers never see half a file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_json(path: str | Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


def read_json(path: str | Path) -> Any:
    with open(path) as f:
        return json.load(f)


def write_jsonl(path: str | Path, rows: Iterable[dict]) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def read_jsonl(path: str | Path) -> Iterable[dict]:
    with open(path) as f:
        for line in f:
            if line.strip():
                yield json.loads(line)
