"""The CTR model at Criteo's shape: 26 sparse features, 13 dense, tables from Criteo's long tail with
the largest at 10M ids x 64, ``row_wise``, at 1 and 2 ranks x 1 thread.

    python benchmarks/ctr_scale.py [--rows 10000000 --largest 10000000 --dim 64 --batch 8192]
                                   [--bottom-mlp 128 --top-mlp 256,128]

Synthetic samples, generated per batch from (seed, step) and never held whole: each sparse feature
draws Zipf-like ids (hot ids scattered over the table by a multiplicative hash, so no rank owns all
of them), the dense features are normal, the label is planted on a dense feature and two ids. The
model is the job's (``ShardedCtr``: torchrec's DLRM, the planner with ``row_wise`` forced, DMP, fused
row-wise Adagrad + Adam) stepped by ``TrainPipelineSparseDist``. ``--rows`` samples are one epoch at
2 ranks; 1 rank trains ``--rows-1`` of them (the same batches' first part) for its rate. One JSON
line per world size: samples/s, seconds per phase (build: plan + DMP + table init; steps), this
rank's table bytes, peak RSS per rank; then the ratios. ``--profile`` adds rank 0's costliest ops
(ms a step) to each line; ``--sharding auto`` lets torchrec's planner choose, ``--sharding table_wise
--row-wise-min-rows N`` splits only the tables of N rows or more (docs/ctr.md compares).
``--bottom-mlp 512,256 --top-mlp 512,512,256`` is the architecture of torchrec's DLRM example for
Criteo (``dlrm_main.py``: dense arch 512,256,64, over arch 512,512,256,1), about 4x the compute per
sample of the default, against the same traffic of pooled embeddings.
"""

from __future__ import annotations

import argparse
import contextlib
import json
from collections import Counter
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from torchrec import KeyedJaggedTensor  # noqa: E402
from torchrec.datasets.utils import Batch  # noqa: E402
from torchrec.distributed.train_pipeline import TrainPipelineSparseDist  # noqa: E402

from cliper_dist import dist  # noqa: E402
from cliper_dist.ctr.config import DLRMConfig  # noqa: E402
from cliper_dist.ctr.model import ShardedCtr, TableSpec  # noqa: E402
from cliper_dist.parallel.optim import OptimConfig  # noqa: E402
from cliper_dist.train.job import peak_rss_mb  # noqa: E402
from workers import run_json  # noqa: E402

DENSE = 13
# Criteo Kaggle's 26 categorical cardinalities, largest first (dlrm's day_fea_count), rescaled so the
# largest is --largest: the long tail of table sizes
CRITEO = [10131227, 8351593, 7046547, 5461306, 2202608, 286181, 142572, 93145, 12517, 11156, 5652, 5548, 3194,
          2173, 1469, 633, 305, 105, 27, 24, 20, 18, 15, 10, 4, 3]
HASH = 2654435761


def tables(largest: int) -> list[TableSpec]:
    scale = largest / CRITEO[0]
    return [TableSpec(f"c{k}", max(2, int(n * scale))) for k, n in enumerate(CRITEO)]


def batch(specs: list[TableSpec], step: int, rows: int, rank: int, world: int, seed: int) -> Batch:
    """Rank ``rank``'s share of global batch ``step`` (the same samples at any world size)."""
    g = np.random.default_rng([seed, step])
    n = rows // world
    values = []
    for spec in specs:
        hot = np.floor(spec.num_rows * g.random(rows) ** 4).astype(np.int64)  # Zipf-like: most draws near 0
        values.append(((hot * HASH) % spec.num_rows)[rank * n:(rank + 1) * n])
    dense = g.normal(size=(rows, DENSE)).astype(np.float32)[rank * n:(rank + 1) * n]
    ids = np.stack(values)
    logit = 2 * dense[:, 0] + np.where(ids[0] % 2 == 0, 1.0, -1.0) + np.where(ids[5] % 3 == 0, 1.0, -0.5)
    label = (g.random(rows)[rank * n:(rank + 1) * n] < 1 / (1 + np.exp(-logit))).astype(np.float32)
    kjt = KeyedJaggedTensor.from_lengths_sync(keys=[s.name for s in specs], values=torch.from_numpy(ids.ravel()),
                                              lengths=torch.ones(len(specs) * n, dtype=torch.int32))
    return Batch(torch.from_numpy(dense), kjt, torch.from_numpy(label))


def one_world(args) -> None:
    torch.set_num_threads(args.threads)
    info = dist.init(device="cpu")
    specs = tables(args.largest)
    t0 = time.perf_counter()
    cfg = DLRMConfig(embedding_dim=args.dim, bottom_mlp=args.bottom_mlp, top_mlp=args.top_mlp, bottom_out="relu",
                     sharding=args.sharding, row_wise_min_rows=args.row_wise_min_rows)
    model = ShardedCtr(cfg, OptimConfig(), specs, DENSE, args.batch // info.world_size, 0, info.world_size,
                       info.device)
    pipeline = TrainPipelineSparseDist(model.dmp, model.optimizer, device=info.device)
    build_s = time.perf_counter() - t0
    rows = args.rows if info.world_size > 1 else args.rows_1
    steps = rows // args.batch
    gen_s = 0.0

    def batches():
        nonlocal gen_s
        for step in range(steps):
            t = time.perf_counter()
            b = batch(specs, step, args.batch, info.rank, info.world_size, 0)
            gen_s += time.perf_counter() - t
            yield b

    model.dmp.train()
    t1 = time.perf_counter()
    losses = []
    it = batches()
    profiler = (torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) if args.profile
                else contextlib.nullcontext())
    with profiler:
        while True:
            try:
                loss, _, _ = pipeline.progress(it)
            except StopIteration:
                break
            losses.append(float(loss))
    steps_s = time.perf_counter() - t1
    rss = dist.all_gather_object(round(peak_rss_mb(), 1))
    table_bytes = dist.all_gather_object(model.table_bytes())
    if info.is_main:
        print(json.dumps({"ranks": info.world_size, "samples": steps * args.batch, "steps": steps,
                          "samples_per_s": round(steps * args.batch / steps_s, 1),
                          "phase_s": {"build": round(build_s, 2), "steps": round(steps_s, 2),
                                      "of_which_batch_generation_rank0": round(gen_s, 2)},
                          "table_mb_per_rank": [round(b / 2**20, 1) for b in table_bytes],
                          "peak_rss_mb": rss, "loss_first_last": [round(losses[0], 4), round(losses[-1], 4)],
                          "plan": plan_counts(model.plan_rows()),
                          "largest_table": [specs[0].num_rows, args.dim], "batch": args.batch,
                          "mlps": [args.bottom_mlp + [args.dim], args.top_mlp + [1]],
                          "threads": args.threads, **(top_ops(profiler, steps) if args.profile else {})}), flush=True)


def plan_counts(rows: list[dict]) -> dict[str, int]:
    """Tables per sharding type."""
    return dict(sorted(Counter(r["sharding"] for r in rows).items()))


def top_ops(profiler, steps: int, n: int = 12) -> dict:
    """Rank 0's ``n`` costliest ops by self time (a collective's wait counts in its caller), ms a step."""
    events = sorted(profiler.key_averages(), key=lambda e: -e.self_cpu_time_total)[:n]
    return {"profile_ms_per_step": {e.key: round(e.self_cpu_time_total / 1e3 / steps, 1) for e in events}}


def sizes(text: str) -> list[int]:
    return [int(x) for x in text.split(",")]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=10_000_000, help="samples of the 2-rank epoch")
    p.add_argument("--rows-1", type=int, default=2_000_000, help="samples the 1-rank run trains for its rate")
    p.add_argument("--largest", type=int, default=10_000_000)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--batch", type=int, default=8192)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--bottom-mlp", type=sizes, default=[128], help="hidden sizes of the bottom MLP (its output: --dim)")
    p.add_argument("--top-mlp", type=sizes, default=[256, 128], help="hidden sizes of the top MLP (its output: 1)")
    p.add_argument("--sharding", default="row_wise", choices=["row_wise", "auto", "table_wise", "column_wise"],
                   help="forced for every table below --row-wise-min-rows (all: the issue's row_wise), or auto: "
                   "the planner's choice")
    p.add_argument("--row-wise-min-rows", type=int, default=0, help="tables of at least this many rows row_wise, "
                   "the rest --sharding's (model.row_wise_min_rows; 0: off)")
    p.add_argument("--profile", action="store_true", help="torch.profiler over the steps: rank 0's costliest ops, "
                   "ms a step (keeps every event: use a small --rows)")
    p.add_argument("--world", type=int, default=0, help=argparse.SUPPRESS)  # internal: one world size
    args = p.parse_args()
    if args.world:
        return dist.run_main(lambda: one_world(args))  # the process group torn down on every path
    passed = list(sys.argv[1:])
    lines = {}
    for world in (1, 2):
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(world), __file__, *passed,
               "--world", str(world)]
        lines[world] = run_json(cmd, f"{world} rank(s)", threads=None)
    one, two = lines[1], lines[2]
    print(json.dumps({"summary": "ctr_scale", "throughput_2_over_1": round(two["samples_per_s"] / one["samples_per_s"], 3),
                      "table_per_rank_2_over_1": round(max(two["table_mb_per_rank"]) / one["table_mb_per_rank"][0], 3),
                      "peak_rss_mb_per_rank_2": two["peak_rss_mb"]}), flush=True)


if __name__ == "__main__":
    main()
