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

from cliper_dist.convert.amazon import convert_amazon2014, convert_amazon2023
from cliper_dist.convert.download import Downloader, DownloadOptions
from cliper_dist.convert.jsonl import convert_jsonl
from cliper_dist.convert.mmrec import convert_mmrec
from cliper_dist.convert.writer import SPLITS, DatasetWriter, WriterOptions
from cliper_dist.errors import UserError

DEFAULT_CACHE = ".cache/images"  # under --out


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="convert", description=__doc__.split("\n")[0],
                                     epilog=__doc__.split("\n", 2)[2], formatter_class=argparse.RawDescriptionHelpFormatter)
    formats = parser.add_subparsers(dest="format", required=True)
    common = argparse.ArgumentParser(add_help=False)
    out = common.add_argument_group("output")
    out.add_argument("--out", required=True, help="dataset directory to write (rerun into it to resume)")
    out.add_argument("--shard-size", type=int, default=1000, help="items per shard (default 1000)")
    out.add_argument("--max-image-side", type=int, default=512, help="longest image side after re-encoding")
    out.add_argument("--jpeg-quality", type=int, default=90)
    out.add_argument("--split", choices=SPLITS, default="random",
                     help="split when the interactions carry no x_label: MMRec's per-user rule on a seeded shuffle "
                          "(random) or on time order (temporal, needs timestamps)")
    out.add_argument("--split-seed", type=int, default=999)
    out.add_argument("--strict", action="store_true", help="stop at the first bad input instead of counting it")
    out.add_argument("--workers", type=int, default=1, help="processes re-encoding images (1: this process)")
    net = common.add_argument_group("image URLs")
    net.add_argument("--download", action="store_true", help="fetch image URLs (default: record them, no network)")
    net.add_argument("--cache", default=None, help=f"download cache directory (default OUT/{DEFAULT_CACHE})")
    net.add_argument("--download-threads", type=int, default=8)
    net.add_argument("--timeout", type=float, default=10.0, help="seconds per attempt")
    net.add_argument("--retries", type=int, default=2, help="further attempts after a transient failure")
    net.add_argument("--host-interval", type=float, default=0.1, help="minimum seconds between requests to one host")

    p = formats.add_parser("jsonl", parents=[common], help="one JSON item per line + CSV/TSV/.inter interactions")
    p.add_argument("--catalog", required=True)
    p.add_argument("--images", default=None, help="directory that relative image paths refer to")
    p.add_argument("--interactions", default=None, help="CSV/TSV (user_id,item_id[,timestamp][,rating]) or .inter")
    for name, meta, reviews in (("amazon2014", "meta_X.json(.gz), Python-literal lines", "reviews_X_5.json(.gz)"),
                                ("amazon2023", "meta_X.jsonl(.gz)", "X.jsonl(.gz)")):
        p = formats.add_parser(name, parents=[common], help=f"Amazon review data {name[-4:]}")
        p.add_argument("--meta", required=True, help=meta)
        p.add_argument("--reviews", required=True, help=reviews)
        p.add_argument("--images", default=None, help="directory of images named by item id (e.g. B00ABC.jpg)")
        p.add_argument("--k-core", type=int, default=5, help="minimum reviews per user and item (0: no filter)")
    p = formats.add_parser("mmrec", parents=[common], help="MMRec folder; keeps MMRec's item and user ids")
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
                            strict=args.strict, workers=args.workers)
    inputs = {k: getattr(args, k) for k in INPUTS[args.format]}
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
    try:
        manifest, writer = convert(args)
    except UserError as e:
        print(f"convert: error: {e}", file=sys.stderr)
        return 2
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
