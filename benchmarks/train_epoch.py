"""Seconds per training epoch and per full evaluation on Baby, against MMRec-style references.

    python benchmarks/train_epoch.py --data ../shared/data/amazon/baby [--epochs 3]

The references are ``cliper_dist/model/reference/<model>.py``, the same dense equations the
parity tests check the models against, run here single-process in float32 the MMRec way
(that package's docstring says what that means: dense Adam on every parameter, the full
graph and all items every step, MMRec's Python negative sampler below). Both sides read
the shipped ``configs/train/<model>.yaml``, so they train the same configuration.

Features are the issue's stand-ins: ``rng = np.random.default_rng(0)``, image (I, 4096)
drawn first, then text (I, 384), standard normal. Ours is ``launch/train.py`` under
torchrun with the shipped configs (no checkpoints) at RANKSxTHREADS layouts. One JSON line
per measurement (median over the epochs after the first), then a summary; speedups compare
the same model on the same number of cores. ``--rounds R`` repeats every measurement R
times, references and ours alternating, and the summary gives medians over the rounds: the
host's speed drifts by 15-25% within minutes, so a ratio from one round is that noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cliper_dist import config as config_lib  # noqa: E402
from cliper_dist.data.item_features import load_job_features  # noqa: E402
from cliper_dist.data.recdata import load_rec_data  # noqa: E402
from cliper_dist.model.reference import REFERENCES  # noqa: E402
from cliper_dist.train.job import TrainConfig  # noqa: E402
from cliper_dist.train.metrics import KS, evaluate_users  # noqa: E402

SEED, BATCH = 999, 2048


def model_config_file(model: str) -> Path:
    return REPO / "configs" / "train" / f"{model}.yaml"


def mmrec_negatives(users: np.ndarray, all_items: list, history: dict) -> np.ndarray:
    """MMRec's TrainDataLoader sampler: one random item per user, redrawn while it is a
    training item of the user, in a Python loop."""
    out = []
    for u in users.tolist():
        iid = random.sample(all_items, 1)[0]
        while iid in history[u]:
            iid = random.sample(all_items, 1)[0]
        out.append(iid)
    return np.array(out, dtype=np.int64)


def reference(data_dir: str, model: str, epochs: int, threads: int) -> dict:
    torch.set_num_threads(threads)
    torch.manual_seed(SEED)
    cfg = config_lib.load(TrainConfig, model_config_file(model))
    d = load_rec_data(data_dir)
    features = None if model == "lightgcn" else load_job_features(data_dir, "", d.num_items, model)
    ref = REFERENCES[model](cfg.model, d, features, SEED)
    opt = torch.optim.Adam(ref.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    rng = np.random.default_rng(SEED)
    random.seed(SEED)
    all_items = list(range(d.num_items))
    history = {u: set(d.train.row(u).tolist()) for u in range(d.num_users)}
    epoch_s, eval_s = [], []
    for epoch in range(epochs):
        t0 = time.perf_counter()
        graph = ref.epoch_graph(epoch)
        order = rng.permutation(len(d.train_user))
        for lo in range(0, len(order), BATCH):
            b = order[lo:lo + BATCH]
            u, p = d.train_user[b], d.train_item[b]
            n = mmrec_negatives(u, all_items, history)
            loss = ref.loss(graph, *(torch.from_numpy(x) for x in (u, p, n)))
            opt.zero_grad()
            loss.backward()
            opt.step()
        epoch_s.append(time.perf_counter() - t0)
        t1 = time.perf_counter()
        with torch.no_grad():
            users_emb, items_emb = ref()
            res = {}
            for name, truth in (("valid", d.valid), ("test", d.test)):
                users = np.flatnonzero(truth.lengths() > 0)
                res[name] = evaluate_users(users_emb, items_emb, users, d.train, truth, 4096, KS)["recall@20"] / len(users)
        eval_s.append(time.perf_counter() - t1)
    return {"impl": "reference-mmrec-style", "model": model, "ranks": 1, "threads": threads, "epochs": epochs,
            "s_per_epoch": round(_steady(epoch_s), 3), "eval_s": round(_steady(eval_s), 3),
            "valid_recall@20": round(res["valid"], 4),
            "peak_rss_mb": [round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)]}


def _steady(xs: list[float]) -> float:
    return statistics.median(xs[1:] if len(xs) > 1 else xs)


def features_folder(data_dir: str, work: Path) -> Path:
    """Baby's interactions beside the issue's stand-in features (image 4096, then text 384)."""
    folder = work / "baby_feats"
    folder.mkdir(parents=True, exist_ok=True)
    inter = next(Path(data_dir).glob("*.inter"))
    link = folder / inter.name
    if not link.exists():
        link.symlink_to(inter.resolve())
    n = load_rec_data(data_dir).num_items
    rng = np.random.default_rng(0)
    np.save(folder / "image_feat.npy", rng.standard_normal((n, 4096), dtype=np.float32))
    np.save(folder / "text_feat.npy", rng.standard_normal((n, 384), dtype=np.float32))
    return folder


def ours(model: str, ranks: int, data: Path, work: Path, epochs: int, threads: int) -> dict:
    out = work / f"run_{model}_{ranks}x{threads}"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}",
           str(REPO / "launch/train.py"), "--config", str(model_config_file(model)),
           "--data", str(data), "--out", str(out), f"epochs={epochs}", "checkpoint_every=0", "save_best=false",
           "resume=never", f"threads={threads}"]
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS=str(threads))
    proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stdout[-4000:]}")
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    final = json.loads((out / "final.json").read_text())
    return {"impl": "cliper-dist", "model": model, "ranks": ranks, "threads": threads, "epochs": epochs,
            "s_per_epoch": round(_steady([r["epoch_s"] for r in lines]), 3),
            "eval_s": round(_steady([r["eval_s"] for r in lines]), 3),
            "valid_recall@20": lines[-1]["valid"]["recall@20"], "peak_rss_mb": final["peak_rss_mb"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True, help="MMRec Baby folder (baby.inter)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--ref-epochs", type=int, default=3)
    parser.add_argument("--layouts", default="1x1,1x2,2x1", help="RANKSxTHREADS per rank, comma-separated")
    parser.add_argument("--models", default="lightgcn,freedom,vbpr,slmrec,lattice,dualgnn,mmgcn")
    parser.add_argument("--ref-threads", default="1,2", help="reference thread counts")
    parser.add_argument("--rounds", type=int, default=1, help="repeat every measurement, alternating")
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="train_bench_"))
    refs: dict[tuple, list[dict]] = {}  # (model, threads) -> one result per round
    rows: dict[tuple, list[dict]] = {}  # (model, ranks, threads) -> one result per round
    for round_ in range(args.rounds):
        for model in args.models.split(","):
            data = Path(args.data) if model == "lightgcn" else features_folder(args.data, work)
            for threads in (int(t) for t in args.ref_threads.split(",")):
                # a fresh process per measurement (torch's thread pool is set once per process)
                proc = subprocess.run([sys.executable, __file__, "--_reference", str(data), model, str(threads),
                                       str(args.ref_epochs)], stdout=subprocess.PIPE, text=True)
                ref = {**json.loads(proc.stdout.strip().splitlines()[-1]), "round": round_}
                refs.setdefault((model, threads), []).append(ref)
                print(json.dumps({"bench": "train_epoch", **ref}), flush=True)
            for layout in args.layouts.split(","):
                ranks, threads = (int(x) for x in layout.split("x"))
                row = {**ours(model, ranks, data, work, args.epochs, threads), "round": round_}
                ref = refs.get((model, ranks * threads), [None])[-1]  # this round's
                if ref is not None:
                    row["epoch_speedup_vs_ref"] = round(ref["s_per_epoch"] / row["s_per_epoch"], 2)
                    row["eval_speedup_vs_ref"] = round(ref["eval_s"] / row["eval_s"], 2)
                rows.setdefault((model, ranks, threads), []).append(row)
                print(json.dumps({"bench": "train_epoch", **row}), flush=True)
    print()
    median = statistics.median
    for (model, t), runs in refs.items():
        print(f"reference {model:<9} 1 proc x {t} thread(s): {median(r['s_per_epoch'] for r in runs):.2f} s/epoch, "
              f"{median(r['eval_s'] for r in runs):.2f} s/eval")
    for (model, ranks, t), runs in rows.items():
        ratios = [r["epoch_speedup_vs_ref"] for r in runs if "epoch_speedup_vs_ref" in r]
        ratio = (f"{median(ratios):.2f}x the reference (rounds: {', '.join(f'{x:.2f}' for x in ratios)})"
                 if ratios else "no reference")
        print(f"ours {model:<9} {ranks} rank(s) x {t} thread(s): {median(r['s_per_epoch'] for r in runs):.2f} "
              f"s/epoch ({ratio}), {median(r['eval_s'] for r in runs):.2f} s/eval, "
              f"peak RSS/rank {runs[-1]['peak_rss_mb']} MB")


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "--_reference":
        print(json.dumps(reference(sys.argv[2], sys.argv[3], int(sys.argv[5]), int(sys.argv[4]))))
    else:
        main()
