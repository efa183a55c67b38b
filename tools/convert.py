"""Convert an item catalog + images + interactions into a cliper-dist dataset directory.

    python tools/convert.py jsonl --catalog items.jsonl --images IMAGE_DIR \
        --interactions interactions.csv --out DATASET_DIR
"""

from __future__ import annotations

import argparse
import sys

from cliper_dist.convert.jsonl import convert_jsonl
from cliper_dist.convert.writer import DatasetWriter, WriterOptions
from cliper_dist.errors import UserError


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    formats = parser.add_subparsers(dest="format", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--out", required=True, help="dataset directory to write")
    common.add_argument("--shard-size", type=int, default=1000, help="items per shard")
    common.add_argument("--max-image-side", type=int, default=512, help="longest image side after re-encoding")
    common.add_argument("--split-seed", type=int, default=999, help="seed of the per-user split")
    common.add_argument("--strict", action="store_true", help="stop at the first bad input instead of counting it")
    jsonl = formats.add_parser("jsonl", parents=[common], help="one JSON item per line")
    jsonl.add_argument("--catalog", required=True)
    jsonl.add_argument("--images", default=None, help="directory that relative image paths refer to")
    jsonl.add_argument("--interactions", default=None, help="CSV/TSV (user_id,item_id[,...]) or MMRec .inter")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    options = WriterOptions(shard_size=args.shard_size, max_image_side=args.max_image_side,
                            split_seed=args.split_seed, strict=args.strict)
    source = {k: v for k, v in vars(args).items() if k not in ("out",)}
    writer = DatasetWriter(args.out, options, source=source)
    try:
        manifest = convert_jsonl(args.catalog, writer, images=args.images, interactions=args.interactions)
    except UserError as e:
        print(f"convert: error: {e}", file=sys.stderr)
        return 2
    c = manifest["counts"]
    print(f"convert: {c['items']} items ({c['with_image']} with image, {c['corrupt_image']} bad image), "
          f"{c['users']} users, {c['interactions']['total']} interactions -> {args.out}"
          + (f"; rejects: {c['rejects']}" if c["rejects"] else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
