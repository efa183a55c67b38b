"""Datasets for the encode tests: the demo items regrouped into many small shards, plus a
shard of bad inputs (corrupt and missing images, empty and very long text) and an empty shard."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cliper_dist import files
from cliper_dist.data import schema
from cliper_dist.data.features import FeatureManifest
from cliper_dist.data.shards import read_shard, write_shard

LONG_DESCRIPTION = " ".join(f"Soft organic cotton layer number {i} keeps the little one warm and dry." for i in range(12))


def demo_samples(dataset: Path) -> list[dict]:
    """Every item of a converted dataset as ``write_shard`` input, in index order."""
    samples = []
    for shard in json.loads((dataset / schema.MANIFEST).read_text())["shards"]:
        for s in read_shard(str(dataset / schema.SHARD_DIR / shard["name"])):
            samples.append({"index": schema.key_index(s["__key__"]), "fields": json.loads(s["json"]),
                            "image": s.get("jpg")})
    return sorted(samples, key=lambda s: s["index"])


def build_dataset(out: Path, shards: list[list[dict]]) -> Path:
    """A dataset directory holding exactly ``shards`` (item indices must cover 0..N-1)."""
    (out / schema.SHARD_DIR).mkdir(parents=True)
    infos = [write_shard(out / schema.SHARD_DIR / schema.shard_name(i), s) for i, s in enumerate(shards)]
    items = sorted((s for shard in shards for s in shard), key=lambda s: s["index"])
    assert [s["index"] for s in items] == list(range(len(items)))
    files.write_jsonl(out / schema.ITEMS, ({"index": s["index"], **s["fields"]} for s in items))
    files.write_json(out / schema.MANIFEST, {
        "format_version": 1, "counts": {"items": len(items), "users": 0},
        "shards": [{"name": i.name, "samples": i.samples, "first_index": i.first_index,
                    "last_index": i.last_index, "sha256": i.sha256} for i in infos]})
    return out


def bad_samples(start: int, image: bytes) -> list[dict]:
    """Items ``start``.. with: corrupt image bytes, no image, all text empty, a very long description."""
    fields = {"item_id": "", "title": "Plain bib", "brand": "Sprout", "categories": "Baby Products, Bibs",
              "description": "A bib."}
    return [
        {"index": start, "fields": {**fields, "item_id": "BAD-CORRUPT"}, "image": b"\xff\xd8 not a jpeg"},
        {"index": start + 1, "fields": {**fields, "item_id": "BAD-NOIMAGE"}, "image": None},
        {"index": start + 2, "fields": {"item_id": "BAD-NOTEXT", "title": "", "brand": " ", "categories": "",
                                        "description": ""}, "image": image},
        {"index": start + 3, "fields": {**fields, "item_id": "LONG", "description": LONG_DESCRIPTION},
         "image": image},
    ]


@pytest.fixture(scope="session")
def encode_dataset(tmp_path_factory, demo_dataset) -> Path:
    """124 items in 14 shards: 12 of 10 demo items, one of bad inputs, one empty."""
    samples = demo_samples(demo_dataset)
    groups = [samples[i:i + 10] for i in range(0, len(samples), 10)]
    groups.insert(5, [])
    groups.append(bad_samples(len(samples), samples[0]["image"]))
    return build_dataset(tmp_path_factory.mktemp("encode_dataset"), groups)


@pytest.fixture(scope="session")
def one_shard_dataset(tmp_path_factory, demo_dataset) -> Path:
    """10 items in a single shard: fewer shards than ranks."""
    return build_dataset(tmp_path_factory.mktemp("one_shard"), [demo_samples(demo_dataset)[:10]])


# One batch size for every encode run in these tests: a shard's batches are then identical
# on any number of ranks, so resumed and clean runs can be compared exactly.
BATCH = "batch_size=4"


def encode_in_process(data: Path, out: Path, model: str, ckpt: str, *overrides: str) -> FeatureManifest:
    """The job as a world of one, in this process (what ``python launch/encode.py`` does)."""
    from cliper_dist import config, dist
    from cliper_dist.encode.job import EncodeConfig, run

    cfg = config.load(EncodeConfig, None, [f"data={data}", f"out={out}", f"model={model}", f"pretrained={ckpt}",
                                           BATCH, "threads=1", *overrides])
    return run(cfg, dist.init(device="cpu"))


@pytest.fixture(scope="session")
def single_features(tmp_path_factory, encode_dataset, tiny_clip) -> Path:
    """``encode_dataset`` encoded by a single process."""
    out = tmp_path_factory.mktemp("single_features")
    encode_in_process(encode_dataset, out, *tiny_clip)
    return out
