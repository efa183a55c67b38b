"""Full-ranking evaluation under the column-parallel layout, in memory bounded by config.

Each rank holds its columns of the final user and item embeddings. The item matrix is
gathered whole on every rank (I x d); the users with held-out items are dealt out across
ranks. Chunk by chunk of ``eval_batch_users`` users, every rank receives the full rows of
its own users (one all-to-all), scores them against all items (``eval_batch_users`` x I
floats, never U x I), masks their training items, takes the top 50 once and counts hits
for valid and test from the same ranking. The summed metrics are all-reduced and averaged.
Memory beyond the embeddings: I x d + eval_batch_users x (I + d) floats per rank.

Full ranking over every such user is the default. For huge user sets ``eval_users`` picks a
fixed seeded sample of them (the same users at every evaluation and world size): the
metrics are then an estimate, which the job labels as such.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.distributed as dist

from cliper_dist.data.recdata import RecData
from cliper_dist.dist import Progress
from cliper_dist.model.base import Recommender
from cliper_dist.parallel.columns import ColumnSplit
from cliper_dist.parallel.comm import gather_columns, rows_to_owners
from cliper_dist.train.metrics import KS, hit_sums, top_items

SPLITS = ("valid", "test")


def evaluated_users(data: RecData) -> np.ndarray:
    """The users with valid or test items, sorted."""
    return np.flatnonzero((data.valid.lengths() > 0) | (data.test.lengths() > 0))


def sample_users(users: np.ndarray, n: int, seed: int) -> np.ndarray | None:
    """A fixed sample of ``n`` of the evaluated ``users`` (sorted), or None when ``n`` is 0 or covers
    them all."""
    if n <= 0 or n >= len(users):
        return None
    return np.sort(np.random.default_rng([seed, 5]).choice(users, size=n, replace=False))


@torch.no_grad()
def evaluate(model: Recommender, data: RecData, split: ColumnSplit, batch_users: int,
             users: np.ndarray | None = None) -> dict[str, dict[str, float]]:
    """Valid and test Recall/NDCG@{10,20,50}, averaged over the users with held-out items
    (among ``users``, a sorted sample of them, when given)."""
    users_local, items_local = model.embeddings()
    dim, device, blocks = model.cfg.embedding_dim, users_local.device, model.score_blocks
    parts = [gather_columns(b, dim, split) for b in items_local.chunk(blocks, dim=1)]
    del items_local
    items = parts[0] if blocks == 1 else torch.cat(parts, dim=1)  # no copy of a single block (I x d)
    del parts
    truths = {"valid": data.valid, "test": data.test}
    has = {name: truth.lengths() > 0 for name, truth in truths.items()}
    candidates = evaluated_users(data) if users is None else users
    if users is not None:  # averages over the sample's users only
        chosen = np.zeros(data.num_users, dtype=bool)
        chosen[users] = True
        has = {name: h & chosen for name, h in has.items()}
    dealt = [candidates[q::split.world_size] for q in range(split.world_size)]
    keys = [f"{m}@{k}" for m in ("recall", "ndcg") for k in KS]
    sums = np.zeros((len(SPLITS), len(keys)))
    scores = items.new_empty(batch_users, data.num_items)  # one block for every chunk
    progress = Progress(len(candidates), desc="eval", unit="user")
    for lo in range(0, max(len(users) for users in dealt), batch_users):  # the same count on every rank
        chunks = [users[lo:lo + batch_users] for users in dealt]
        progress.update(sum(len(c) for c in chunks))
        rows = [torch.from_numpy(u).to(device) for u in chunks]
        vectors = torch.cat([rows_to_owners(b, dim, rows, split) for b in users_local.chunk(blocks, dim=1)], dim=1)
        users = chunks[split.rank]
        if not len(users):
            continue
        top = top_items(vectors, items, users, data.train, max(KS), scores)
        for s, name in enumerate(SPLITS):
            keep = has[name][users]
            if keep.any():
                found = hit_sums(top[keep], users[keep], truths[name], data.num_items)
                sums[s] += [found[k] for k in keys]
    progress.close()
    total = torch.from_numpy(sums).to(device)
    if split.world_size > 1:
        dist.all_reduce(total)
    total = total.cpu().numpy()
    return {name: {k: round(float(v) / max(int(has[name].sum()), 1), 6) for k, v in zip(keys, total[s])}
            for s, name in enumerate(SPLITS)}
