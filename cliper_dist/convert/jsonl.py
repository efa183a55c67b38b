"""Generic catalog: one JSON item per line + CSV/TSV or MMRec `.inter` interactions."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Iterator

from cliper_dist.convert.images import ImageRejected, read_local_image
from cliper_dist.convert.writer import DatasetWriter
from cliper_dist.errors import UserError


def convert_jsonl(catalog: str | Path, writer: DatasetWriter, images: str | Path | None = None,
                  interactions: str | Path | None = None) -> dict:
    catalog = Path(catalog)
    if not catalog.is_file():
        raise UserError(f"catalog not found: {catalog}")
    for line_no, line in enumerate(catalog.open(encoding="utf-8"), start=1):
        where = f"{catalog}:{line_no}"
        if not line.strip():
            continue
        try:
            raw = json.loads(line)
            if not isinstance(raw, dict):
                raise ValueError("not a JSON object")
        except ValueError as e:
            writer.rejects.add("malformed_line", f"not a JSON object ({e})", where)
            continue
        image, error = None, None
        ref = raw.get("image")
        if ref:
            if str(ref).startswith(("http://", "https://")):
                error = "image URLs are not fetched by this reader"
            else:
                try:
                    image = read_local_image(str(ref), images)
                except ImageRejected as e:
                    error = str(e)
        writer.add_item(str(raw.get("item_id") or ""), raw, image, where, image_error=error)
    if interactions is None:
        return writer.finish([], [], None, [])
    users, items, splits, where = [], [], [], []
    for u, i, s, w in read_interactions(interactions):
        users.append(u), items.append(i), splits.append(s), where.append(w)
    has_split = any(s is not None for s in splits)
    if has_split and any(s is None for s in splits):
        raise UserError(f"{interactions}: x_label is present on some rows only")
    return writer.finish(users, items, [int(s) for s in splits] if has_split else None, where)


def read_interactions(path: str | Path) -> Iterator[tuple[str, str, int | None, str]]:
    """(user_id, item_id, x_label or None, where) from CSV/TSV with a header, or MMRec `.inter`."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"interactions file not found: {path}")
    with path.open(newline="", encoding="utf-8") as f:
        sample = f.readline()
        f.seek(0)
        delimiter = "\t" if "\t" in sample else ","
        reader = csv.DictReader(f, delimiter=delimiter)
        names = reader.fieldnames or []
        user_col = next((c for c in ("user_id", "userID") if c in names), None)
        item_col = next((c for c in ("item_id", "itemID") if c in names), None)
        if user_col is None or item_col is None:
            raise UserError(f"{path}: header must name user_id and item_id (or userID, itemID); got {names}")
        for row_no, row in enumerate(reader, start=2):
            label = row.get("x_label")
            if label not in (None, "") and label not in ("0", "1", "2"):
                raise UserError(f"{path}:{row_no}: x_label must be 0, 1 or 2; got {label!r}")
            yield row[user_col], row[item_col], (int(label) if label not in (None, "") else None), f"{path}:{row_no}"
