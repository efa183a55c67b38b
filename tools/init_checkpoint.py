"""Write a random-init open_clip checkpoint (what the demo and tests load as "weights").

    python tools/init_checkpoint.py --model configs/models/clip-tiny.json --out clip-tiny.pt

No pretrained weights can be downloaded offline; a real run passes a local checkpoint file
to ``launch/encode.py --pretrained`` instead. Features from random weights carry no
semantic signal beyond random projections of pixels and tokens.
"""

from __future__ import annotations

import argparse
import sys

from cliper_dist.config import ToolHelp
from cliper_dist.encode.encoder import save_random_checkpoint
from cliper_dist.errors import run_tool, writing


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=ToolHelp)
    parser.add_argument("--model", required=True, help="open_clip model name or model config .json")
    parser.add_argument("--out", required=True, help="checkpoint file to write")
    parser.add_argument("--seed", type=int, default=0, help="torch seed of the random weights")
    args = parser.parse_args()
    with writing("--out", args.out):
        print(save_random_checkpoint(args.model, args.out, seed=args.seed))


if __name__ == "__main__":
    sys.exit(run_tool(main))
