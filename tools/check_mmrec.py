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
import json
import sys

import numpy as np

from cliper_dist import files
from cliper_dist.config import ToolHelp
from cliper_dist.convert.mmrec import ITEM_NAMES, USER_NAMES, read_id_map
from cliper_dist.data import schema
from cliper_dist.data.dataset import DatasetDir
from cliper_dist.data.interactions import read_inter_columns
from cliper_dist.errors import run_tool


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=ToolHelp)
    parser.add_argument("dataset", help="the dataset directory convert.py mmrec wrote")
    parser.add_argument("--inter", required=True, help="the source MMRec .inter file")
    parser.add_argument("--item-map", required=True, help="the source i_id_mapping.csv (asin, itemID)")
    parser.add_argument("--user-map", default=None, help="the source u_id_mapping.csv (user_id, userID)")
    args = parser.parse_args()
    ds = DatasetDir.open(args.dataset, flag="check_mmrec")
    source = read_inter_columns(args.inter, with_split=False, name=f"--inter {args.inter}")
    converted = read_inter_columns(ds.path / schema.INTERACTIONS)
    labelled = source.shape[1] == 3  # without x_label in the source, the ids are compared, the split is new
    converted = converted if labelled else converted[:, :2]
    report = {"rows_source": len(source), "rows_dataset": len(converted),
              "rows_identical": bool(source.shape == converted.shape and (source == converted).all()),
              "splits_manifest": [ds.manifest["counts"]["interactions"][k] for k in ("train", "valid", "test")]}
    if labelled:
        report["splits_source"] = np.bincount(source[:, 2], minlength=3).tolist()
        report["splits_dataset"] = np.bincount(converted[:, 2], minlength=3).tolist()
    items = [row["item_id"] for row in files.read_jsonl(ds.path / schema.ITEMS)]
    report["items_identical"] = items == list(read_id_map(args.item_map, ITEM_NAMES, "itemID")[0])
    if args.user_map:
        users = [row["user_id"] for row in files.read_jsonl(ds.path / schema.USERS)]
        report["users_identical"] = users == list(read_id_map(args.user_map, USER_NAMES, "userID")[0])
    splits_ok = not labelled or report["splits_source"] == report["splits_dataset"] == report["splits_manifest"]
    ok = report["rows_identical"] and splits_ok and report["items_identical"] and report.get("users_identical", True)
    report["ok"] = bool(ok)
    print(json.dumps(report))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(run_tool(main))
