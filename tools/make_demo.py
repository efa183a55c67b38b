"""Write the embedded demo's raw catalog (JSONL + PNG images + interactions CSV).

    python tools/make_demo.py --out runs/demo/raw [--items 300] [--users 500] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import sys

from cliper_dist.config import ToolHelp
from cliper_dist.data.demo import DemoSpec, make_demo_catalog
from cliper_dist.errors import UserError, run_tool, writing


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=ToolHelp)
    parser.add_argument("--out", required=True, help="directory for catalog.jsonl, images/ and interactions.csv")
    parser.add_argument("--items", type=int, default=DemoSpec.num_items, help="catalog size")
    parser.add_argument("--users", type=int, default=DemoSpec.num_users, help="number of users")
    parser.add_argument("--seed", type=int, default=DemoSpec.seed, help="seed of attributes, images and users")
    args = parser.parse_args()
    if args.items < DemoSpec.max_per_user:  # each user draws up to max_per_user distinct items
        raise UserError(f"--items must be >= {DemoSpec.max_per_user}; got {args.items}")
    if args.users < 1:
        raise UserError(f"--users must be >= 1; got {args.users}")
    with writing("--out", args.out):
        paths = make_demo_catalog(args.out, DemoSpec(num_items=args.items, num_users=args.users, seed=args.seed))
    print(json.dumps(paths))


if __name__ == "__main__":
    sys.exit(run_tool(main))
