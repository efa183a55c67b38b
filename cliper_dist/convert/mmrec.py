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

import itertools
from array import array
from pathlib import Path
from typing import Any

import numpy as np

from cliper_dist.convert.images import index_image_dir
from cliper_dist.convert.ids import CHUNK, IdCodes, encode
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
    user_names = read_id_map(user_map, USER_NAMES, "userID")[0] if user_map is not None else None
    writer.set_interactions(_mmrec_interactions(read_table(inter, writer.rejects), asins, user_names, writer.rejects))

    texts: dict[int, tuple[dict[str, Any], str]] = {}  # index -> (the record's text fields and imUrl, where)
    ledger = writer.rejects.ledger
    if meta is not None:
        meta_tally = ledger.tally(meta)
        for _, where, record in iter_records(meta, writer.rejects):
            index = _record_index(record, asins)
            if index is None:
                meta_tally.filtered["outside_item_map"] += 1
            elif index in texts:
                writer.rejects.add("duplicate_item", f"second metadata record for item {asins[index]!r}; the first "
                                   "is kept", where, asins[index])
            else:
                texts[index] = ({k: record.get(k) for k in (*TEXT_FIELDS, "imUrl")}, where)
                meta_tally.kept += 1
    image_urls: dict[int, str] = {}
    if urls is not None:
        url_tally = ledger.tally(urls)
        for _, _, row in iter_table(urls, writer.rejects):
            index = _record_index(row, asins)
            if index is None:
                url_tally.filtered["outside_item_map"] += 1
                continue
            url_tally.kept += 1
            if row.get("imUrl"):
                image_urls[index] = row["imUrl"]
    image_files = index_image_dir(images) if images is not None else {}

    for index, asin in enumerate(asins):
        described = index in texts
        record, where = texts.pop(index) if described else ({}, f"{item_map}:{map_lines[index]}")
        image = (image_files.get(asin) or image_files.get(str(index)) or image_urls.get(index)
                 or record.get("imUrl"))
        assigned = writer.add_item(asin, record, image, where, described=described)
        assert assigned == index, "the item map was checked to hold unique, non-empty asins"
    def outside(path) -> int:  # the input's rows that name no item of the map (counted in the ledger)
        return ledger.tally(path).filtered["outside_item_map"] if path is not None else 0

    return writer.finish({"meta_records_outside_item_map": outside(meta), "url_rows_outside_item_map": outside(urls)})


def read_id_map(path: str | Path, name_cols: tuple[str, ...], id_col: str) -> tuple[IdCodes, np.ndarray]:
    """Names by id (the code of a name is its id), and their line numbers, from an MMRec map
    (e.g. ``asin<TAB>itemID``); the one reader of id maps (convert and ``tools/check_mmrec.py``).
    Streamed into arrays: a map of a million users holds no Python object per user.

    The map defines the id space that everything else is checked against, so a defect is an
    error rather than a reject. Ids must number the rows 0..N-1.
    """
    rows = iter_table(path, None)
    first = next(rows, None)
    if first is None:
        raise UserError(f"{path}: no rows")
    name_col = next((c for c in name_cols if c in first[2]), None)
    if name_col is None or id_col not in first[2]:
        swapped = " (the user and item maps swapped?)" if {"userID", "itemID"} & set(first[2]) else ""
        raise UserError(f"{path}: header must name {id_col} and one of {', '.join(name_cols)}; found "
                        f"{list(first[2])[:4]}{swapped}")
    ids, lines, blocks, names = array("q"), array("q"), [], []
    for line_no, where, row in itertools.chain([first], rows):
        names.append(row[name_col].strip())
        if not names[-1]:
            raise UserError(f"{where}: empty {name_col}")
        ids.append(_as_int(row[id_col]))
        if ids[-1] < 0:
            raise UserError(f"{where}: {id_col} {row[id_col]!r} is not a non-negative integer; the ids must number "
                            "the rows 0..N-1")
        lines.append(line_no)
        if len(names) >= CHUNK:
            blocks.append(encode(names))
            names = []
    ids, lines = np.frombuffer(ids, dtype=np.int64), np.frombuffer(lines, dtype=np.int64)
    bad = np.flatnonzero(ids >= len(ids))
    if len(bad):
        raise UserError(f"{path}:{lines[bad[0]]}: {id_col} '{ids[bad[0]]}' is not in 0..{len(ids) - 1}; "
                        "the ids must number the rows 0..N-1")
    order = np.argsort(ids, kind="stable")
    repeated = np.flatnonzero(ids[order][1:] == ids[order][:-1])
    if len(repeated):  # the earliest line that repeats an id, and that id's first line
        again = repeated[np.argmin(lines[order[repeated + 1]])]
        raise UserError(f"{path}:{lines[order[again + 1]]}: {id_col} {ids[order[again]]} appears twice (first at "
                        f"line {lines[order[again]]})")
    try:
        return IdCodes(np.concatenate(blocks + [encode(names)])[order]), lines[order]
    except ValueError:
        raise UserError(f"{path}: repeated {name_col} values; each must map to exactly one {id_col}") from None


def _record_index(record: dict, asins: IdCodes) -> int | None:
    """A record's item index by asin, else by itemID (partial_item_text.jsonl holds both)."""
    if "asin" in record:
        index = asins.get(str(record["asin"]).strip())
        return index if index >= 0 else None
    try:
        index = int(record["itemID"])
    except (KeyError, TypeError, ValueError):
        return None
    return index if 0 <= index < len(asins) else None


def _mmrec_interactions(src: SourceInteractions, asins: IdCodes, user_names: IdCodes | None,
                        rejects: Rejects) -> SourceInteractions:
    """Ids as MMRec numbers them: user code = userID, item code -> the asin of its itemID.

    Rows with a non-integer or out-of-range userID are rejects; itemIDs outside the item map
    become ``unknown_item`` rejects in the writer like any other unknown item.
    """
    user_num = _as_ints(src.user_ids.names)[src.user]
    n_users = len(user_names) if user_names is not None else int(user_num.max(initial=-1)) + 1
    bad = (user_num < 0) | (user_num >= n_users)
    for row in np.flatnonzero(bad):
        reason = (f"userID {src.user_ids[src.user[row]]!r} is not in the user map" if user_names is not None
                  else f"userID {src.user_ids[src.user[row]]!r} is not a non-negative integer")
        rejects.add("unknown_user", reason, f"{src.path}:{src.line[row]}")
    raw = src.item_ids.names
    item_num = _as_ints(raw)
    known = (item_num >= 0) & (item_num < len(asins))
    # two spellings of one itemID ("5", "05") name one asin: the codes are made distinct again
    named = np.where(known, asins.names[np.where(known, item_num, 0)], np.char.add(b"itemID ", raw))
    item_ids, item_code = np.unique(named, return_inverse=True)
    names = user_names if user_names is not None else IdCodes(np.arange(n_users).astype(bytes))
    out = SourceInteractions(src.path, user_num, item_code[src.item], src.line, src.split, src.timestamp, names,
                             IdCodes(item_ids), fixed_users=True, rating=src.rating)
    return out.subset(~bad)


def _as_ints(names: np.ndarray) -> np.ndarray:
    """Decimal ids (UTF-8 bytes) as integers; -1 where a name is not a non-negative integer."""
    digits = np.char.isdigit(names) & (np.char.str_len(names) <= 18)
    return np.where(digits, np.where(digits, names, b"0").astype(np.int64), -1)


def _as_int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        return -1
