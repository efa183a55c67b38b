"""The column-parallel layout: each rank owns a block of every tensor's last dimension.

LightGCN and FREEDOM propagate embeddings linearly, with no dense transform between
layers, so the embedding columns are independent: (A E)[:, c] = A E[:, c]. Rank r of P
therefore holds columns [lo_r, hi_r) of the ID tables, of the fine-tuned feature tables and
of the projections, propagates its columns over the whole graph without communication, and
the ranks meet only where a dot product sums over columns (the batch's scores) or a
projection sums over feature columns (``comm``). The graph structure is on every rank.
"""
