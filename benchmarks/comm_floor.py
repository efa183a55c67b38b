"""What moving row_wise pooled partial sums costs on this host, with nothing else running: one
tensor of ``--batch`` x ``--features`` x ``--dim`` floats (the CTR benchmark's per-step traffic)
through gloo at ``--ranks`` ranks, each collective timed alone.

    python benchmarks/comm_floor.py [--batch 8192 --features 26 --dim 64 --ranks 2]

A ``row_wise`` EmbeddingBagCollection reduce-scatters that tensor forward and all-gathers as much
backward (docs/ctr.md, "Criteo-shaped scale"); ``all_to_all_single`` + a local sum is the same
reduce-scatter done by hand. One JSON line per collective (median ms over ``--repeats``), rank 0.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

import torch
import torch.distributed as dist


def timed(fn, repeats: int) -> float:
    fn()
    out = []
    for _ in range(repeats):
        dist.barrier()
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return statistics.median(out) * 1e3


def worker(args) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    world = dist.get_world_size()
    x = torch.randn(args.batch * args.features * args.dim)
    share, whole = torch.empty(x.numel() // world), torch.empty(x.numel())

    def by_hand():
        received = torch.empty_like(x)
        dist.all_to_all_single(received, x)
        torch.sum(received.view(world, -1), 0, out=share)

    collectives = {"reduce_scatter_tensor": lambda: dist.reduce_scatter_tensor(share, x),
                   "all_reduce": lambda: dist.all_reduce(x.clone()),
                   "all_to_all_single_then_sum": by_hand,
                   "all_gather_single": lambda: dist.all_gather_single(whole, share)}
    for name, fn in collectives.items():
        ms = timed(fn, args.repeats)
        if dist.get_rank() == 0:
            print(json.dumps({"bench": "comm_floor", "collective": name, "ranks": world,
                              "mb": round(x.numel() * 4 / 2**20, 1), "ms": round(ms, 2)}), flush=True)
    dist.destroy_process_group()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=8192)
    p.add_argument("--features", type=int, default=26)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--ranks", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(args)
    flags = [f"--{k}={getattr(args, k)}" for k in ("batch", "features", "dim", "repeats")]
    sys.exit(subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                             f"--nproc_per_node={args.ranks}", __file__, "--worker", *flags]).returncode)


if __name__ == "__main__":
    main()
