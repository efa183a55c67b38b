"""Which text views agree with the image: per-view similarity statistics and rank shares.

The rank matrix is the paper's Figure 5: entry (j, r) is the share of items whose view j
has the r-th highest similarity s_i^j to the item's image (rank 1 = the most important).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from cliper_dist.data.features import FeatureStore
from cliper_dist.data.fusion import view_similarity


def similarity(features: FeatureStore, tau: float | None = None, block: int = 65536) -> np.ndarray:
    """The stored (N, C) similarity, or eq. 2 recomputed from the raw embeddings with ``tau``."""
    if tau is None:
        return np.asarray(features.array("similarity"))
    import torch

    image, views = features.array("image"), features.array("text_views")
    out = np.empty((views.shape[1], views.shape[0]), dtype=np.float32)
    for lo in range(0, len(out), block):
        v = torch.from_numpy(np.array(views[:, lo:lo + block].transpose(1, 0, 2)))
        out[lo:lo + block] = view_similarity(v, torch.from_numpy(np.array(image[lo:lo + block])), tau).numpy()
    return out


def rank_shares(sim: np.ndarray) -> np.ndarray:
    """(C, C): share of items where view j has rank r (0 = highest similarity); rows sum to 1."""
    n, c = sim.shape
    ranks = np.argsort(np.argsort(-sim, axis=1, kind="stable"), axis=1, kind="stable")  # (N, C) rank of each view
    shares = np.zeros((c, c))
    for j in range(c):
        shares[j] = np.bincount(ranks[:, j], minlength=c) / max(n, 1)
    return shares


def view_stats(sim: np.ndarray, names: list[str]) -> dict[str, dict[str, float]]:
    shares = rank_shares(sim)
    return {name: {"mean": float(sim[:, j].mean()), "std": float(sim[:, j].std()),
                   "min": float(sim[:, j].min()), "median": float(np.median(sim[:, j])),
                   "max": float(sim[:, j].max()), "top1_share": float(shares[j, 0]),
                   "mean_rank": float((shares[j] * np.arange(1, len(names) + 1)).sum())}
            for j, name in enumerate(names)}


def rank_heatmap(shares: np.ndarray, names: list[str], path: str | Path, title: str = "") -> None:
    """A PNG of the rank matrix: rows = views, columns = rank 1..C, darker = more items.

    The colour scale runs from 0 to the largest share, so the pattern shows however many views.
    """
    font = ImageFont.load_default()
    cell_w, cell_h, left, top = 72, 34, 12 + 8 * max(len(n) for n in names), 50
    c = len(names)
    img = Image.new("RGB", (left + c * cell_w + 12, top + c * cell_h + 12), "white")
    draw = ImageDraw.Draw(img)
    draw.text((8, 6), title or "view importance: share of items per similarity rank", fill="black", font=font)
    lo, hi = np.array([255, 255, 255]), np.array([8, 48, 107])
    scale = max(float(shares.max()), 1e-9)
    for r in range(c):
        draw.text((left + r * cell_w + cell_w // 2 - 14, top - 16), f"rank {r + 1}", fill="black", font=font)
    for j, name in enumerate(names):
        y = top + j * cell_h
        draw.text((8, y + cell_h // 2 - 6), name, fill="black", font=font)
        for r in range(c):
            v = float(shares[j, r])
            color = tuple(int(x) for x in lo + (hi - lo) * v / scale)
            x = left + r * cell_w
            draw.rectangle([x, y, x + cell_w - 2, y + cell_h - 2], fill=color)
            draw.text((x + cell_w // 2 - 14, y + cell_h // 2 - 6), f"{100 * v:.1f}%",
                      fill="white" if v / scale > 0.5 else "black", font=font)
    img.save(path)


def feature_report(features: FeatureStore, view_result: dict, out_dir: str | Path) -> Path:
    """``feature_report.md`` and ``variance.png``: per modality (the image and each text view)
    identical and constant rows, constant dimensions and the per-dimension variance
    (``data.feature_stats``, the statistics train checks), beside the view similarity table
    and ``view_ranks.png``. Returns the page's path."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    from cliper_dist import files
    from cliper_dist.data import schema
    from cliper_dist.data.feature_stats import REFUSE_SHARE, WARN_SHARE, modality_stats
    from cliper_dist.data.features import ItemVectors

    out = Path(out_dir)
    names = features.manifest.views
    views = features.array(schema.TEXT_VIEWS)
    stats = [modality_stats(ItemVectors.of(features.array(schema.IMAGE)), "image")]
    stats += [modality_stats(ItemVectors.of(views[j]), f"text view {name}") for j, name in enumerate(names)]
    fig, ax = plt.subplots(figsize=(8, 3.6))
    for s in stats:
        ax.semilogy(np.sort(s.variance)[::-1] + 1e-12, label=s.name)
    ax.set_xlabel("dimension (by decreasing variance)")
    ax.set_ylabel("variance over items")
    ax.set_title("per-dimension variance of each modality")
    ax.legend(fontsize=7)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "variance.png", dpi=90)
    plt.close(fig)
    c = features.manifest.counts
    lines = [f"# Feature store report: {features.path}", "",
             f"Model `{features.manifest.model}`, {c.items:,} items, {len(names)} text views; {c.missing_image:,} "
             f"items encoded with the default image ({c.corrupt_image:,} corrupt; listed in `missing_images.txt`).",
             "", "## Rows and dimensions", "",
             f"Train refuses a modality whose identical rows or constant dimensions reach {REFUSE_SHARE:.0%} of all "
             f"(`model.accept_degenerate_features=true` accepts it) and warns from {WARN_SHARE:.0%}.", "",
             "| modality | identical rows | largest group | constant rows | constant dims "
             "| variance min / median / max |",
             "|---|---:|---:|---:|---:|---|"]
    for s in stats:
        v = s.as_dict()["variance"]
        lines.append(f"| {s.name} | {s.identical_rows:,} ({s.identical_share:.1%}) | {s.largest_group:,} | "
                     f"{s.constant_rows:,} | {s.constant_columns:,} of {s.width} | "
                     f"{v['min']:.3g} / {v['median']:.3g} / {v['max']:.3g} |")
    lines += ["", "![variance](variance.png)", "", f"## View similarity (tau = {view_result['tau']:g})", "",
              "| view | mean | std | top-1 share | mean rank |", "|---|---:|---:|---:|---:|"]
    lines += [f"| {n} | {s['mean']:.3f} | {s['std']:.3f} | {s['top1_share']:.1%} | {s['mean_rank']:.2f} |"
              for n, s in view_result["views"].items()]
    lines += ["", "![view ranks](view_ranks.png)"]
    page = out / "feature_report.md"
    files.write_text(page, "\n".join(lines) + "\n")
    return page
