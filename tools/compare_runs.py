"""One table of training runs on the same split: best epoch, valid and test Recall/NDCG@20.

    python tools/compare_runs.py "LightGCN=runs/demo/run-lightgcn" "FREEDOM=runs/demo/run" [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from cliper_dist.config import ToolHelp
from cliper_dist.errors import UserError, run_tool
from cliper_dist.files import read_json

FINAL = "final.json"


def read_run(label_and_dir: str) -> dict:
    label, sep, path = label_and_dir.rpartition("=")
    if not sep or not label:
        raise UserError(f"'{label_and_dir}': want LABEL=RUN_DIR")
    final = Path(path) / FINAL
    if not final.is_file():
        raise UserError(f"{path}: no {FINAL} (has the training run finished?)")
    f = read_json(final)
    return {"label": label, "run": path, "model": f["model"], "best_epoch": f["best_epoch"],
            **{f"{split}_{m}": f[split][m] for split in ("valid", "test") for m in ("recall@20", "ndcg@20")},
            "s_per_epoch": f["s_per_epoch"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=ToolHelp)
    parser.add_argument("runs", nargs="+", help="LABEL=RUN_DIR, in the order of the table's rows")
    parser.add_argument("--json", action="store_true", help="one JSON line per run instead of the table")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    rows = [read_run(r) for r in args.runs]
    if args.json:
        for row in rows:
            print(json.dumps(row))
        return 0
    width = max(len(r["label"]) for r in rows)
    print(f"{'':<{width}}  {'best epoch':>10}  {'valid R@20':>10}  {'test R@20':>9}  {'test N@20':>9}  "
          f"{'vs first':>8}")
    base = rows[0]["test_recall@20"]
    for r in rows:
        ratio = f"x{r['test_recall@20'] / base:.2f}" if base else "-"
        print(f"{r['label']:<{width}}  {r['best_epoch']:>10}  {r['valid_recall@20']:>10.4f}  "
              f"{r['test_recall@20']:>9.4f}  {r['test_ndcg@20']:>9.4f}  {ratio:>8}")
    return 0


if __name__ == "__main__":
    sys.exit(run_tool(main))
