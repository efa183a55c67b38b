"""Full-ranking Recall@K and NDCG@K as MMRec computes them.

All items are ranked for each user; the user's training items are masked out; Recall@K is
hits / |held-out items of the user|; NDCG@K uses binary gains with IDCG over
min(|held-out|, K). Averages run over users that have held-out items.
"""

from __future__ import annotations

import torch

KS = (10, 20, 50)


def topk_hits(scores: torch.Tensor, truth: torch.Tensor, k: int) -> torch.Tensor:
    """(B, k) 0/1 hits of each user's top-k; ``truth`` is a (B, I) 0/1 mask of held-out items."""
    top = scores.topk(min(k, scores.shape[1]), dim=1).indices
    return truth.gather(1, top)


def metric_sums(hits: torch.Tensor, n_truth: torch.Tensor, ks=KS) -> dict[str, float]:
    """Summed (not averaged) recall@k and ndcg@k over the rows, so ranks can add them up."""
    hits = hits.double()
    n_truth = n_truth.double()
    discount = 1.0 / torch.log2(torch.arange(2, hits.shape[1] + 2, dtype=torch.float64))
    out = {}
    for k in ks:
        h = hits[:, :k]
        out[f"recall@{k}"] = float((h.sum(1) / n_truth).sum())
        dcg = (h * discount[:k]).sum(1)
        ideal = torch.cumsum(discount[:k], 0)[(n_truth.clamp(max=k) - 1).long()]
        out[f"ndcg@{k}"] = float((dcg / ideal).sum())
    return out
