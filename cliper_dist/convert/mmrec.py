"""MMRec data folders: keep MMRec's item and user ids, so features line up row for row.

Item index = MMRec itemID (from ``i_id_mapping.csv``: asin, itemID), user index = MMRec
userID, and the `.inter` rows come out in their order with x_label as given. Text comes
from an optional metadata file keyed by asin (or itemID): a JSON-lines file such as
``partial_item_text.jsonl`` or an Amazon 2014 ``meta_X.json.gz``; items it does not cover
are kept with empty text (counted as ``without_text``, not rejected). Images: a file in
the image directory named by asin or itemID, else the URL from ``X_url.csv`` (itemID,
asin, imUrl) or the metadata's imUrl, fetched only with a downloader.

Metadata covering the items is held in memory until the items are written in index
order; it is bounded by the item map (MMRec data sets have thousands to a few 100k items).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from cliper_dist.convert.images import index_image_dir
from cliper_dist.convert.interactions import SourceInteractions, read_table
from cliper_dist.convert.rejects import Rejects
from cliper_dist.convert.sources import iter_records, iter_table
from cliper_dist.convert.writer import DatasetWriter
from cliper_dist.data.schema import TEXT_FIELDS
from cliper_dist.errors import UserError

ITEM_NAMES, USER_NAMES = ("asin", "item_id"), ("user_id", "reviewerID")  # name columns of i_/u_id_mapping.csv


def convert_mmrec(writer: DatasetWriter, inter: str | Path, item_map: str | Path, user_map: str | Path | None = None,
                  meta: str | Path | None = None, urls: str | Path | None = None,
                  images: str | Path | None = None) -> dict | None:
    asins, map_lines = read_id_map(item_map, ITEM_NAMES, "itemID")
    index_of = {a: i for i, a in enumerate(asins)}
    user_names = read_id_map(user_map, USER_NAMES, "userID")[0] if user_map is not None else None
    writer.set_interactions(_mmrec_interactions(read_table(inter, writer.rejects), asins, user_names, writer.rejects))

    extra = {"meta_records_outside_item_map": 0, "url_rows_outside_item_map": 0}
    texts: dict[int, tuple[dict[str, Any], str]] = {}  # index -> (the record's text fields and imUrl, where)
    if meta is not None:
        for _, where, record in iter_records(meta, writer.rejects):
            index = _record_index(record, index_of)
            if index is None:
                extra["meta_records_outside_item_map"] += 1
            elif index in texts:
                writer.rejects.add("duplicate_item", f"second metadata record for item {asins[index]!r}; the first "
                                   "is kept", where, asins[index])
            else:
                texts[index] = ({k: record.get(k) for k in (*TEXT_FIELDS, "imUrl")}, where)
    image_urls: dict[int, str] = {}
    if urls is not None:
        for _, _, row in iter_table(urls, writer.rejects):
            index = _record_index(row, index_of)
            if index is None:
                extra["url_rows_outside_item_map"] += 1
            elif row.get("imUrl"):
                image_urls[index] = row["imUrl"]
    image_files = index_image_dir(images) if images is not None else {}

    for index, asin in enumerate(asins):
        described = index in texts
        record, where = texts.pop(index) if described else ({}, f"{item_map}:{map_lines[index]}")
        image = (image_files.get(asin) or image_files.get(str(index)) or image_urls.get(index)
                 or record.get("imUrl"))
        assigned = writer.add_item(asin, record, image, where, described=described)
        assert assigned == index, "the item map was checked to hold unique, non-empty asins"
    return writer.finish(extra)


def read_id_map(path: str | Path, name_cols: tuple[str, ...], id_col: str) -> tuple[list[str], list[int]]:
    """Names by id, and their line numbers, from an MMRec map (e.g. ``asin<TAB>itemID``); the
    one reader of id maps (convert and ``tools/check_mmrec.py``).

    The map defines the id space that everything else is checked against, so a defect is an
    error rather than a reject. Ids must number the rows 0..N-1.
    """
    rows = list(iter_table(path, None))
    if not rows:
        raise UserError(f"{path}: no rows")
    name_col = next((c for c in name_cols if c in rows[0][2]), None)
    if name_col is None or id_col not in rows[0][2]:
        swapped = " (the user and item maps swapped?)" if {"userID", "itemID"} & set(rows[0][2]) else ""
        raise UserError(f"{path}: header must name {id_col} and one of {', '.join(name_cols)}; found "
                        f"{list(rows[0][2])[:4]}{swapped}")
    names: list[str] = [""] * len(rows)
    lines = [0] * len(rows)
    for line_no, where, row in rows:
        i = _as_int(row[id_col])
        if not 0 <= i < len(rows):
            raise UserError(f"{where}: {id_col} {row[id_col]!r} is not in 0..{len(rows) - 1}; "
                            "the ids must number the rows 0..N-1")
        if lines[i]:
            raise UserError(f"{where}: {id_col} {i} appears twice (first at line {lines[i]})")
        names[i], lines[i] = row[name_col].strip(), line_no
        if not names[i]:
            raise UserError(f"{where}: empty {name_col}")
    if len(set(names)) != len(names):
        raise UserError(f"{path}: repeated {name_col} values; each must map to exactly one {id_col}")
    return names, lines


def _record_index(record: dict, index_of: dict[str, int]) -> int | None:
    """A record's item index by asin, else by itemID (partial_item_text.jsonl holds both)."""
    if "asin" in record:
        return index_of.get(str(record["asin"]).strip())
    try:
        index = int(record["itemID"])
    except (KeyError, TypeError, ValueError):
        return None
    return index if 0 <= index < len(index_of) else None


def _mmrec_interactions(src: SourceInteractions, asins: list[str], user_names: list[str] | None,
                        rejects: Rejects) -> SourceInteractions:
    """Ids as MMRec numbers them: user code = userID, item code -> the asin of its itemID.

    Rows with a non-integer or out-of-range userID are rejects; itemIDs outside the item map
    become ``unknown_item`` rejects in the writer like any other unknown item.
    """
    user_num = np.array([_as_int(u) for u in src.user_ids], dtype=np.int64)[src.user] if len(src) else src.user
    n_users = len(user_names) if user_names is not None else int(user_num.max(initial=-1)) + 1
    bad = (user_num < 0) | (user_num >= n_users)
    for row in np.flatnonzero(bad):
        reason = (f"userID {src.user_ids[src.user[row]]!r} is not in the user map" if user_names is not None
                  else f"userID {src.user_ids[src.user[row]]!r} is not a non-negative integer")
        rejects.add("unknown_user", reason, f"{src.path}:{src.line[row]}")
    item_ids = [asins[i] if 0 <= (i := _as_int(s)) < len(asins) else f"itemID {s}" for s in src.item_ids]
    names = user_names if user_names is not None else [str(u) for u in range(n_users)]
    out = SourceInteractions(src.path, user_num, src.item, src.line, src.split, src.timestamp, names, item_ids,
                             fixed_users=True)
    return out.subset(~bad)


def _as_int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        return -1
