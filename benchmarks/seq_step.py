"""Seconds per SASRec training step of the sequential core (``cliper_dist/seq/``) at 1 and 2 ranks,
against its dense single-process reference (``seq/reference.py``) in the same run.

    python benchmarks/seq_step.py [--items 20000 --users 10000 --batch 128 --max-len 50 --loss ce]

Synthetic sequences: each user walks through items with a stride of its own (lengths 5-60), split
leave-one-out by time. Both sides train the same global batches (1 thread per process); the
reference holds the whole table and computes the whole softmax at once, so keep ``--items`` where
its (batch x max_len) x items logits fit in memory. One JSON line per measurement (median step
time over ``--steps`` after 2 warm-up steps; peak RSS; the item table's rows and MB on each rank),
then a summary with the ratios. ``sharded`` calls ``SeqModel.step`` batch by batch; ``pipelined``
trains as the job does, through torchrec's ``TrainPipelineSparseDist`` (``SeqTrainer.steps``: the
next batch's id all-to-all starts before this batch's backward), timed between the steps it
yields. No checkpoint or evaluation is timed here.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cliper_dist import dist  # noqa: E402
from cliper_dist.data.interactions import split_per_user  # noqa: E402
from cliper_dist.seq.data import Sequences, train_batches  # noqa: E402
from cliper_dist.parallel.optim import OptimConfig  # noqa: E402
from cliper_dist.seq.model import SASRecConfig  # noqa: E402
from cliper_dist.seq.reference import ReferenceSeqModel  # noqa: E402
from cliper_dist.seq.trainer import SeqTrainer  # noqa: E402
from cliper_dist.train.job import peak_rss_mb  # noqa: E402
from workers import run_json  # noqa: E402

SEED = 0


def synthetic(items: int, users: int) -> Sequences:
    g = np.random.default_rng(SEED)
    lengths = g.integers(5, 61, users)
    user = np.repeat(np.arange(users), lengths)
    step = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    start, stride = g.integers(0, items, users), g.integers(1, 8, users)
    item = (start[user] + stride[user] * step) % items
    inter = split_per_user(user, item, SEED, timestamp=step.astype(np.float64), leave_one_out=True)
    return Sequences.from_interactions(inter, users, items, "synthetic")


LR = 1e-3  # Adam, the dense part


def config(args) -> SASRecConfig:
    return SASRecConfig(name="sasrec", embedding_dim=64, loss=args.loss, max_len=args.max_len, blocks=2, heads=1,
                        dropout=0.2, table_optimizer="rowwise_adagrad", table_lr=0.01)


def time_steps(steps, n: int) -> list[float]:
    """Seconds between the steps an iterator of training steps yields, after 2 warm-up steps."""
    times, t0 = [], time.perf_counter()
    for i, _ in enumerate(steps):
        t1 = time.perf_counter()
        if i >= 2:
            times.append(t1 - t0)
        t0 = t1
        if len(times) == n:
            return times
    raise SystemExit(f"only {len(times)} timed steps in an epoch: lower --batch or --steps")


def worker(args) -> None:
    torch.set_num_threads(1)
    if args.impl == "reference":
        seqs = synthetic(args.items, args.users)
        model = ReferenceSeqModel(config(args), LR, args.items, SEED)
        times = time_steps(map(model.step, train_batches(seqs, args.max_len, args.batch, 0, SEED, 0, 1)), args.steps)
        rows, ranks, rss = [args.items], 1, [peak_rss_mb()]
    else:
        info = dist.init(device="cpu")
        seqs = synthetic(args.items, args.users)
        trainer = SeqTrainer(config(args), OptimConfig(lr=LR), seqs, None, info, SEED, args.batch, 256, None)
        model = trainer.model
        batches = train_batches(seqs, args.max_len, args.batch, 0, SEED, info.rank, info.world_size)
        times = time_steps(trainer.steps(batches) if args.impl == "pipelined" else map(model.step, batches),
                           args.steps)
        rows = dist.all_gather_object(model.hi - model.lo)
        ranks = info.world_size
        times = [max(ts) for ts in zip(*dist.all_gather_object(times))]  # a step ends when its slowest rank does
        rss = dist.all_gather_object(peak_rss_mb())
        if info.rank:
            return
    print(json.dumps({"impl": args.impl, "ranks": ranks, "loss": args.loss, "items": args.items,
                      "batch": args.batch, "max_len": args.max_len, "s_per_step": round(statistics.median(times), 4),
                      "table_rows_per_rank": rows, "table_mb_per_rank": [round(r * 64 * 4 / 2**20, 3) for r in rows],
                      "peak_rss_mb": [round(x, 1) for x in rss]}), flush=True)


def measure(args, impl: str, ranks: int) -> dict:
    flags = ["--_worker", impl] + [f"--{k.replace('_', '-')}={getattr(args, k)}"
                                   for k in ("items", "users", "batch", "max_len", "steps", "loss")]
    script = str(Path(__file__).resolve())
    cmd = ([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}", script]
           if impl != "reference" else [sys.executable, script]) + flags
    return run_json(cmd, f"{impl} x{ranks}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--items", type=int, default=20000)
    p.add_argument("--users", type=int, default=10000)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--max-len", type=int, default=50)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--loss", choices=("ce", "bce"), default="ce")
    p.add_argument("--_worker", dest="impl", choices=("reference", "sharded", "pipelined"), default=None)
    args = p.parse_args()
    if args.impl:
        return dist.run_main(lambda: worker(args))  # the process group torn down on every path
    ref = measure(args, "reference", 1)
    one, two = measure(args, "sharded", 1), measure(args, "sharded", 2)
    piped_one, piped_two = measure(args, "pipelined", 1), measure(args, "pipelined", 2)
    print(json.dumps({"summary": "seq_step", "loss": args.loss,
                      "reference_over_sharded_1": round(ref["s_per_step"] / one["s_per_step"], 2),
                      "speedup_2_over_1": round(one["s_per_step"] / two["s_per_step"], 2),
                      "pipelined_speedup_2_over_1": round(piped_one["s_per_step"] / piped_two["s_per_step"], 2),
                      "step_by_step_over_pipelined_2": round(two["s_per_step"] / piped_two["s_per_step"], 2),
                      "table_2_over_1": round(max(two["table_rows_per_rank"]) / one["table_rows_per_rank"][0], 3)}))


if __name__ == "__main__":
    main()
