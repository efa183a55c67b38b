"""Recall@k and time of the HNSW item kNN graph (``model.knn=hnsw``) against the exact search.

    python benchmarks/knn_recall.py [--items 50000 --dim 768 --centres 2000 --noise 0.7 --k 11]
    python benchmarks/knn_recall.py --items 300000 --sample 20000 --k 10 --blocks 1,2   # issue 9's x60 check
    python benchmarks/knn_recall.py --unstructured ...                                   # plain Gaussian vectors

The stand-in features are a mixture of Gaussians around ``--centres`` centres, as real CLIP
embeddings cluster (on unstructured random vectors every ANN index degrades). The exact
neighbours of a seeded sample of ``--sample`` items are the reference. For each number of
blocks P the index is built the way P ranks build it (``hnsw_index`` and ``block_candidates``
per block, then ``merge_candidates``), here one block after the other in one process: ``build_s_max``
is what the slowest rank would take. One JSON line per P, then the exact search's time for
the sample and its extrapolation to every item, measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cliper_dist.data.features import ItemVectors  # noqa: E402
from cliper_dist.model.item_graph import (KnnSearch, block_candidates, hnsw_index, merge_candidates,  # noqa: E402
                                          overlap)
from cliper_dist.parallel.columns import ColumnSplit  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=50000)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--centres", type=int, default=2000)
    parser.add_argument("--noise", type=float, default=0.7)
    parser.add_argument("--k", type=int, default=11, help="neighbours, self included (FREEDOM's knn_k=10 + self)")
    parser.add_argument("--sample", type=int, default=2000)
    parser.add_argument("--blocks", default="1,2,4")
    parser.add_argument("--hnsw-m", type=int, default=16)
    parser.add_argument("--hnsw-ef", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--unstructured", action="store_true", help="plain Gaussian vectors, no clusters")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    if args.unstructured:
        x = rng.standard_normal((args.items, args.dim), dtype=np.float32)
    else:
        centres = rng.standard_normal((args.centres, args.dim)).astype(np.float32)
        x = centres[rng.integers(args.centres, size=args.items)]
        x += args.noise * rng.standard_normal(x.shape, dtype=np.float32)
    unit = F.normalize(torch.from_numpy(x), dim=1)
    sample = np.sort(rng.choice(args.items, size=min(args.sample, args.items), replace=False))

    start = time.perf_counter()
    exact = torch.cat([(unit[rows] @ unit.T).topk(args.k, dim=1).indices  # 1024 x I at a time
                       for rows in torch.from_numpy(sample).split(1024)])
    exact_s = time.perf_counter() - start

    search = KnnSearch("hnsw", args.hnsw_m, args.hnsw_ef)
    for blocks in (int(b) for b in args.blocks.split(",")):
        per_block, candidates = [], []
        for rank in range(blocks):
            start = time.perf_counter()
            block = ColumnSplit(rank, blocks).bounds(args.items)
            index = hnsw_index(ItemVectors.of(unit), block, search)
            candidates.append(block_candidates(index, unit, args.k, block, search))
            per_block.append(time.perf_counter() - start)
        sims, ids = (torch.cat([c[i] for c in candidates], dim=1) for i in (0, 1))
        approx = merge_candidates(sims, ids, args.k)[sample]
        recall = overlap(approx, exact)
        print(json.dumps({"bench": "knn_recall", "items": args.items, "dim": args.dim, "k": args.k,
                          "features": "unstructured" if args.unstructured else f"{args.centres} centres",
                          "blocks": blocks, "hnsw_m": args.hnsw_m, "hnsw_ef": args.hnsw_ef,
                          f"recall@{args.k}": round(float(recall), 4),
                          "build_and_search_s_max": round(max(per_block), 2),
                          "build_and_search_s_total": round(sum(per_block), 2)}), flush=True)
    print(json.dumps({"bench": "knn_recall", "exact_sample_s": round(exact_s, 2), "sample": len(sample),
                      "exact_all_items_s_estimate": round(exact_s * args.items / len(sample), 1)}))


if __name__ == "__main__":
    main()
