"""What one blocking collective costs on this host while the ranks compute: a step of the same
compute on every rank, cut into ``k`` segments by an all-reduce of a few floats, at 1 rank and at
2 ranks, and the all-reduce's latency alone.

    python benchmarks/sync_cost.py [--syncs 0,1,2,4,8 --segments 48 --steps 20]

A step is ``--segments`` matrix products of the shape the sequential benchmark's softmax makes
(``--rows`` x 64 by 64 x ``--items``), split evenly between the ``k`` all-reduces, so every rank
computes alike and a step at 2 ranks costs what it costs at 1 rank plus what the collectives add:
their own latency and the wait for the slower rank. A distributed step that makes more blocking
collectives (the sequential task's torchrec lookup, softmax and dense all-reduce: docs/sequential.md)
pays that per collective. Then the all-reduce alone, 60 times back to back and 60 times after 5 ms
of compute each.

One JSON line per world size, its ``rows``: one per k (median ms a step over ``--repeats``) and,
at 2 ranks, one per latency mode; then a summary: ``ms_per_sync_2_ranks`` ((step at k - step at 0)
/ k, both at 2 ranks in the same run).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parent))
from workers import run_json  # noqa: E402


def step_ms(k: int, args, a: torch.Tensor, b: torch.Tensor, x: torch.Tensor) -> float:
    times = []
    for _ in range(args.repeats):
        dist.barrier()
        start = time.perf_counter()
        for _ in range(args.steps):
            for _ in range(max(k, 1)):
                for _ in range(args.segments // max(k, 1)):
                    (a @ b).exp_()
                if k:
                    dist.all_reduce(x)
        times.append((time.perf_counter() - start) / args.steps * 1e3)
    return statistics.median(times)


def latency_ms(compute_ms: float, a: torch.Tensor, x: torch.Tensor) -> tuple[float, float]:
    times = []
    for _ in range(60):
        start = time.perf_counter()
        while time.perf_counter() - start < compute_ms / 1e3:
            a @ a.T
        start = time.perf_counter()
        dist.all_reduce(x)
        times.append(time.perf_counter() - start)
    times.sort()
    return times[len(times) // 2] * 1e3, times[int(len(times) * 0.9)] * 1e3


def worker(args) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    world, rank = dist.get_world_size(), dist.get_rank()
    g = torch.Generator().manual_seed(0)
    a, b, x = torch.randn(args.rows, 64, generator=g), torch.randn(64, args.items, generator=g), torch.zeros(16)
    rows = [{"ranks": world, "syncs_per_step": k, "ms_per_step": round(step_ms(k, args, a, b, x), 2)}
            for k in map(int, args.syncs.split(","))]
    if world > 1:
        for mode, compute in (("back_to_back", 0.0), ("after_5ms_compute", 5.0)):
            p50, p90 = latency_ms(compute, a, x)
            rows.append({"ranks": world, "latency": mode, "all_reduce_floats": 16, "p50_ms": round(p50, 3),
                         "p90_ms": round(p90, 3)})
    if rank == 0:
        print(json.dumps({"bench": "sync_cost", "rows": rows}), flush=True)
    dist.destroy_process_group()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--syncs", default="0,1,2,4,8", help="all-reduces a step (comma-separated)")
    p.add_argument("--segments", type=int, default=48, help="matrix products a step")
    p.add_argument("--rows", type=int, default=1130, help="positions a rank scores (seq_scale at 256 users, 2 ranks)")
    p.add_argument("--items", type=int, default=1000)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    syncs = [int(k) for k in args.syncs.split(",")]
    if 0 not in syncs or any(k and args.segments % k for k in syncs):
        p.error(f"--syncs must hold 0 and divide --segments {args.segments} evenly; got {args.syncs}")
    if args.worker:
        return worker(args)
    flags = [f"--{k}={getattr(args, k)}" for k in ("syncs", "segments", "rows", "items", "steps", "repeats")]
    by_ranks = {}
    for ranks in (1, 2):
        out = run_json([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}",
                        __file__, "--worker", *flags], f"sync_cost x{ranks}")
        by_ranks[ranks] = {r["syncs_per_step"]: r["ms_per_step"] for r in out["rows"] if "syncs_per_step" in r}
    two = by_ranks[2]
    print(json.dumps({"summary": "sync_cost", "ms_per_step_1_rank": by_ranks[1], "ms_per_step_2_ranks": two,
                      "ms_per_sync_2_ranks": {k: round((two[k] - two[0]) / k, 2) for k in two if k and 0 in two}}),
          flush=True)


if __name__ == "__main__":
    main()
