"""The convert job: a catalog -> a dataset directory, its images re-encoded across ranks.

Every rank reads the (text) inputs whole and identically, so item indices, dedup and
reader rejects agree everywhere; rank r builds the shards s with s % P == r, and rank 0
assembles the dataset from the shards' done records (the protocol is in ``writer``).
Shard boundaries depend only on item indices, never on P: any number of ranks, and any
mix of them across interrupted runs, writes the bytes that one process writes.
``launch/convert.py`` runs this under torchrun; ``tools/convert.py`` as one process.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from cliper_dist import dirs, dist
from cliper_dist.convert.amazon import convert_amazon2014, convert_amazon2023
from cliper_dist.convert.download import Downloader, DownloadOptions
from cliper_dist.convert.jsonl import convert_jsonl
from cliper_dist.convert.mmrec import convert_mmrec
from cliper_dist.convert.writer import REJECTS, DatasetWriter, Split, WriterOptions
from cliper_dist.data import schema
from cliper_dist.errors import UserError

DEFAULT_CACHE = ".cache/images"  # under out
# How long a rank that has built its shards waits at the end for the slowest one. Ranks end
# apart by however uneven their images and downloads are, which on a large catalog can be
# far beyond a collective's usual 10 minutes; a rank that fails is ended by torchrun instead.
FINISH_TIMEOUT_S = 24 * 3600.0

# format -> (required inputs, optional inputs), in the order the manifest lists them
INPUTS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "jsonl": (("catalog",), ("images", "interactions")),
    "amazon2014": (("meta", "reviews"), ("images",)),
    "amazon2023": (("meta", "reviews"), ("images",)),
    "mmrec": (("inter", "item_map"), ("user_map", "meta", "urls", "images")),
}


@dataclass
class DownloadConfig:
    enabled: bool = False  # fetch image URLs (False: record them in the items, no network)
    cache: str = ""  # download cache, keyed by sha256 of the URL ("" = OUT/.cache/images)
    threads: int = 8  # concurrent downloads per rank
    timeout: float = 10.0  # seconds per attempt
    retries: int = 2  # further attempts after a transient failure (timeout, truncated body, reset connection, 5xx, 429)
    host_interval: float = 0.1  # minimum seconds between requests to one host, per rank


@dataclass
class ConvertConfig:
    format: Literal["jsonl", "amazon2014", "amazon2023", "mmrec"] = "jsonl"  # input format (docs/convert.md)
    out: str = ""  # dataset directory to write (rerun into it to resume)
    catalog: str = ""  # jsonl: JSON lines, one item per line
    images: str = ""  # image directory: the catalog's relative paths (jsonl), files named by item id (others)
    interactions: str = ""  # jsonl: CSV/TSV (user_id,item_id[,timestamp][,rating]) or .inter
    meta: str = ""  # amazon: item metadata; mmrec: item text by asin (JSON lines or Amazon 2014 meta)
    reviews: str = ""  # amazon: reviews
    inter: str = ""  # mmrec: X.inter (userID itemID [...] [x_label])
    item_map: str = ""  # mmrec: i_id_mapping.csv (asin, itemID)
    user_map: str = ""  # mmrec: u_id_mapping.csv (user_id, userID)
    urls: str = ""  # mmrec: X_url.csv (itemID, asin, imUrl)
    k_core: int = 5  # amazon: minimum reviews per user and item (0: no filter)
    shard_size: int = 1000  # items per shard: shard k holds indices [k*size, (k+1)*size) on any number of ranks
    max_image_side: int = 512  # longest image side after re-encoding
    jpeg_quality: int = 90  # JPEG quality of the re-encoded images (1-95)
    split: Split = "random"  # no x_label: MMRec's per-user rule, seeded or by time order; loo: leave-one-out by time
    split_seed: int = 999  # seed of the random split
    strict: bool = False  # stop at the first bad input instead of counting it
    workers: int = 1  # processes re-encoding images, per rank (1: the rank itself)
    allow_missing_images: bool = False  # convert even when more than half of the named images are unavailable
    keep_duplicates: bool = False  # keep exact repeats of an interaction as rows (counted either way; default: merged)
    download: DownloadConfig = field(default_factory=DownloadConfig)

    def inputs(self) -> dict[str, str | None]:
        """The format's inputs (None: not given), in the manifest's order."""
        required, optional = INPUTS[self.format]
        return {key: getattr(self, key) or None for key in required + optional}

    def validate(self) -> None:
        if not self.out:
            raise UserError("convert: 'out' is required (--out or out=...)")
        required, optional = INPUTS[self.format]
        for key in required:
            if not getattr(self, key):
                raise UserError(f"convert: format {self.format} needs '{key}' (--{key} or {key}=...)")
        foreign = [key for key in dict.fromkeys(k for r, o in INPUTS.values() for k in r + o)
                   if key not in required + optional and getattr(self, key)]
        if foreign:
            raise UserError(f"convert: format {self.format} does not read '{foreign[0]}' "
                            f"(its inputs: {', '.join(required + optional)})")

    def writer_options(self) -> WriterOptions:
        return WriterOptions(shard_size=self.shard_size, max_image_side=self.max_image_side,
                             jpeg_quality=self.jpeg_quality, split=self.split, split_seed=self.split_seed,
                             strict=self.strict, workers=self.workers,
                             max_unavailable_images=1.0 if self.allow_missing_images else 0.5,
                             keep_duplicates=self.keep_duplicates)


def run(cfg: ConvertConfig, rank: int = 0, world_size: int = 1) -> dict | None:
    """Convert as rank ``rank`` of ``world_size``; rank 0 prints a summary and returns the
    manifest, the other ranks return None."""
    start = time.perf_counter()
    cfg.validate()
    inputs = cfg.inputs()
    dirs.check_output(cfg.out, dirs.DATASET, {f"--{k.replace('_', '-')}": v for k, v in inputs.items() if v})
    dist.check_shared_dir(cfg.out)
    source = {"format": cfg.format, **inputs, **({"k_core": cfg.k_core} if cfg.format.startswith("amazon") else {}),
              "download": cfg.download.enabled}
    with DatasetWriter(cfg.out, cfg.writer_options(), source, image_dir=inputs["images"],
                       downloader=_downloader(cfg), rank=rank, world_size=world_size) as writer:
        manifest = _read(cfg, writer)
    if manifest is not None:
        print(summary(manifest, cfg.out, writer.resumed_shards, world_size, time.perf_counter() - start), flush=True)
    return manifest


def _downloader(cfg: ConvertConfig) -> Downloader | None:
    d = cfg.download
    if not d.enabled:
        return None
    cache = Path(d.cache) if d.cache else Path(cfg.out) / DEFAULT_CACHE
    return Downloader(DownloadOptions(cache, threads=d.threads, timeout=d.timeout, retries=d.retries,
                                      host_interval=d.host_interval, stop_offline=not cfg.allow_missing_images))


def _read(cfg: ConvertConfig, writer: DatasetWriter) -> dict | None:
    """Run the format's reader, which ends with ``writer.finish``."""
    i = cfg.inputs()
    if cfg.format == "jsonl":
        return convert_jsonl(writer, i["catalog"], i["interactions"])
    if cfg.format == "mmrec":
        return convert_mmrec(writer, i["inter"], i["item_map"], i["user_map"], i["meta"], i["urls"], i["images"])
    reader = convert_amazon2014 if cfg.format == "amazon2014" else convert_amazon2023
    return reader(writer, i["meta"], i["reviews"], i["images"], cfg.k_core)


def summary(manifest: dict, out: str, kept: int, world_size: int, seconds: float) -> str:
    """What a finished conversion prints: counts, rejects, and what a rerun kept."""
    c = manifest["counts"]
    lines = [f"convert: {c['items']} items ({c['with_image']} with image, {c['corrupt_image']} corrupt, "
             f"{c['unavailable_image']} unavailable, {c['without_text']} without text), {c['users']} users, "
             f"{c['interactions']['total']} interactions (split: {manifest['split']}) -> {out} "
             f"in {seconds:.1f}s" + (f" on {world_size} ranks" if world_size > 1 else "")
             + (f"; {kept}/{len(manifest['shards'])} shards kept from an earlier run" if kept else "")]
    if c["rejects"]:
        lines.append(f"convert: rejects (listed in {Path(out) / REJECTS}): {c['rejects']}")
    lines += [f"convert: rows of {schema.accounting_line(name, t)}" for name, t in c.get("accounting", {}).items()]
    if c.get("duplicate_interactions"):
        kept = manifest["options"].get("keep_duplicates")
        lines.append(f"convert: {c['duplicate_interactions']} exact duplicate interactions "
                     + ("kept as rows (--keep-duplicates)" if kept else "merged into their first occurrence "
                        "(--keep-duplicates keeps them)"))
    if c["image_urls_not_fetched"]:
        lines.append(f"convert: {c['image_urls_not_fetched']} image URLs recorded but not fetched "
                     "(pass --download, or download.enabled=true)")
    return "\n".join(lines)
