"""Check that a dataset converted with ``convert.py mmrec`` kept MMRec's ids and splits exactly.

    python tools/check_mmrec.py DATASET_DIR --inter baby.inter --item-map i_id_mapping.csv \
        [--user-map u_id_mapping.csv]

Compares row by row: the dataset's interactions.inter against the source .inter (userID,
itemID and x_label when the source has it, in the same order), split counts, item index ->
asin against the item map, user index -> name against the user map. Prints one JSON line;
exit 1 on any difference.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys

import numpy as np

from cliper_dist.config import ToolHelp
from cliper_dist.data import schema
from cliper_dist.data.dataset import DatasetDir
from cliper_dist.errors import UserError, run_tool


def _read_inter(path: str, flag: str) -> np.ndarray:
    """userID, itemID[, x_label] columns of an MMRec .inter file (x_label when the header has it)."""
    with _open(path, flag) as f:
        header = f.readline().rstrip("\n").split("\t")
    if not {"userID", "itemID"} <= set(header):
        raise UserError(f"{flag} {path}: an MMRec .inter file needs a userID and an itemID column; "
                        f"its header is {header[:6]}")
    cols = [header.index(c) for c in ("userID", "itemID", "x_label") if c in header]
    try:
        return np.loadtxt(path, dtype=np.int64, delimiter="\t", skiprows=1, usecols=cols, ndmin=2)
    except ValueError as e:
        raise UserError(f"{flag} {path}: not integer ids ({e})") from None


def _open(path: str, flag: str):
    try:
        return open(path, newline="")
    except OSError as e:
        raise UserError(f"{flag} {path}: {e.strerror}") from None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=ToolHelp)
    parser.add_argument("dataset", help="the dataset directory convert.py mmrec wrote")
    parser.add_argument("--inter", required=True, help="the source MMRec .inter file")
    parser.add_argument("--item-map", required=True, help="the source i_id_mapping.csv (asin, itemID)")
    parser.add_argument("--user-map", default=None, help="the source u_id_mapping.csv (user_id, userID)")
    args = parser.parse_args()
    ds = DatasetDir.open(args.dataset, flag="check_mmrec")
    source = _read_inter(args.inter, "--inter")
    converted = _read_inter(str(ds.path / schema.INTERACTIONS), "dataset")
    labelled = source.shape[1] == 3  # without x_label in the source, the ids are compared, the split is new
    converted = converted if labelled else converted[:, :2]
    report = {"rows_source": len(source), "rows_dataset": len(converted),
              "rows_identical": bool(source.shape == converted.shape and (source == converted).all()),
              "splits_manifest": [ds.manifest["counts"]["interactions"][k] for k in ("train", "valid", "test")]}
    if labelled:
        report["splits_source"] = np.bincount(source[:, 2], minlength=3).tolist()
        report["splits_dataset"] = np.bincount(converted[:, 2], minlength=3).tolist()
    items = {row["index"]: row["item_id"] for row in schema.read_jsonl(ds.path / schema.ITEMS)}
    item_map = _id_map(args.item_map, "itemID", "--item-map")
    report["items_identical"] = items == item_map
    if args.user_map:
        users = {row["index"]: row["user_id"] for row in schema.read_jsonl(ds.path / schema.USERS)}
        report["users_identical"] = users == _id_map(args.user_map, "userID", "--user-map")
    splits_ok = not labelled or report["splits_source"] == report["splits_dataset"] == report["splits_manifest"]
    ok = report["rows_identical"] and splits_ok and report["items_identical"] and report.get("users_identical", True)
    report["ok"] = bool(ok)
    print(json.dumps(report))
    return 0 if ok else 1


def _id_map(path: str, id_col: str, flag: str) -> dict[int, str]:
    """{id: name} of an MMRec map file (tab- or comma-separated, header with ``id_col``)."""
    with _open(path, flag) as f:
        delimiter = "\t" if "\t" in f.readline() else ","
        f.seek(0)
        reader = csv.DictReader(f, delimiter=delimiter)
        columns = reader.fieldnames or []
        if id_col not in columns or len(columns) < 2:
            swapped = " (the user and item maps swapped?)" if {"userID", "itemID"} & set(columns) else ""
            raise UserError(f"{flag} {path}: expected a map with an {id_col} column and a name column; "
                            f"found columns {columns[:4]}{swapped}")
        name_col = next(c for c in columns if c != id_col)
        return {int(r[id_col]): r[name_col] for r in reader}


if __name__ == "__main__":
    sys.exit(run_tool(main))
