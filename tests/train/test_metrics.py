"""Full-ranking Recall/NDCG@K against a brute-force, loop-by-loop implementation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from cliper_dist.data.recdata import CSR
from cliper_dist.train.metrics import KS, evaluate_users


def brute_force(scores: np.ndarray, train: dict, truth: dict, k: int) -> tuple[float, float]:
    """Mean Recall@k and NDCG@k over users with held-out items, one user at a time."""
    recalls, ndcgs = [], []
    for u, held in truth.items():
        if not held:
            continue
        s = scores[u].astype(np.float64).copy()
        for i in train.get(u, ()):
            s[i] = -np.inf
        ranked = sorted(range(len(s)), key=lambda i: -s[i])[:k]
        hits = [1.0 if i in held else 0.0 for i in ranked]
        recalls.append(sum(hits) / len(held))
        dcg = sum(h / math.log2(r + 2) for r, h in enumerate(hits))
        idcg = sum(1.0 / math.log2(r + 2) for r in range(min(len(held), k)))
        ndcgs.append(dcg / idcg)
    return float(np.mean(recalls)), float(np.mean(ndcgs))


def _csr(pairs: dict, num_users: int) -> CSR:
    u = np.array([u for u, items in pairs.items() for _ in items], dtype=np.int64)
    i = np.array([i for items in pairs.values() for i in items], dtype=np.int64)
    return CSR.build(u, i, num_users)


@pytest.mark.parametrize("num_items,batch", [(80, 7), (40, 1000)])
def test_metrics_match_brute_force(num_items, batch):
    rng = np.random.default_rng(3)
    num_users, dim = 37, 6
    users_emb = torch.from_numpy(rng.normal(size=(num_users, dim)).astype(np.float32))
    items_emb = torch.from_numpy(rng.normal(size=(num_items, dim)).astype(np.float32))
    train, truth = {}, {}
    for u in range(num_users):
        items = rng.permutation(num_items)
        n_train, n_truth = rng.integers(1, 12), rng.integers(0, 6)  # some users have no held-out item
        train[u] = set(items[:n_train].tolist())
        truth[u] = set(items[n_train:n_train + n_truth].tolist())
    has = np.array([u for u in range(num_users) if truth[u]])
    sums = evaluate_users(users_emb, items_emb, has, _csr(train, num_users), _csr(truth, num_users), batch)
    scores = (users_emb @ items_emb.T).numpy()
    for k in KS:
        recall, ndcg = brute_force(scores, train, truth, k)
        assert sums[f"recall@{k}"] / len(has) == pytest.approx(recall, abs=1e-9)
        assert sums[f"ndcg@{k}"] / len(has) == pytest.approx(ndcg, abs=1e-9)


def test_split_by_user_sums_add_up():
    """Two disjoint user halves (as two ranks evaluate them) sum to the whole."""
    rng = np.random.default_rng(0)
    ue, ie = torch.randn(20, 4), torch.randn(30, 4)
    train = {u: set(rng.choice(30, 3, replace=False).tolist()) for u in range(20)}
    truth = {u: set(rng.choice(30, 2, replace=False).tolist()) - train[u] or {29} for u in range(20)}
    tr, te = _csr(train, 20), _csr(truth, 20)
    users = np.arange(20)
    whole = evaluate_users(ue, ie, users, tr, te, 8)
    halves = [evaluate_users(ue, ie, users[r::2], tr, te, 8) for r in (0, 1)]
    for key, v in whole.items():
        assert halves[0][key] + halves[1][key] == pytest.approx(v, abs=1e-12)
