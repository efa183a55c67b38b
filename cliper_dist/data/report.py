"""One page on a dataset directory, to read before training: ``report.md`` and its PNG figures.

    interactions per user and per item (log-log), the split's sizes, missing text fields by
    field, images by status, rejects by kind with examples, and every input file's row
    accounting (read = kept + rejected + filtered + merged; the k-core's work among them).

Everything comes from the directory's own files (manifest, items.jsonl, rejects.jsonl,
interactions.inter); shards are not read. ``tools/inspect_dataset.py DATASET --report DIR``.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from cliper_dist import files
from cliper_dist.data import schema
from cliper_dist.data.dataset import DatasetDir

REJECTS = "rejects.jsonl"
EXAMPLES = 3  # rejects shown per kind
IMAGE_STATUSES = ("present", "never fetched", "failed", "corrupt", "none named")


def image_status(item: dict, rejected: dict[str, str]) -> str:
    """An item's image: present, never fetched (a URL recorded without --download), failed
    (unreadable or a failed download), corrupt, or none named."""
    if item.get("has_image"):
        return "present"
    kind = rejected.get(item.get("item_id"))
    if kind == "bad_image":
        return "corrupt"
    if kind == "image_unavailable":
        return "failed"
    image = item.get("image") or ""
    return "never fetched" if image.startswith(("http://", "https://")) else ("failed" if image else "none named")


def _loglog(ax, counts: np.ndarray, what: str) -> None:
    degree, n = np.unique(counts[counts > 0], return_counts=True)
    ax.loglog(degree, n, "o", markersize=3)
    ax.set_xlabel(f"interactions per {what}")
    ax.set_ylabel(f"{what}s")
    median = np.median(counts) if len(counts) else 0
    ax.set_title(f"{len(counts):,} {what}s, median {median:g}, max {counts.max(initial=0):,}")
    ax.grid(True, which="both", alpha=0.3)


def write_report(dataset: str | Path, out_dir: str | Path) -> Path:
    """Write ``report.md``, ``degrees.png`` and ``fields.png`` into ``out_dir``; returns the page's path."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    ds = DatasetDir.open(dataset, flag="DATASET")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    m = ds.manifest
    c = m["counts"]
    inter = ds.interactions()
    user_n = np.bincount(inter.user, minlength=ds.num_users)
    item_n = np.bincount(inter.item, minlength=ds.num_items)

    rejects_path = ds.path / REJECTS
    by_kind: dict[str, list[dict]] = {}  # the first EXAMPLES of each kind (the counts are the manifest's)
    image_rejects: dict[str, str] = {}
    for row in files.read_jsonl(rejects_path) if rejects_path.is_file() else ():
        examples = by_kind.setdefault(row["kind"], [])
        if len(examples) < EXAMPLES:
            examples.append(row)
        if row["kind"] in ("bad_image", "image_unavailable"):
            image_rejects[row["id"]] = row["kind"]
    empty, images = Counter(), Counter()
    for item in files.read_jsonl(ds.path / schema.ITEMS):
        empty.update(f for f in schema.TEXT_FIELDS if not item.get(f))
        images[image_status(item, image_rejects)] += 1

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    _loglog(axes[0], user_n, "user")
    _loglog(axes[1], item_n, "item")
    fig.tight_layout()
    fig.savefig(out / "degrees.png", dpi=90)
    plt.close(fig)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
    fields = list(schema.TEXT_FIELDS)
    axes[0].barh(fields, [empty[f] for f in fields])
    axes[0].set_title(f"items missing each text field (of {ds.num_items:,})")
    axes[1].barh(IMAGE_STATUSES, [images[s] for s in IMAGE_STATUSES])
    axes[1].set_title("images by status")
    for ax in axes:
        ax.invert_yaxis()
    fig.tight_layout()
    fig.savefig(out / "fields.png", dpi=90)
    plt.close(fig)

    n = ds.num_items or 1
    split = c["interactions"]
    lines = [f"# Dataset report: {ds.path}", "",
             f"Source: `{m['source'].get('format')}`; split: {m['split']}. {ds.num_items:,} items, {ds.num_users:,} "
             f"users, {split['total']:,} interactions "
             f"(density {split['total'] / max(1, ds.num_items * ds.num_users):.2e}).",
             "", "## Interactions per user and per item", "", "![degrees](degrees.png)", "",
             f"Users with fewer than 3 interactions: {int((user_n < 3).sum()):,}; items with none: "
             f"{int((item_n == 0).sum()):,} (they can be recommended only from their content).", "",
             "## Split", "", "| split | interactions | share |", "|---|---:|---:|"]
    lines += [f"| {k} | {split.get(k, 0):,} | {split.get(k, 0) / max(1, split['total']):.1%} |"
              for k in ("train", "valid", "test")]
    lines += ["", "## Text and images", "", "![fields](fields.png)", "", "| text field | items missing it | share |",
              "|---|---:|---:|"]
    lines += [f"| {f} | {empty[f]:,} | {empty[f] / n:.1%} |" for f in fields]
    lines += ["", "| image status | items | share |", "|---|---:|---:|"]
    lines += [f"| {s} | {images[s]:,} | {images[s] / n:.1%} |" for s in IMAGE_STATUSES]
    lines += ["", f"## Rejects ({sum(c['rejects'].values()):,}, listed in `{REJECTS}`)", ""]
    if not by_kind:
        lines += ["None.", ""]
    for kind, rows in sorted(by_kind.items()):
        lines += [f"**{kind}** ({c['rejects'].get(kind, len(rows)):,}), e.g.:", ""]
        lines += [f"- `{r['where']}` {('`' + str(r['id']) + '` ') if r.get('id') else ''}{r['reason']}"
                  for r in rows]
        lines.append("")
    lines += ["## Where every input row went", "",
              "rows read = kept + rejected (listed in `rejects.jsonl`) + filtered (counted, not listed) + merged "
              "(exact duplicate interactions).", "",
              "| input | read | kept | rejected | filtered | merged |", "|---|---:|---:|---:|---:|---:|"]
    detail = lambda d: ", ".join(f"{k} {v:,}" for k, v in d.items()) or "0"
    for name, t in c.get("accounting", {}).items():
        lines.append(f"| {name} | {t['read']:,} | {t['kept']:,} | {detail(t['rejected'])} | {detail(t['filtered'])} "
                     f"| {t['merged']:,} |")
    if "k_core" in m["source"]:
        lines += ["", f"k-core filter (k = {m['source']['k_core']}): {c.get('reviews_outside_k_core', 0):,} reviews "
                  f"outside the core, {c.get('meta_items_outside_k_core', 0):,} metadata items outside it. "
                  "`k_core_user`: the review's user had fewer than k reviews; `k_core_item`: its item had; reviews "
                  "of items without metadata are `unknown_item` rejects, inside the core or not."]
    if c.get("duplicate_interactions"):
        kept = m["options"].get("keep_duplicates")
        lines += ["", f"Exact duplicate interactions: {c['duplicate_interactions']:,} "
                  f"({'kept as rows' if kept else 'merged into their first occurrence'})."]
    page = out / "report.md"
    files.write_text(page, "\n".join(lines) + "\n")
    return page
