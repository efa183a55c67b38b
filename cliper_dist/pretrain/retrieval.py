"""Held-out image<->text retrieval per view: is the trained CLIP aligned on items it never saw?

Items can share a prompt: every item of a brand has the same brand view, every item without
a description the same "Missing" one. Such texts are indistinguishable, so a candidate
whose prompt equals the query item's (the same token row) counts as a right answer, and
each view reports its own chance level.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader

from cliper_dist import dist
from cliper_dist.encode.encoder import autocast
from cliper_dist.encode.pipeline import ImageNormalizer

KS = (1, 5)


def recall_at(scores: np.ndarray, correct: np.ndarray, ks: tuple[int, ...] = KS) -> dict[int, float]:
    """Share of queries (rows) with a right candidate (``correct``) among their top k: fewer than
    k wrong candidates score above the best right one (ties count in the query's favour)."""
    best = np.where(correct, scores, -np.inf).max(axis=1, keepdims=True)
    rank = ((scores > best) & ~correct).sum(axis=1)
    return {k: float((rank < k).mean()) for k in ks}


def retrieval_metrics(image: np.ndarray, text: np.ndarray, tokens: np.ndarray,
                      views: list[str]) -> dict[str, dict[str, float]]:
    """image (n, D), text (n, C, D) unit rows, tokens (n, C, L) -> per view: i2t_r1, i2t_r5,
    t2i_r1, t2i_r5, chance_r1 (a random ranking's R@1) and distinct_texts."""
    out = {}
    for c, name in enumerate(views):
        _, group = np.unique(tokens[:, c], axis=0, return_inverse=True)
        group = group.reshape(-1)
        correct = group[:, None] == group[None, :]  # symmetric: serves both directions
        scores = image @ text[:, c].T
        i2t, t2i = recall_at(scores, correct), recall_at(scores.T, correct)
        out[name] = {**{f"i2t_r{k}": round(v, 4) for k, v in i2t.items()},
                     **{f"t2i_r{k}": round(v, 4) for k, v in t2i.items()},
                     "chance_r1": round(float(correct.mean()), 4), "distinct_texts": int(group.max()) + 1}
    return out


@torch.no_grad()
def embed_items(model: torch.nn.Module, normalizer: ImageNormalizer, loader: DataLoader, num_views: int,
                device: torch.device, dtype: torch.dtype) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unit image (n, D) and view (n, C, D) embeddings, and the view tokens (n, C, L), of the
    items ``loader`` yields (keys with view -1: every view)."""
    images, texts, tokens = [], [], []
    with autocast(device, dtype):
        for pixels, rows, _ in loader:
            images.append(model.encode_image(normalizer(pixels, device), normalize=True).float().cpu())
            text = model.encode_text(rows.to(device), normalize=True).float().cpu()
            texts.append(text.view(len(pixels), num_views, -1))
            tokens.append(rows.view(len(pixels), num_views, -1))
    if not images:
        return np.zeros((0, 0), np.float32), np.zeros((0, num_views, 0), np.float32), np.zeros((0, num_views, 0))
    return torch.cat(images).numpy(), torch.cat(texts).numpy(), torch.cat(tokens).numpy()


def gather_rows(rows: tuple[np.ndarray, ...]) -> tuple[np.ndarray, ...]:
    """Every rank's arrays, concatenated in rank order (retrieval needs pairs aligned, not ordered)."""
    parts = dist.all_gather_object(rows)
    return tuple(np.concatenate([p[j] for p in parts if len(p[j])]) for j in range(len(rows)))
