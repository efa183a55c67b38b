"""The on-disk contracts between the jobs: dataset directory and feature store.

Dataset directory (written by ``tools/convert.py``, read by encode and train)::

    DATASET/
      manifest.json          counts, per-shard sample counts and sha256, source and options
      items.jsonl            {"index", "item_id", "title", "brand", "categories", "description", "image",
                              "has_image", "category_paths"}   (image: the catalog's path or URL;
                              categories: the paths' names as one text; category_paths: the paths,
                              lists of names; older datasets lack it)
      users.jsonl            {"index", "user_id"}
      interactions.inter     MMRec format in index space: userID<TAB>itemID[<TAB>rating][<TAB>timestamp]<TAB>x_label
                             (rating and timestamp, seconds, when the source has them; older datasets lack them)
      rejects.jsonl          {"kind", "id", "where", "reason"}: inputs left out or degraded
                             (manifest ``counts.accounting``: per input file, rows read = kept +
                             rejected + filtered + merged; ``convert/accounting.py``)
      shards/shard-NNNNNN.tar  WebDataset samples: __key__ = item index (9 digits),
                               "json" = the item's fields, "jpg" = image (absent: no image)
      .progress/             the converter's per-shard done records (resume)

Feature store (written by ``launch/encode.py``, read by train)::

    FEATURES/
      manifest.json          model, checkpoint sha256, views, templates, tau, counts, timing
      parts/shard-NNNNNN.npz   one finished shard (atomic), merged once all are present
      image.npy              N x D      image embedding per item
      text_views.npy         C x N x D  one text embedding per view
      similarity.npy         N x C      softmax_j(cos(text_j, image) / tau)
      fused_sum.npy, fused_sa.npy  N x D  parameter-free fusions (Concat is derived from
                             text_views: ``FeatureStore.fused_concat()``)
      image_feat.npy, text_feat.npy     MMRec export (image, SA-fused text)
      image_status.npy       N          0 image used, 1 missing (default image), 2 corrupt
      missing_images.txt     index, item id and reason of every item encoded with the default image
      stats.json             per-rank throughput, data-wait vs model time, missing images
"""

from __future__ import annotations

# Text fields of an item, in prompt order. Every reader produces exactly these keys.
TEXT_FIELDS = ("title", "brand", "categories", "description")

SPLIT_TRAIN, SPLIT_VALID, SPLIT_TEST = 0, 1, 2
SPLIT_NAMES = {SPLIT_TRAIN: "train", SPLIT_VALID: "valid", SPLIT_TEST: "test"}

MANIFEST = "manifest.json"  # both kinds: written last, it marks a finished directory
ITEMS = "items.jsonl"
USERS = "users.jsonl"
INTERACTIONS = "interactions.inter"
SHARD_DIR = "shards"
PROGRESS_DIR = ".progress"  # the converter's per-shard done records
SHARD_PATTERN = "shard-{:06d}.tar"
KEY_DIGITS = 9


def item_key(index: int) -> str:
    """WebDataset ``__key__`` of item ``index``; fixed width so keys sort like indices."""
    return f"{index:0{KEY_DIGITS}d}"


def key_index(key: str) -> int:
    return int(key)


def shard_name(i: int) -> str:
    return SHARD_PATTERN.format(i)

# Feature store names (``FEATURES/``). ``*.npy`` arrays are named without the suffix.
PARTS_DIR = "parts"
IMAGE, TEXT_VIEWS = "image", "text_views"
MMREC_IMAGE, MMREC_TEXT = "image_feat.npy", "text_feat.npy"  # the names MMRec reads, row = itemID


def accounting_line(name: str, t: dict) -> str:
    """One input file's entry of the manifest's ``counts.accounting`` as a line:
    ``reviews: 3,012 read = 2,411 kept + 61 rejected (...) + ...``."""
    def part(n: int, label: str, by: dict | None = None) -> str:
        detail = f" ({', '.join(f'{k} {v:,}' for k, v in by.items())})" if by else ""
        return f"{n:,} {label}{detail}"

    parts = [part(t["kept"], "kept")]
    if t["rejected"]:
        parts.append(part(sum(t["rejected"].values()), "rejected", t["rejected"]))
    if t["filtered"]:
        parts.append(part(sum(t["filtered"].values()), "filtered", t["filtered"]))
    if t["merged"]:
        parts.append(part(t["merged"], "merged duplicates"))
    return f"{name}: {t['read']:,} read = " + " + ".join(parts)
