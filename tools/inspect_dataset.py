"""Summarise a dataset directory, verify its shards against the manifest, dump a few samples.

    python tools/inspect_dataset.py DATASET_DIR [--verify] [--dump N --dump-dir DIR] [--report DIR]

--report DIR writes a one-page report (report.md and PNG figures) to read before training:
interactions per user and per item, the split, missing text fields, images by status,
rejects by kind with examples, and where every input row went.

Exit status: 0 fine, 1 verification found problems, 2 not a dataset directory.
"""

from __future__ import annotations

import argparse
import sys
import time

from cliper_dist.config import ToolHelp
from cliper_dist.data.dataset import DatasetDir
from cliper_dist.data.report import write_report
from cliper_dist.data.verify import dump, summary, verify
from cliper_dist.errors import run_tool


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=ToolHelp)
    parser.add_argument("dataset", help="a dataset directory (tools/convert.py output)")
    parser.add_argument("--verify", action="store_true", help="check every shard against the manifest")
    parser.add_argument("--dump", type=int, default=0, metavar="N", help="write the first N samples")
    parser.add_argument("--dump-dir", default=None, help="where --dump writes images and text (needed with --dump)")
    parser.add_argument("--report", default=None, metavar="DIR", help="write report.md and its PNG figures into DIR")
    args = parser.parse_args(argv)
    if args.dump and not args.dump_dir:
        parser.error("--dump needs --dump-dir")
    ds = DatasetDir.open(args.dataset, flag="inspect_dataset")
    print(summary(ds))
    status = 0
    if args.verify:
        problems = verify(ds)
        for line in problems:
            print(f"  PROBLEM {line}")
        print(f"verify: {'OK' if not problems else f'{len(problems)} problems'}")
        status = 1 if problems else 0
    if args.dump:
        for line in dump(ds, args.dump, args.dump_dir):
            print(f"  {line}")
    if args.report:
        start = time.perf_counter()
        page = write_report(ds.path, args.report)
        print(f"report: {page} ({time.perf_counter() - start:.1f}s)")
    return status


if __name__ == "__main__":
    sys.exit(run_tool(main, sys.argv[1:]))
