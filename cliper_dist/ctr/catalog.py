"""The catalog's categorical fields as sparse ids: a vocabulary per field, built from ``items.jsonl``.

- ``brand``: one id per item.
- ``categories``: a multi-hot bag per item, one id per category path and every prefix of it
  (``Baby``, ``Baby > Feeding``, ``Baby > Feeding > Bottles``): items of a rare leaf still share
  the ids of its parents. A converted dataset's ``items.jsonl`` holds the paths as
  ``category_paths``; one converted before that key existed has only ``categories``, its paths'
  unique names joined by ", ", which reads as one path (exact for an item with one path).

Ids: 0 = the item has no value, 1 = out of vocabulary (a value held by fewer than ``min_count``
items), 2.. = the vocabulary in order of decreasing count (ties by value). Every bag holds at least
one id, so every sample has the same number of non-empty bags.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cliper_dist.data import schema
from cliper_dist.errors import UserError

FIELDS = ("brand", "categories")
MISSING, OOV = 0, 1
PATH_SEP = " > "


@dataclass
class FieldIds:
    """Item ``i``'s ids of one field are ``values[offsets[i]:offsets[i + 1]]``."""

    name: str
    offsets: np.ndarray  # (I + 1,) int64
    values: np.ndarray  # int64
    vocab: list[str]  # id 2 + k is vocab[k]
    oov_items: int  # items holding at least one out-of-vocabulary value

    @property
    def num_ids(self) -> int:
        return len(self.vocab) + 2

    def bags(self, items: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(values, lengths) of the bags of ``items``, in order."""
        lo, hi = self.offsets[items], self.offsets[items + 1]
        lengths = hi - lo
        index = np.repeat(lo - np.concatenate(([0], np.cumsum(lengths)[:-1])), lengths) + np.arange(lengths.sum())
        return self.values[index], lengths


def _field_values(item: dict, field: str) -> list[str]:
    if field == "brand":
        brand = item.get("brand")
        return [str(brand).strip()] if brand and str(brand).strip() else []
    paths = item.get("category_paths", item.get("categories")) or []
    if isinstance(paths, str):  # an older dataset directory: convert's unique names joined by ", "
        paths = [paths.split(", ")]
    out: list[str] = []
    for path in paths:
        parts = [str(p).strip() for p in (path if isinstance(path, list) else [path]) if str(p).strip()]
        out += [PATH_SEP.join(parts[:k]) for k in range(1, len(parts) + 1)]
    return list(dict.fromkeys(out))  # distinct, in order


def read_items(data: str | Path, num_items: int) -> list[dict]:
    """``items.jsonl`` of a dataset directory, by item index."""
    path = Path(data) / schema.ITEMS
    if not path.is_file():
        raise UserError(f"{data}: categorical fields need the dataset's {schema.ITEMS} (a dataset directory of "
                        "tools/convert.py); set model.fields=[] for ids only")
    items: list[dict | None] = [None] * num_items
    with path.open() as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                index = int(row["index"])
            except (ValueError, KeyError, TypeError) as e:
                raise UserError(f"{path}:{n}: not an item record ({e})") from None
            if not 0 <= index < num_items:
                raise UserError(f"{path}:{n}: item index {index} outside [0, {num_items})")
            items[index] = row
    missing = [i for i, row in enumerate(items) if row is None]
    if missing:
        raise UserError(f"{path}: {len(missing)} of {num_items} items have no record (first index {missing[0]})")
    return items  # type: ignore[return-value]


def build_field(items: list[dict], field: str, min_count: int) -> FieldIds:
    """The vocabulary of ``field`` over the catalog and every item's bag; refuses a field that no
    item of the catalog holds."""
    if field not in FIELDS:
        raise UserError(f"model.fields: unknown categorical field {field!r} (known: {', '.join(FIELDS)})")
    per_item = [_field_values(item, field) for item in items]
    counts = Counter(v for values in per_item for v in values)
    if not counts:
        raise UserError(f"model.fields: no item of the catalog has a {field!r} value; drop it from model.fields")
    vocab = sorted((v for v, c in counts.items() if c >= min_count), key=lambda v: (-counts[v], v))
    ids = {v: k + 2 for k, v in enumerate(vocab)}
    offsets = np.zeros(len(items) + 1, dtype=np.int64)
    values: list[int] = []
    oov_items = 0
    for i, item_values in enumerate(per_item):
        bag = [ids.get(v, OOV) for v in item_values] or [MISSING]
        oov_items += OOV in bag
        bag = list(dict.fromkeys(bag))  # several rare paths share one OOV id once
        values += bag
        offsets[i + 1] = offsets[i] + len(bag)
    return FieldIds(field, offsets, np.asarray(values, dtype=np.int64), vocab, oov_items)


def build_fields(data: str | Path, num_items: int, fields: list[str], min_count: int) -> list[FieldIds]:
    if not fields:
        return []
    items = read_items(data, num_items)
    return [build_field(items, field, min_count) for field in fields]
