"""The sequential task at 2 ranks against 1: seconds per training epoch at 10x the demo's users,
and what each rank holds of a 1M x 64 item table.

    python benchmarks/seq_scale.py [--users 5000 --items 1000 --epochs 4] [--table-items 1000000]

Epoch: the demo's users (``data.demo.sequential_interactions``, the category walk) at
``--users`` (10x the demo's 500 by default), leave-one-out, the sequential job itself
(``launch/train.py --config configs/train/sasrec.yaml``: full softmax, hidden 64, 2 blocks,
1 head, L = 50) with ``--batch`` users per global batch, under torchrun at 1 rank x 1 thread,
then 2 ranks x 1 thread: the same global batches. Seconds per epoch are the job's own
(``final.json``: training time over epochs, evaluation and start-up excluded).

Table: a ``--table-items`` x 64 item table (synthetic stride sequences, ``--users`` users), a
few BCE training steps (the full softmax over 1M items would cost ~1e12 flops a step on this
CPU). Per rank: the rows it holds (shard) and its optimizer state (fbgemm's row-wise Adagrad),
in MB, and its peak RSS with the RSS before the table was built (the process's fixed cost:
torch, torchrec, the process group).

One JSON line per measurement, then a summary with the ratios (targets: epoch speedup >= 1.5x;
table per rank at 2 ranks <= 0.6x that of 1 rank). One run each: read the ratios as noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from seq_recbole import NAME, synthetic_dataset  # noqa: E402
from seq_step import synthetic  # noqa: E402
from workers import run_json  # noqa: E402

from cliper_dist import dist  # noqa: E402
from cliper_dist.parallel.optim import OptimConfig  # noqa: E402
from cliper_dist.seq.data import train_batches  # noqa: E402
from cliper_dist.seq.model import SASRecConfig, SeqModel  # noqa: E402
from cliper_dist.train.job import peak_rss_mb  # noqa: E402

SEED = 0


def build_model(loss: str, max_len: int, num_items: int, info) -> SeqModel:
    cfg = SASRecConfig(name="sasrec", embedding_dim=64, loss=loss, max_len=max_len, blocks=2, heads=1, dropout=0.2,
                       table_optimizer="rowwise_adagrad", table_lr=0.01, softmax_block=1024)
    return SeqModel(cfg, OptimConfig(lr=1e-3), num_items, SEED, info.rank, info.world_size, info.device)


def local_mb(obj) -> float:
    """MB of the tensors this rank holds in a (possibly nested, possibly sharded) state."""
    if isinstance(obj, dict):
        return sum(local_mb(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(local_mb(v) for v in obj)
    if hasattr(obj, "local_shards"):
        return sum(s.tensor.numel() * s.tensor.element_size() for s in obj.local_shards()) / 2**20
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size() / 2**20
    return 0.0


def epoch_job(args, ranks: int) -> dict:
    """``launch/train.py`` (configs/train/sasrec.yaml) under torchrun at ``ranks`` x 1 thread: its
    final.json's train seconds per epoch (evaluation excluded), one evaluation at the end."""
    data = args.workdir / "data"
    if not (data / f"{NAME}.inter").exists():
        synthetic_dataset(data, args.users, args.items, SEED)
    out = args.workdir / f"run-{ranks}x1"
    if out.exists():
        shutil.rmtree(out)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}",
           str(REPO / "launch" / "train.py"), "--config", str(REPO / "configs/train/sasrec.yaml"), "--data", str(data),
           "--out", str(out), f"epochs={args.epochs}", f"eval_every={args.epochs}", f"batch_size={args.batch}",
           f"model.max_len={args.max_len}", "threads=1", f"seed={SEED}", "checkpoint_every=0", "save_best=false"]
    result = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    if result.returncode:
        raise SystemExit(f"epoch x{ranks} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    final = json.loads((out / "final.json").read_text())
    epochs = [r["epoch_s"] for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())]
    row = {"mode": "epoch", "ranks": ranks, "threads": 1, "users": args.users, "items": args.items,
           "batch": args.batch, "loss": "ce", "epochs": final["epochs"], "s_per_epoch": final["s_per_epoch"], "epoch_s": epochs,
           "phase_s": final["phase_s"], "peak_rss_mb": final["peak_rss_mb"], "test_ndcg@10": final["test"]["ndcg@10"]}
    print(json.dumps(row), flush=True)
    return row


def table_worker(args) -> None:
    info = dist.init(device="cpu")
    seqs = synthetic(args.table_items, args.users)
    before = peak_rss_mb()
    sasrec = build_model("bce", args.max_len, seqs.num_items, info)
    for i, batch in enumerate(train_batches(seqs, args.max_len, args.batch, 0, SEED, info.rank, info.world_size)):
        if i == args.steps:
            break
        sasrec.step(batch)
    row = {"rows": sasrec.table.hi - sasrec.table.lo, "shard_mb": local_mb(sasrec.table.local),
           "optimizer_mb": local_mb(sasrec.dmp.fused_optimizer.state_dict()["state"]),
           "rss_before_table_mb": before, "peak_rss_mb": peak_rss_mb()}
    rows = dist.all_gather_object(row)
    if info.rank == 0:
        print(json.dumps({"mode": "table", "ranks": info.world_size, "items": args.table_items, "dim": 64,
                          "loss": "bce", "steps": args.steps,
                          **{k: [round(r[k], 3) if isinstance(r[k], float) else r[k] for r in rows] for k in row}}),
              flush=True)


def measure(args, mode: str, ranks: int) -> dict:
    flags = [f"--_worker={mode}"] + [f"--{k.replace('_', '-')}={getattr(args, k)}" for k in
                                     ("users", "batch", "max_len", "table_items", "steps")]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}",
           str(Path(__file__).resolve())] + flags
    return run_json(cmd, f"{mode} x{ranks}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--users", type=int, default=5000, help="10x the demo's 500")
    p.add_argument("--items", type=int, default=1000, help="the demo's catalog size")
    p.add_argument("--epochs", type=int, default=4, help="epochs per layout (one evaluation, after the last)")
    p.add_argument("--batch", type=int, default=256, help="users per global batch")
    p.add_argument("--max-len", type=int, default=50)
    p.add_argument("--table-items", type=int, default=1_000_000)
    p.add_argument("--steps", type=int, default=5, help="training steps of the table measurement")
    p.add_argument("--modes", default="epoch,table")
    p.add_argument("--workdir", type=Path, default=REPO / "runs" / "seq_scale")
    p.add_argument("--_worker", dest="worker", choices=("table",), default=None)
    args = p.parse_args()
    torch.set_num_threads(1)
    if args.worker:
        return dist.run_main(lambda: table_worker(args))  # the process group torn down on every path
    args.workdir = args.workdir.resolve()
    summary = {"summary": "seq_scale"}
    modes = args.modes.split(",")
    if "epoch" in modes:
        one, two = epoch_job(args, 1), epoch_job(args, 2)
        summary["epoch_speedup_2x1_over_1x1"] = round(one["s_per_epoch"] / two["s_per_epoch"], 2)
    if "table" in modes:
        one, two = measure(args, "table", 1), measure(args, "table", 2)
        held = [s + o for s, o in zip(two["shard_mb"], two["optimizer_mb"])]
        summary["table_per_rank_2_over_1"] = round(max(held) / (one["shard_mb"][0] + one["optimizer_mb"][0]), 3)
        summary["peak_rss_2_over_1"] = round(max(two["peak_rss_mb"]) / one["peak_rss_mb"][0], 3)
        growth = [p - b for p, b in zip(two["peak_rss_mb"], two["rss_before_table_mb"])]
        summary["rss_growth_2_over_1"] = round(max(growth) / (one["peak_rss_mb"][0] - one["rss_before_table_mb"][0]), 3)
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
