"""Amazon review dumps (McAuley et al.): the 2014 and 2023 metadata + review files.

Reviews are read first into id-coded arrays (exact repeats merged, see the writer) and
reduced to their k-core (5 by default: every user and item keeps at least k reviews). Then
the metadata streams through and each item of the core becomes one dataset item, in
metadata order. Every review of an item without metadata is an ``unknown_item`` reject,
inside the core or not (the core is computed before this join, so a user may end with
fewer than k); the other reviews outside the core are counted by why they left it (their
user's count or their item's count below k: ``accounting``), not listed.

2014: ``meta_X.json.gz`` lines are Python literals (``{'asin': ...}``), reviews are JSON
with reviewerID, asin, unixReviewTime and overall (the rating). 2023: JSON lines; metadata keyed
by parent_asin with ``images`` ({large, hi_res, variant}), ``features`` and ``description``
lists; reviews with user_id, parent_asin, rating and a timestamp in milliseconds. Timestamps (in
seconds) and ratings are kept in the dataset's interactions; a review without a rating keeps NaN.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np

from cliper_dist.convert.images import index_image_dir
from cliper_dist.convert.interactions import ITEM_BELOW_K, USER_BELOW_K, InteractionBuilder, SourceInteractions, k_core
from cliper_dist.convert.rejects import Rejects
from cliper_dist.convert.sources import iter_records
from cliper_dist.convert.writer import DatasetWriter


def convert_amazon2014(writer: DatasetWriter, meta: str | Path, reviews: str | Path,
                       images: str | Path | None = None, k: int = 5) -> dict | None:
    return _convert(writer, meta, reviews, images, k, _review_2014, _item_2014)


def convert_amazon2023(writer: DatasetWriter, meta: str | Path, reviews: str | Path,
                       images: str | Path | None = None, k: int = 5) -> dict | None:
    return _convert(writer, meta, reviews, images, k, _review_2023, _item_2023)


Review = tuple[str, str, float, float]   # user, item, timestamp in seconds, rating
Item = tuple[str, dict[str, Any], str | None]  # item id, text fields, image URL


def _convert(writer: DatasetWriter, meta: str | Path, reviews: str | Path, images: str | Path | None, k: int,
             review: Callable[[dict], Review], item: Callable[[dict], Item]) -> dict | None:
    inter = writer.set_interactions(_read_reviews(reviews, writer.rejects, review))
    core, why = k_core(inter.user, inter.item, k)
    in_core = np.zeros(len(inter.item_ids) + 1, dtype=bool)  # by item code; the last entry: unknown (-1)
    in_core[inter.item[core]] = True
    image_files = index_image_dir(images) if images is not None else {}
    meta_tally = writer.rejects.ledger.tally(meta)
    described = np.zeros(len(inter.item_ids), dtype=bool)  # by item code: a metadata record names it
    for _, where, record in iter_records(meta, writer.rejects):
        try:
            item_id, fields, url = item(record)
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            writer.rejects.add("malformed_line", f"unexpected record layout ({e.__class__.__name__}: {e})", where)
            continue
        code = inter.item_ids.get(item_id)
        if code >= 0:
            described[code] = True
        if not in_core[code]:
            meta_tally.filtered["outside_k_core"] += 1
            continue
        if writer.add_item(item_id, fields, image_files.get(item_id, url), where) is not None:
            meta_tally.kept += 1
    unknown = ~described[inter.item]
    writer.reject_unknown_items(inter, np.flatnonzero(unknown), "which has no metadata record")
    writer.keep_interactions(core & ~unknown, {"k_core_user": int((~unknown & (why == USER_BELOW_K)).sum()),
                                               "k_core_item": int((~unknown & (why == ITEM_BELOW_K)).sum())})
    return writer.finish({"reviews_outside_k_core": int((~core).sum()),
                          "meta_items_outside_k_core": meta_tally.filtered["outside_k_core"]})


def _read_reviews(path: str | Path, rejects: Rejects, review: Callable[[dict], Review]) -> SourceInteractions:
    builder = InteractionBuilder(path, with_split=False, with_timestamp=True, with_rating=True)
    for line_no, where, record in iter_records(path, rejects):
        try:
            user, item, timestamp, rating = review(record)
        except (KeyError, TypeError, ValueError) as e:
            rejects.add("malformed_line", f"review lacks a field or has a bad value ({e.__class__.__name__}: {e})",
                        where)
            continue
        if not user or not item:
            rejects.add("malformed_line", "review with an empty user or item id", where)
            continue
        builder.add(user, item, line_no, timestamp=timestamp, rating=rating)
    return builder.build()


def _review_2014(r: dict) -> Review:
    return str(r["reviewerID"]), str(r["asin"]), float(r.get("unixReviewTime") or 0), _rating(r.get("overall"))


def _review_2023(r: dict) -> Review:
    return (str(r["user_id"]), str(r.get("parent_asin") or r["asin"]), float(r.get("timestamp") or 0) / 1000.0,
            _rating(r.get("rating")))


def _rating(value: Any) -> float:
    return float("nan") if value is None else float(value)


def _item_2014(m: dict) -> Item:
    fields = {"title": m.get("title"), "brand": m.get("brand"), "categories": m.get("categories"),
              "description": m.get("description")}
    return str(m["asin"]), fields, m.get("imUrl")


def _item_2023(m: dict) -> Item:
    details = m.get("details") or {}
    categories = m.get("categories") or ([m["main_category"]] if m.get("main_category") else [])
    fields = {"title": m.get("title"), "brand": details.get("Brand") or details.get("brand") or m.get("store"),
              "categories": categories,
              "description": list(m.get("description") or []) + list(m.get("features") or [])}
    return str(m["parent_asin"]), fields, _main_image_2023(m.get("images") or [])


def _main_image_2023(images: list[dict] | dict[str, list]) -> str | None:
    """The MAIN variant's largest URL (hi_res, else large), else the first image's.

    Accepts the dump's list of dicts and the column layout ({"large": [...], ...}) that
    Hugging Face's copy of the data set uses.
    """
    if isinstance(images, dict):
        images = [dict(zip(images, row)) for row in zip(*images.values())]
    ordered = sorted(images, key=lambda im: im.get("variant") != "MAIN")  # stable: MAIN first
    for im in ordered:
        url = im.get("hi_res") or im.get("large")
        if url:
            return url
    return None
