"""FREEDOM's degree-sensitive pruning of the user-item graph (``model/bipartite.py``)."""

from __future__ import annotations

import numpy as np

from cliper_dist.model.bipartite import degree_sensitive_prune


def test_pruning_keeps_the_right_count_and_prefers_low_degree_edges():
    # user 0 and item 0 are hubs; the other edges join degree-1 nodes
    user = np.array([0] * 50 + list(range(1, 51)))
    item = np.array(list(range(50)) + [0] * 25 + list(range(50, 75)))
    kept_hub = 0
    for t in range(200):
        u, i = degree_sensitive_prune(user, item, 51, 75, 0.5, np.random.default_rng([t]))
        assert len(u) == 50 and len(set(zip(u.tolist(), i.tolist()))) == 50
        kept_hub += int(((u == 0) & (i == 0)).sum())
    assert kept_hub < 60  # the hub-hub edge has the lowest weight 1/sqrt(50*26)
