"""Generic catalog: one JSON item per line, plus CSV/TSV or MMRec `.inter` interactions.

Item fields: ``item_id`` (required), ``title``, ``brand``, ``categories`` (a string, a list
of names or a list of category paths), ``description`` (a string or a list), ``image`` (a
path relative to the image directory, an absolute path, or an http(s) URL).
"""

from __future__ import annotations

from pathlib import Path

from cliper_dist.convert.interactions import read_table
from cliper_dist.convert.sources import iter_records
from cliper_dist.convert.writer import DatasetWriter


def convert_jsonl(writer: DatasetWriter, catalog: str | Path,
                  interactions: str | Path | None = None) -> dict | None:
    if interactions is not None:
        writer.set_interactions(read_table(interactions, writer.rejects))
    tally = writer.rejects.ledger.tally(catalog)
    for _, where, record in iter_records(catalog, writer.rejects):
        item_id, image = record.get("item_id"), record.get("image")
        if isinstance(image, list):  # a list of images: the first is the item's
            image = image[0] if image else None
        if writer.add_item("" if item_id is None else str(item_id), record, image, where) is not None:
            tally.kept += 1
    return writer.finish()
