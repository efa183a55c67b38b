"""Write the embedded demo's raw catalog (JSONL + PNG images + interactions CSV).

    python tools/make_demo.py --out runs/demo/raw [--items 300] [--users 500] [--seed 0]
"""

from __future__ import annotations

import argparse
import json

from cliper_dist.config import ToolHelp
from cliper_dist.data.demo import DemoSpec, make_demo_catalog


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=ToolHelp)
    parser.add_argument("--out", required=True, help="directory for catalog.jsonl, images/ and interactions.csv")
    parser.add_argument("--items", type=int, default=DemoSpec.num_items, help="catalog size")
    parser.add_argument("--users", type=int, default=DemoSpec.num_users, help="number of users")
    parser.add_argument("--seed", type=int, default=DemoSpec.seed, help="seed of attributes, images and users")
    args = parser.parse_args()
    paths = make_demo_catalog(args.out, DemoSpec(num_items=args.items, num_users=args.users, seed=args.seed))
    print(json.dumps(paths))


if __name__ == "__main__":
    main()
