"""Convert a catalog (generic JSONL, Amazon 2014/2023 dumps, an MMRec folder) into a dataset directory.

    python tools/convert.py jsonl --catalog items.jsonl [--images DIR] [--interactions FILE] --out DATASET
    python tools/convert.py amazon2014 --meta meta_Baby.json.gz --reviews reviews_Baby_5.json.gz --out DATASET
    python tools/convert.py amazon2023 --meta meta_Baby_Products.jsonl.gz --reviews Baby_Products.jsonl.gz --out DATASET
    python tools/convert.py mmrec --inter baby.inter --item-map i_id_mapping.csv [--user-map u_id_mapping.csv] \\
        [--meta partial_item_text.jsonl] [--urls baby_url.csv] [--images DIR] --out DATASET

Image URLs are fetched only with --download. Rerunning into the same --out skips finished
shards. See docs/convert.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from cliper_dist import dirs
from cliper_dist.config import ToolHelp
from cliper_dist.convert.amazon import convert_amazon2014, convert_amazon2023
from cliper_dist.convert.download import Downloader, DownloadOptions
from cliper_dist.convert.jsonl import convert_jsonl
from cliper_dist.convert.mmrec import convert_mmrec
from cliper_dist.convert.writer import SPLITS, DatasetWriter, WriterOptions

DEFAULT_CACHE = ".cache/images"  # under --out
JSONL_HELP = """One JSON object per line of --catalog:
  item_id      required, unique (a string or a number)
  title        string
  brand        string
  categories   a string, a list of names, or a list of category paths (lists of names)
  description  a string or a list of strings
  image        a path relative to --images, an absolute path, or an http(s) URL (fetched with --download)
Other fields are ignored. An item without text or image is kept and counted.

--interactions: CSV or TSV (tab-separated when the header holds a tab) whose header names
the columns: user_id,item_id (or userID,itemID), optional timestamp, rating, x_label
(0 train, 1 valid, 2 test; without it the split is made here, see --split). Every row must
have as many fields as the header. An MMRec .inter file works as is."""


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="convert", description=__doc__.split("\n")[0],
                                     epilog=__doc__.split("\n", 2)[2], formatter_class=ToolHelp)
    formats = parser.add_subparsers(dest="format", required=True)
    common = argparse.ArgumentParser(add_help=False)
    out = common.add_argument_group("output")
    out.add_argument("--out", required=True, help="dataset directory to write (rerun into it to resume)")
    out.add_argument("--shard-size", type=int, default=1000, help="items per shard")
    out.add_argument("--max-image-side", type=int, default=512, help="longest image side after re-encoding")
    out.add_argument("--jpeg-quality", type=int, default=90, help="JPEG quality of the re-encoded images (1-95)")
    out.add_argument("--split", choices=SPLITS, default="random",
                     help="split when the interactions carry no x_label: MMRec's per-user rule on a seeded shuffle "
                          "(random) or on time order (temporal, needs timestamps)")
    out.add_argument("--split-seed", type=int, default=999, help="seed of the random split")
    out.add_argument("--strict", action="store_true", help="stop at the first bad input instead of counting it")
    out.add_argument("--workers", type=int, default=1, help="processes re-encoding images (1: this process)")
    out.add_argument("--allow-missing-images", action="store_true",
                     help="convert even when most named images cannot be read (without it: stop when more than "
                          "half are unavailable; a wrong --images is the usual cause)")
    net = common.add_argument_group("image URLs")
    net.add_argument("--download", action="store_true", help="fetch image URLs (default: record them, no network)")
    net.add_argument("--cache", default=None, help=f"download cache directory (None: OUT/{DEFAULT_CACHE})")
    net.add_argument("--download-threads", type=int, default=8, help="concurrent downloads")
    net.add_argument("--timeout", type=float, default=10.0, help="seconds per attempt")
    net.add_argument("--retries", type=int, default=2, help="further attempts after a transient failure")
    net.add_argument("--host-interval", type=float, default=0.1, help="minimum seconds between requests to one host")

    p = formats.add_parser("jsonl", parents=[common], help="one JSON item per line + CSV/TSV/.inter interactions",
                           description=JSONL_HELP, formatter_class=ToolHelp)
    p.add_argument("--catalog", required=True, help="JSON lines, one item per line (fields above)")
    p.add_argument("--images", default=None, help="directory that relative image paths refer to")
    p.add_argument("--interactions", default=None, help="CSV/TSV (user_id,item_id[,timestamp][,rating]) or .inter")
    for name, meta, reviews in (("amazon2014", "meta_X.json(.gz), Python-literal lines", "reviews_X_5.json(.gz)"),
                                ("amazon2023", "meta_X.jsonl(.gz)", "X.jsonl(.gz)")):
        p = formats.add_parser(name, parents=[common], help=f"Amazon review data {name[-4:]}",
                               formatter_class=ToolHelp)
        p.add_argument("--meta", required=True, help=meta)
        p.add_argument("--reviews", required=True, help=reviews)
        p.add_argument("--images", default=None, help="directory of images named by item id (e.g. B00ABC.jpg)")
        p.add_argument("--k-core", type=int, default=5, help="minimum reviews per user and item (0: no filter)")
    p = formats.add_parser("mmrec", parents=[common], help="MMRec folder; keeps MMRec's item and user ids",
                           formatter_class=ToolHelp)
    p.add_argument("--inter", required=True, help="X.inter (userID itemID [...] [x_label])")
    p.add_argument("--item-map", required=True, help="i_id_mapping.csv (asin, itemID)")
    p.add_argument("--user-map", default=None, help="u_id_mapping.csv (user_id, userID)")
    p.add_argument("--meta", default=None, help="item text by asin: JSON lines or Amazon 2014 meta")
    p.add_argument("--urls", default=None, help="X_url.csv (itemID, asin, imUrl)")
    p.add_argument("--images", default=None, help="directory of images named by asin or itemID")
    return parser.parse_args(argv)


INPUTS = {"jsonl": ("catalog", "images", "interactions"), "amazon2014": ("meta", "reviews", "images", "k_core"),
          "amazon2023": ("meta", "reviews", "images", "k_core"),
          "mmrec": ("inter", "item_map", "user_map", "meta", "urls", "images")}


def convert(args: argparse.Namespace) -> tuple[dict, DatasetWriter]:
    options = WriterOptions(shard_size=args.shard_size, max_image_side=args.max_image_side,
                            jpeg_quality=args.jpeg_quality, split=args.split, split_seed=args.split_seed,
                            strict=args.strict, workers=args.workers,
                            max_unavailable_images=1.0 if args.allow_missing_images else 0.5)
    inputs = {k: getattr(args, k) for k in INPUTS[args.format]}
    dirs.check_output(args.out, dirs.DATASET, {f"--{k.replace('_', '-')}": v for k, v in inputs.items()
                                               if isinstance(v, str)})
    downloader = None
    if args.download:
        cache = Path(args.cache) if args.cache else Path(args.out) / DEFAULT_CACHE
        downloader = Downloader(DownloadOptions(cache, threads=args.download_threads, timeout=args.timeout,
                                                retries=args.retries, host_interval=args.host_interval))
    source = {"format": args.format, **inputs, "download": args.download}
    with DatasetWriter(args.out, options, source, image_dir=args.images, downloader=downloader) as writer:
        if args.format == "jsonl":
            manifest = convert_jsonl(writer, args.catalog, args.interactions)
        elif args.format in ("amazon2014", "amazon2023"):
            reader = convert_amazon2014 if args.format == "amazon2014" else convert_amazon2023
            manifest = reader(writer, args.meta, args.reviews, args.images, args.k_core)
        else:
            manifest = convert_mmrec(writer, args.inter, args.item_map, args.user_map, args.meta, args.urls,
                                     args.images)
    return manifest, writer


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    start = time.perf_counter()
    manifest, writer = convert(args)
    c = manifest["counts"]
    print(f"convert: {c['items']} items ({c['with_image']} with image, {c['corrupt_image']} corrupt, "
          f"{c['unavailable_image']} unavailable, {c['without_text']} without text), {c['users']} users, "
          f"{c['interactions']['total']} interactions (split: {manifest['split']}) -> {args.out} "
          f"in {time.perf_counter() - start:.1f}s"
          + (f"; {writer.resumed_shards}/{len(manifest['shards'])} shards kept from an earlier run"
             if writer.resumed_shards else ""))
    if c["rejects"]:
        print(f"convert: rejects (listed in {Path(args.out) / 'rejects.jsonl'}): {c['rejects']}")
    if c["image_urls_not_fetched"]:
        print(f"convert: {c['image_urls_not_fetched']} image URLs recorded but not fetched (pass --download)")
    return 0
