"""Held-out image<->text retrieval per view: is the trained CLIP aligned on items it never saw?"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader

from cliper_dist import dist
from cliper_dist.encode.encoder import autocast
from cliper_dist.encode.pipeline import ImageNormalizer

KS = (1, 5)


def recall_at(scores: np.ndarray, ks: tuple[int, ...] = KS) -> dict[int, float]:
    """Query i's correct answer is candidate i: the share of queries that rank it within k."""
    correct = np.diag(scores)[:, None]
    rank = (scores > correct).sum(axis=1)  # ties count in the query's favour
    return {k: float((rank < k).mean()) for k in ks}


def retrieval_metrics(image: np.ndarray, text: np.ndarray, views: list[str]) -> dict[str, dict[str, float]]:
    """image (n, D) and text (n, C, D), unit rows -> per view i2t_r1, i2t_r5, t2i_r1, t2i_r5."""
    out = {}
    for c, name in enumerate(views):
        scores = image @ text[:, c].T
        i2t, t2i = recall_at(scores), recall_at(scores.T)
        out[name] = {**{f"i2t_r{k}": round(v, 4) for k, v in i2t.items()},
                     **{f"t2i_r{k}": round(v, 4) for k, v in t2i.items()}}
    return out


@torch.no_grad()
def embed_items(model: torch.nn.Module, normalizer: ImageNormalizer, loader: DataLoader, num_views: int,
                device: torch.device, dtype: torch.dtype) -> tuple[np.ndarray, np.ndarray]:
    """Unit image (n, D) and view (n, C, D) embeddings of the items ``loader`` yields (view -1 keys)."""
    images, texts = [], []
    with autocast(device, dtype):
        for pixels, tokens, _ in loader:
            images.append(model.encode_image(normalizer(pixels, device), normalize=True).float().cpu())
            text = model.encode_text(tokens.to(device), normalize=True).float().cpu()
            texts.append(text.view(len(pixels), num_views, -1))
    if not images:
        return np.zeros((0, 0), np.float32), np.zeros((0, num_views, 0), np.float32)
    return torch.cat(images).numpy(), torch.cat(texts).numpy()


def gather_rows(rows: tuple[np.ndarray, ...]) -> tuple[np.ndarray, ...]:
    """Every rank's arrays, concatenated in rank order (retrieval needs pairs aligned, not ordered)."""
    parts = dist.all_gather_object(rows)
    return tuple(np.concatenate([p[j] for p in parts if len(p[j])]) for j in range(len(rows)))

