"""Convert a catalog (generic JSONL, Amazon 2014/2023 dumps, an MMRec folder) into a dataset directory.

    python tools/convert.py jsonl --catalog items.jsonl [--images DIR] [--interactions FILE] --out DATASET
    python tools/convert.py amazon2014 --meta meta_Baby.json.gz --reviews reviews_Baby_5.json.gz --out DATASET
    python tools/convert.py amazon2023 --meta meta_Baby_Products.jsonl.gz --reviews Baby_Products.jsonl.gz --out DATASET
    python tools/convert.py mmrec --inter baby.inter --item-map i_id_mapping.csv [--user-map u_id_mapping.csv] \\
        [--meta partial_item_text.jsonl] [--urls baby_url.csv] [--images DIR] --out DATASET

Image URLs are fetched only with --download. Rerunning into the same --out skips finished
shards. The conversion is the convert job as one process; torchrun launch/convert.py spreads
the image work over ranks and writes the same dataset. See docs/convert.md.
"""

from __future__ import annotations

import argparse
import sys

from cliper_dist.config import ToolHelp
from cliper_dist.convert.job import DEFAULT_CACHE, INPUTS, ConvertConfig, DownloadConfig, run
from cliper_dist.convert.writer import SPLITS

DEFAULTS = ConvertConfig()
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
    out.add_argument("--shard-size", type=int, default=DEFAULTS.shard_size, help="items per shard")
    out.add_argument("--max-image-side", type=int, default=DEFAULTS.max_image_side,
                     help="longest image side after re-encoding")
    out.add_argument("--jpeg-quality", type=int, default=DEFAULTS.jpeg_quality,
                     help="JPEG quality of the re-encoded images (1-95)")
    out.add_argument("--split", choices=SPLITS, default=DEFAULTS.split,
                     help="split when the interactions carry no x_label: MMRec's per-user rule on a seeded shuffle "
                          "(random) or on time order (temporal, needs timestamps); loo: leave-one-out by time, "
                          "each user's last interaction is test and the one before valid (sequential "
                          "recommendation, needs timestamps)")
    out.add_argument("--split-seed", type=int, default=DEFAULTS.split_seed, help="seed of the random split")
    out.add_argument("--strict", action="store_true", help="stop at the first bad input instead of counting it")
    out.add_argument("--workers", type=int, default=DEFAULTS.workers,
                     help="processes re-encoding images (1: this process)")
    out.add_argument("--allow-missing-images", action="store_true",
                     help="convert even when most named images cannot be read (without it: stop when more than "
                          "half are unavailable; a wrong --images is the usual cause)")
    out.add_argument("--keep-duplicates", action="store_true",
                     help="keep exact repeats of an interaction (same user, item, and timestamp and x_label where "
                          "given) as rows; without it they are merged into the first. Counted either way")
    net = common.add_argument_group("image URLs")
    net.add_argument("--download", action="store_true", help="fetch image URLs (default: record them, no network)")
    net.add_argument("--cache", default=None, help=f"download cache directory (None: OUT/{DEFAULT_CACHE})")
    d = DEFAULTS.download
    net.add_argument("--download-threads", type=int, default=d.threads, help="concurrent downloads")
    net.add_argument("--timeout", type=float, default=d.timeout, help="seconds per attempt")
    net.add_argument("--retries", type=int, default=d.retries,
                     help="further attempts after a transient failure (a timeout, a truncated body, a reset "
                          "connection, HTTP 5xx or 429); a host name that does not resolve or a refused connection "
                          "is not retried, and when the first 16 fetches all fail that way the job stops")
    net.add_argument("--host-interval", type=float, default=d.host_interval,
                     help="minimum seconds between requests to one host")

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
        p.add_argument("--k-core", type=int, default=DEFAULTS.k_core,
                       help="minimum reviews per user and item (0: no filter)")
    p = formats.add_parser("mmrec", parents=[common], help="MMRec folder; keeps MMRec's item and user ids",
                           formatter_class=ToolHelp)
    p.add_argument("--inter", required=True, help="X.inter (userID itemID [...] [x_label])")
    p.add_argument("--item-map", required=True, help="i_id_mapping.csv (asin, itemID)")
    p.add_argument("--user-map", default=None, help="u_id_mapping.csv (user_id, userID)")
    p.add_argument("--meta", default=None, help="item text by asin: JSON lines or Amazon 2014 meta")
    p.add_argument("--urls", default=None, help="X_url.csv (itemID, asin, imUrl)")
    p.add_argument("--images", default=None, help="directory of images named by asin or itemID")
    return parser.parse_args(argv)


def to_config(args: argparse.Namespace) -> ConvertConfig:
    """The flags as the convert job's config (--x-y is the key x_y; the network flags fill ``download``)."""
    required, optional = INPUTS[args.format]
    return ConvertConfig(
        format=args.format, out=args.out, **{k: getattr(args, k) or "" for k in required + optional},
        k_core=getattr(args, "k_core", DEFAULTS.k_core), shard_size=args.shard_size,
        max_image_side=args.max_image_side, jpeg_quality=args.jpeg_quality, split=args.split,
        split_seed=args.split_seed, strict=args.strict, workers=args.workers,
        allow_missing_images=args.allow_missing_images, keep_duplicates=args.keep_duplicates,
        download=DownloadConfig(enabled=args.download, cache=args.cache or "", threads=args.download_threads,
                                timeout=args.timeout, retries=args.retries, host_interval=args.host_interval))


def convert(args: argparse.Namespace) -> dict | None:
    """Convert as one process (a world of one, so rank 0: it prints the summary and returns the manifest)."""
    return run(to_config(args))


def main(argv: list[str] | None = None) -> int:
    convert(parse_args(sys.argv[1:] if argv is None else argv))
    return 0
