"""One shard's work: read its images, re-encode them, write the tar and its done record.

A ``ShardTask`` is small and picklable (text and file paths, never image bytes), so worker
processes do the expensive decode/re-encode and return only a ``ShardResult``. The done
record is written after the shard, both atomically: a shard counts as finished only when
its record exists, the record's fingerprint matches the task and the file's sha256 matches
the record. Anything else is redone, so an interrupted run resumes into identical output.

The record holds everything the dataset needs from its shard (the tar's info, each item's
image state and ``items.jsonl`` row, the image rejects), so whichever rank built a shard,
rank 0 assembles the dataset from the records alone.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from cliper_dist.convert.images import ImageRejected, reencode_jpeg
from cliper_dist.convert.rejects import reject_row, strict_error
from cliper_dist.data.shards import ShardInfo, write_shard
from cliper_dist.files import write_json

# Per-item image outcome, in the done record and the manifest counts.
WITH_IMAGE, WITHOUT_IMAGE, CORRUPT, UNAVAILABLE = "with_image", "without_image", "corrupt_image", "unavailable_image"
IMAGE_STATES = (WITH_IMAGE, WITHOUT_IMAGE, CORRUPT, UNAVAILABLE)


@dataclass(frozen=True)
class PendingItem:
    index: int
    item_id: str
    fields: dict[str, str]     # cleaned text fields
    image: str | None          # the reference as the catalog gave it (path or URL)
    where: str                 # "file:line" of the item's record
    file: str | None = None    # local file holding the image bytes
    error: str | None = None   # why a referenced image has no file (a failed download)
    cause: str | None = None   # that error without its retry count (Fetched.cause)
    category_paths: tuple[tuple[str, ...], ...] = ()  # data.text.category_paths, for the CTR task's bags


@dataclass(frozen=True)
class ShardTask:
    path: str
    record: str
    items: tuple[PendingItem, ...]
    max_side: int
    quality: int
    strict: bool
    fingerprint: str


@dataclass(frozen=True)
class ShardResult:
    info: ShardInfo
    states: list[str]          # IMAGE_STATES per item, in item order
    rejects: list[dict]
    rows: list[dict]           # the items' rows of items.jsonl, in item order


def fingerprint(items: list[PendingItem], settings: dict) -> str:
    """Digest of everything that determines a shard's bytes, taken before any download."""
    payload = json.dumps([settings, [asdict(i) for i in items]], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(payload.encode()).hexdigest()


def read_record(record_path: str | Path, fingerprint_: str) -> ShardResult | None:
    """The result a done record holds, when it was written for this fingerprint (the tar is not read)."""
    try:
        record = json.loads(Path(record_path).read_text())
        if record["fingerprint"] != fingerprint_:
            return None
        return ShardResult(ShardInfo(**record["info"]), record["states"], record["rejects"], record["rows"])
    except (OSError, ValueError, KeyError, TypeError):  # missing, not a record, or from before records had rows
        return None


def load_finished(task_path: str | Path, record_path: str | Path, fingerprint_: str) -> ShardResult | None:
    """The recorded result when the shard on disk is exactly what this task would write."""
    result = read_record(record_path, fingerprint_)
    task_path = Path(task_path)
    if result is None or not task_path.is_file():
        return None
    if hashlib.sha256(task_path.read_bytes()).hexdigest() != result.info.sha256:
        return None
    return result


def build_shard(task: ShardTask) -> ShardResult:
    samples, states, rejects, rows = [], [], [], []
    for it in task.items:
        state, jpeg, problem = _image(it, task.max_side, task.quality)
        if problem is not None:
            kind, reason, cause = problem
            row = reject_row(kind, reason, it.where, it.item_id, cause)
            if task.strict:
                raise strict_error(row)
            rejects.append(row)
        states.append(state)
        samples.append({"index": it.index, "fields": {"item_id": it.item_id, **it.fields, "image": it.image},
                        "image": jpeg})
        rows.append({"index": it.index, "item_id": it.item_id, **it.fields, "image": it.image,
                     "has_image": state == WITH_IMAGE, "category_paths": [list(p) for p in it.category_paths]})
    info = write_shard(task.path, samples)
    result = ShardResult(info, states, rejects, rows)
    record = {"fingerprint": task.fingerprint, **asdict(result)}
    write_json(task.record, record)
    return result


def _image(it: PendingItem, max_side: int, quality: int
           ) -> tuple[str, bytes | None, tuple[str, str, str | None] | None]:
    """(state, JPEG bytes, (reject kind, reason, cause) or None); the item is kept in every case."""
    if it.error is not None:
        return UNAVAILABLE, None, ("image_unavailable", f"{it.error}; kept without image", it.cause or it.error)
    if it.file is None:
        return WITHOUT_IMAGE, None, None
    try:
        data = Path(it.file).read_bytes()
    except OSError as e:
        cause = e.strerror or e.__class__.__name__
        return UNAVAILABLE, None, ("image_unavailable", f"cannot read {it.file} ({cause}); kept without image", cause)
    try:
        return WITH_IMAGE, reencode_jpeg(data, max_side, quality), None
    except ImageRejected as e:
        return CORRUPT, None, ("bad_image", f"{e}; kept without image", None)
