"""Full-ranking Recall@K and NDCG@K as MMRec computes them.

All items are ranked for each user; the user's training items are masked out; Recall@K is
hits / |held-out items of the user|; NDCG@K uses binary gains with IDCG over
min(|held-out|, K). Averages run over users that have held-out items.
"""

from __future__ import annotations

import numpy as np
import torch

KS = (10, 20, 50)


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
        # IDCG over min(|held-out|, K) (fewer when there are fewer than K items at all)
        ideal = torch.cumsum(discount[:k], 0)[(n_truth.clamp(max=h.shape[1]) - 1).long()]
        out[f"ndcg@{k}"] = float((dcg / ideal).sum())
    return out


def csr_entries(indptr: np.ndarray, indices: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(local row, column) of every entry of the CSR rows ``rows``, vectorised."""
    starts, lengths = indptr[rows], indptr[rows + 1] - indptr[rows]
    local = np.repeat(np.arange(len(rows)), lengths)
    offsets = np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    return local, indices[np.repeat(starts, lengths) + offsets]


def top_items(user_vecs: torch.Tensor, item_vecs: torch.Tensor, users: np.ndarray, train, k: int,
              scores: torch.Tensor | None = None) -> np.ndarray:
    """(len(users), k) best items of each user by dot product, its training items masked.

    ``user_vecs`` are the rows of ``users``; scores are one (users x items) block, so the
    caller bounds memory by the number of users it passes, and may pass the block
    (``scores``, at least that many rows) to reuse it from chunk to chunk.
    """
    if scores is None:
        scores = user_vecs @ item_vecs.T
    else:
        scores = torch.mm(user_vecs, item_vecs.T, out=scores[:len(users)])
    r, c = csr_entries(train.indptr, train.indices, users)
    scores[torch.from_numpy(r).to(scores.device), torch.from_numpy(c).to(scores.device)] = -torch.inf
    return scores.topk(min(k, item_vecs.shape[0]), dim=1).indices.cpu().numpy()


def hit_sums(top: np.ndarray, users: np.ndarray, truth, num_items: int, ks=KS) -> dict[str, float]:
    """Summed Recall@K / NDCG@K of ``users`` (all with held-out items in ``truth``) given their
    ranked ``top`` items. Hits are found by looking the top-K item keys up in the sorted
    held-out keys, so no (users x items) truth matrix is built."""
    tr, tc = csr_entries(truth.indptr, truth.indices, users)
    truth_keys = tr * num_items + tc  # sorted: rows ascending, items sorted within a row
    top_keys = np.arange(len(users))[:, None] * num_items + top
    pos = np.minimum(np.searchsorted(truth_keys, top_keys), max(len(truth_keys) - 1, 0))
    hits = torch.from_numpy(truth_keys[pos] == top_keys) if len(truth_keys) else torch.zeros(top.shape, dtype=torch.bool)
    return metric_sums(hits, torch.from_numpy(truth.indptr[users + 1] - truth.indptr[users]), ks)


def evaluate_users(users_emb: torch.Tensor, items_emb: torch.Tensor, users: np.ndarray, train, truth,
                   batch_users: int, ks=KS) -> dict[str, float]:
    """Summed Recall@K / NDCG@K of ``users`` (full ranking, training items masked), scored
    ``batch_users`` at a time; ``train`` and ``truth`` are per-user item CSRs."""
    sums = dict.fromkeys([f"{m}@{k}" for m in ("recall", "ndcg") for k in ks], 0.0)
    for lo in range(0, len(users), batch_users):
        batch = users[lo:lo + batch_users]
        top = top_items(users_emb[torch.from_numpy(batch)], items_emb, batch, train, max(ks))
        for key, v in hit_sums(top, batch, truth, items_emb.shape[0], ks).items():
            sums[key] += v
    return sums
