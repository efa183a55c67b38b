"""Checking a dataset directory against its manifest, summarising it, dumping a few samples.

``verify`` reads every shard once: sha256 and sample count as the manifest says, keys
that are the contiguous item indices 0..N-1 across shards, JSON that parses and names the
same item as ``items.jsonl``, JPEGs that decode; then the `.inter` file's ids and splits.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

from PIL import Image

from cliper_dist import files
from cliper_dist.data import schema
from cliper_dist.data.dataset import DatasetDir
from cliper_dist.data.shards import read_shard
from cliper_dist.errors import UserError


def summary(ds: DatasetDir) -> str:
    m = ds.manifest
    c = m["counts"]
    inter = c.get("interactions", {})
    lines = [f"dataset {ds.path}  (source: {m.get('source', {}).get('format', '?')}, split: {m.get('split', '?')})",
             f"  items {c['items']}: {c.get('with_image', '?')} with image, {c.get('without_image', '?')} without, "
             f"{c.get('corrupt_image', 0)} corrupt, {c.get('unavailable_image', 0)} unavailable; "
             f"{c.get('without_text', 0)} without text",
             f"  users {c['users']}; interactions {inter.get('total', '?')} "
             f"(train {inter.get('train', '?')} / valid {inter.get('valid', '?')} / test {inter.get('test', '?')})",
             f"  shards {len(m['shards'])} ({sum(s['samples'] for s in m['shards'])} samples)"]
    extra = {k: v for k, v in c.items() if v and k not in ("items", "users", "interactions", "rejects", "with_image",
                                                      "without_image", "corrupt_image", "unavailable_image",
                                                      "without_text", "accounting")}
    if extra:
        lines.append("  " + ", ".join(f"{k} {v}" for k, v in extra.items()))
    lines.append(f"  rejects {sum(c.get('rejects', {}).values())}" +
                 (f": {c['rejects']} (see rejects.jsonl)" if c.get("rejects") else ""))
    lines += [f"  rows of {schema.accounting_line(name, t)}" for name, t in c.get("accounting", {}).items()]
    return "\n".join(lines)


def verify(ds: DatasetDir, check_images: bool = True) -> list[str]:
    """Every disagreement between the directory and its manifest, as readable lines (none: valid)."""
    problems: list[str] = []
    items_path = ds.path / schema.ITEMS
    items = files.read_jsonl(items_path) if items_path.is_file() else iter(())
    if not items_path.is_file():
        problems.append(f"{items_path}: missing")
    expected = 0
    for shard in ds.manifest["shards"]:
        path = ds.path / schema.SHARD_DIR / shard["name"]
        if not path.is_file():
            problems.append(f"{shard['name']}: missing")
            continue
        data = path.read_bytes()
        if hashlib.sha256(data).hexdigest() != shard["sha256"]:
            problems.append(f"{shard['name']}: sha256 differs from the manifest")
        if shard["first_index"] != expected:
            problems.append(f"{shard['name']}: starts at index {shard['first_index']}, expected {expected}")
        expected = shard["first_index"]
        n = 0
        try:
            for sample in read_shard(data):
                n += 1
                problems += _check_sample(shard["name"], sample, expected, next(items, None), check_images)
                expected += 1
        except tarfile.TarError as e:
            problems.append(f"{shard['name']}: unreadable tar ({e})")
        if n != shard["samples"]:
            problems.append(f"{shard['name']}: {n} samples, the manifest says {shard['samples']}")
        if expected - 1 != shard["last_index"]:
            problems.append(f"{shard['name']}: ends at index {expected - 1}, the manifest says {shard['last_index']}")
    if expected != ds.num_items:
        problems.append(f"shards hold {expected} items, the manifest counts {ds.num_items}")
    if next(items, None) is not None:
        problems.append(f"{items_path}: more rows than shard samples")
    problems += _check_interactions(ds)
    return problems


def _check_sample(shard: str, sample: dict, expected: int, item: dict | None, check_images: bool) -> list[str]:
    key = sample["__key__"]
    where = f"{shard}/{key}"
    problems = []
    if key != schema.item_key(expected):
        problems.append(f"{where}: key should be {schema.item_key(expected)} (keys are contiguous item indices)")
    try:
        fields = json.loads(sample["json"])
    except (KeyError, ValueError):
        return problems + [f"{where}: no parsable json"]
    if item is None or item.get("item_id") != fields.get("item_id") or item.get("index") != expected:
        problems.append(f"{where}: item {fields.get('item_id')!r} differs from {schema.ITEMS} row {expected}")
    if check_images and "jpg" in sample:
        try:
            with Image.open(io.BytesIO(sample["jpg"])) as img:
                img.load()
        except Exception as e:  # noqa: BLE001 - any decoder failure is the finding
            problems.append(f"{where}: jpg does not decode ({e.__class__.__name__})")
    return problems


def _check_interactions(ds: DatasetDir) -> list[str]:
    path = ds.path / schema.INTERACTIONS
    if not path.is_file():
        return [f"{path}: missing"]
    if ds.manifest["counts"]["interactions"]["total"] == 0:  # a catalog converted without interactions
        rows = len(path.read_text().splitlines()) - 1
        return [] if rows == 0 else [f"{path}: {rows} rows, the manifest says 0"]
    try:
        inter = ds.interactions()
    except UserError as e:
        return [str(e)]
    counts = {"total": len(inter), **inter.counts()}
    listed = {k: ds.manifest["counts"]["interactions"].get(k) for k in counts}
    return [] if counts == listed else [f"{path}: counts {counts}, the manifest says {listed}"]


def dump(ds: DatasetDir, n: int, out_dir: str | Path) -> list[str]:
    """Write the first ``n`` samples' images and text fields to ``out_dir``; one line per sample."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    lines: list[str] = []
    for name in ds.shard_names:
        for sample in read_shard(ds.shard_path(name)):
            if len(lines) >= n:
                return lines
            key = sample["__key__"]
            fields = json.loads(sample["json"])
            (out / f"{key}.json").write_text(json.dumps(fields, indent=2, ensure_ascii=False) + "\n")
            if "jpg" in sample:
                (out / f"{key}.jpg").write_bytes(sample["jpg"])
            text = " | ".join(f"{f}: {fields.get(f) or 'Missing'}" for f in schema.TEXT_FIELDS)
            lines.append(f"{key} {fields.get('item_id')} [{'image' if 'jpg' in sample else 'no image'}] {text}")
    return lines

