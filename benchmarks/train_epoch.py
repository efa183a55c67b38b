"""Seconds per training epoch and per full evaluation on Baby, 1 and 2 ranks, vs a reference.

    python benchmarks/train_epoch.py --data ../shared/data/amazon/baby [--epochs 3]

The reference is measured in the same run: a single-process dense PyTorch LightGCN written
the way MMRec writes it (nn.Embedding tables, torch.sparse.mm over the full normalised
COO adjacency, full propagation for every batch, Adam lr 1e-3, batch 2048, BPR + L2),
once with MMRec's negative sampler (a Python loop with rejection, as MMRec's
TrainDataLoader) and once with our vectorised sampler (a stronger baseline than MMRec),
each at 1 and 2 torch threads. Ours is ``launch/train.py`` under torchrun with the shipped
configs (lightgcn; freedom on random features of MMRec's Baby shapes: image 4096, text
384), no checkpoints, at RANKS x THREADS layouts; speedups compare equal core counts.
One JSON line per measurement (median over the epochs after the first), then a summary.
Timings on a shared machine are noisy: compare ratios taken in the same run.
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

from cliper_dist.train.data import load_rec_data, sample_negatives  # noqa: E402
from cliper_dist.train.metrics import KS, evaluate_users  # noqa: E402


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


def reference_lightgcn(data_dir: str, epochs: int, threads: int, sampler: str) -> dict:
    """MMRec-style dense LightGCN in this process: s/epoch, eval s, valid R@20 after training."""
    torch.set_num_threads(threads)
    d = load_rec_data(data_dir)
    U, I = d.num_users, d.num_items
    rows = np.concatenate([d.train_user, d.train_item + U])
    cols = np.concatenate([d.train_item + U, d.train_user])
    deg = np.bincount(rows, minlength=U + I).astype(np.float64)
    dinv = np.where(deg > 0, deg, 1.0) ** -0.5
    adj = torch.sparse_coo_tensor(torch.from_numpy(np.stack([rows, cols])),
                                  torch.from_numpy((dinv[rows] * dinv[cols]).astype(np.float32)), (U + I, U + I)).coalesce()
    torch.manual_seed(999)
    user_emb, item_emb = torch.nn.Embedding(U, 64), torch.nn.Embedding(I, 64)
    torch.nn.init.xavier_uniform_(user_emb.weight)
    torch.nn.init.xavier_uniform_(item_emb.weight)
    opt = torch.optim.Adam([user_emb.weight, item_emb.weight], lr=1e-3)
    keys, rng = d.train_keys(), np.random.default_rng(999)
    random.seed(999)
    all_items = list(range(I))
    history = {u: set(d.train.row(u).tolist()) for u in range(U)}

    def forward():
        ego = torch.cat([user_emb.weight, item_emb.weight])
        layers = [ego]
        for _ in range(2):
            ego = torch.sparse.mm(adj, ego)
            layers.append(ego)
        out = torch.stack(layers, dim=1).mean(dim=1)
        return out[:U], out[U:]

    epoch_s, eval_s = [], []
    for _ in range(epochs):
        t0 = time.perf_counter()
        order = rng.permutation(len(d.train_user))
        for lo in range(0, len(order), 2048):
            b = order[lo:lo + 2048]
            u, p = d.train_user[b], d.train_item[b]
            n = sample_negatives(u, I, keys, rng) if sampler == "vectorised" else mmrec_negatives(u, all_items, history)
            u, p, n = (torch.from_numpy(x) for x in (u, p, n))
            ou, oi = forward()
            mf = -torch.nn.functional.logsigmoid((ou[u] * oi[p]).sum(1) - (ou[u] * oi[n]).sum(1)).mean()
            reg = (user_emb(u).pow(2).sum() + item_emb(p).pow(2).sum() + item_emb(n).pow(2).sum()) / 2 / len(b)
            opt.zero_grad()
            (mf + 1e-4 * reg).backward()
            opt.step()
        epoch_s.append(time.perf_counter() - t0)
        t1 = time.perf_counter()
        with torch.no_grad():
            ou, oi = forward()
            res = {}
            for name, truth in (("valid", d.valid), ("test", d.test)):
                users = np.flatnonzero(truth.lengths() > 0)
                sums = evaluate_users(ou, oi, users, d.train, truth, 4096, KS)
                res[name] = sums["recall@20"] / len(users)
        eval_s.append(time.perf_counter() - t1)
    return {"impl": f"reference-mmrec-style/{sampler}-sampler", "model": "lightgcn", "ranks": 1,
            "threads": torch.get_num_threads(),
            "epochs": epochs, "s_per_epoch": round(_steady(epoch_s), 3), "eval_s": round(_steady(eval_s), 3),
            "valid_recall@20": round(res["valid"], 4),
            "peak_rss_mb": [round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)]}


def _steady(xs: list[float]) -> float:
    return statistics.median(xs[1:] if len(xs) > 1 else xs)


def freedom_folder(data_dir: str, work: Path, image_dim: int, text_dim: int) -> Path:
    """Baby's interactions beside random features of MMRec's Baby shapes."""
    folder = work / "baby_feats"
    folder.mkdir(parents=True, exist_ok=True)
    inter = next(Path(data_dir).glob("*.inter"))
    link = folder / inter.name
    if not link.exists():
        link.symlink_to(inter.resolve())
    n = load_rec_data(data_dir).num_items
    rng = np.random.default_rng(0)
    np.save(folder / "image_feat.npy", rng.random((n, image_dim), dtype=np.float32))
    np.save(folder / "text_feat.npy", rng.normal(size=(n, text_dim)).astype(np.float32))
    return folder


def ours(model: str, ranks: int, data: Path, work: Path, epochs: int, threads: int) -> dict:
    out = work / f"run_{model}_{ranks}"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}",
           str(REPO / "launch/train.py"), "--config", str(REPO / f"configs/train/baby_{model}.yaml"),
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
    parser.add_argument("--models", default="lightgcn,freedom")
    parser.add_argument("--ref-threads", default="1,2", help="reference thread counts")
    parser.add_argument("--ref-samplers", default="mmrec,vectorised")
    parser.add_argument("--image-dim", type=int, default=4096)
    parser.add_argument("--text-dim", type=int, default=384)
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="train_bench_"))
    refs = {}
    for sampler in args.ref_samplers.split(","):
        for threads in (int(t) for t in args.ref_threads.split(",")):
            # a fresh process per measurement (torch's thread pool is set once per process)
            proc = subprocess.run([sys.executable, __file__, "--data", args.data, "--_reference",
                                   f"{sampler}:{threads}:{args.ref_epochs}"], stdout=subprocess.PIPE, text=True)
            row = json.loads(proc.stdout.strip().splitlines()[-1])
            refs[(sampler, threads)] = row
            print(json.dumps({"bench": "train_epoch", **row}), flush=True)
    rows = []
    for model in args.models.split(","):
        data = Path(args.data) if model == "lightgcn" else freedom_folder(args.data, work, args.image_dim, args.text_dim)
        for layout in args.layouts.split(","):
            ranks, threads = (int(x) for x in layout.split("x"))
            row = ours(model, ranks, data, work, args.epochs, threads)
            cores = ranks * threads
            for (sampler, t), ref in refs.items():
                if t == cores and model == "lightgcn":  # same model, same number of cores
                    row[f"epoch_speedup_vs_{sampler}_ref"] = round(ref["s_per_epoch"] / row["s_per_epoch"], 2)
                    row[f"eval_speedup_vs_{sampler}_ref"] = round(ref["eval_s"] / row["eval_s"], 2)
            rows.append(row)
            print(json.dumps({"bench": "train_epoch", **row}), flush=True)
    print()
    for (sampler, t), ref in refs.items():
        print(f"reference LightGCN ({sampler} sampler, {t} thread(s)): {ref['s_per_epoch']:.2f} s/epoch, "
              f"{ref['eval_s']:.2f} s/eval")
    for r in rows:
        ratios = ", ".join(f"{k.replace('epoch_speedup_vs_', '')} {v}x" for k, v in r.items() if k.startswith("epoch_speedup"))
        print(f"{r['model']:<9} {r['ranks']} rank(s) x {r['threads']} thread(s): {r['s_per_epoch']:.2f} s/epoch "
              f"[{ratios or 'no reference at this core count'}], {r['eval_s']:.2f} s/eval, "
              f"peak RSS/rank {r['peak_rss_mb']} MB")


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[3] == "--_reference":
        sampler, threads, epochs = sys.argv[4].split(":")
        print(json.dumps(reference_lightgcn(sys.argv[2], int(epochs), int(threads), sampler)))
    else:
        main()
