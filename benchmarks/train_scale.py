"""How training scales with ranks and data: s/epoch, eval s, per-rank peak RSS and CPU seconds.

    python benchmarks/train_scale.py --size x10 [--layouts 1x2,1x1,2x1,4x1] [--dim 64] [--max-steps N]

Ships its own synthetic power-law data, as an MMRec folder: user degrees >= 5 with a
Pareto tail, Zipf-like item popularity (item ids shuffled against popularity, as real
catalogs are), MMRec's per-user 80/10/10 split. Sizes: ``baby`` (19k users, 7k items,
160k interactions), ``x10`` (200k / 70k / 1.5M), ``x60`` (1M / 300k / 10M).

Each layout RANKSxTHREADS runs in its own torchrun: the real engine (``build_engine``,
``Engine.train_epoch``, ``evaluate``) with LightGCN (or ``--model freedom`` on random
features), one epoch, then one full evaluation. ``--max-steps N`` times N steps and
projects the epoch from them (labelled ``projected``: the epoch's graph and first step
once, the other N - 1 steps scaled to the epoch's), and ``--skip-eval`` leaves out the
evaluation: on 2 cores an x60 epoch of full-graph propagation takes hours, and so does
scoring 1M users against 300k items. One JSON line per layout; the ratios compare layouts
measured in the same run (``speedup_vs_1x1``: same model, 1 rank x 1 thread).

``--job`` runs the whole train job instead (``launch/train.py``, FREEDOM, one epoch at
``--batch``, HNSW item graph, a sampled evaluation of ``--eval-users``, row-sparse Adam) on
CLIPER-shaped features: a 768-d image and 5 x 768 text views, each a mixture of Gaussians
around 2,000 centres (an item's image and views share its centre), as real CLIP embeddings
cluster. It reports wall time, the job's phase times and per-rank peak RSS (issue 9's x60
check: ``--size x60 --job --layouts 2x1``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SIZES = {"baby": (19_445, 7_050, 160_792), "x10": (200_000, 70_000, 1_500_000),
         "x60": (1_000_000, 300_000, 10_000_000)}


def power_law_interactions(num_users: int, num_items: int, num_interactions: int, seed: int = 0):
    """Distinct (user, item) pairs: user degrees 5 + a Pareto(2.5) tail with the requested
    mean, items drawn by Zipf(0.65) popularity (Amazon Baby: median user degree 6, p99 31;
    the top 10% of items hold 45% of the interactions, here 43%); split per user by
    MMRec's rule."""
    from cliper_dist.data.interactions import split_per_user

    rng = np.random.default_rng(seed)
    tail = rng.pareto(2.5, num_users)
    degree = 5 + np.floor(tail / tail.mean() * (num_interactions / num_users - 4.5)).astype(np.int64)
    degree = np.minimum(degree, num_items // 20)
    popularity = 1.0 / np.arange(1, num_items + 1) ** 0.65
    popularity = popularity[rng.permutation(num_items)] / popularity.sum()
    keys = np.zeros(0, dtype=np.int64)
    want = degree.copy()
    for _ in range(20):  # draw, drop repeats, redraw what is missing
        users = np.repeat(np.arange(num_users), want)
        items = rng.choice(num_items, size=len(users), p=popularity)
        keys = np.unique(np.concatenate([keys, users * num_items + items]))
        want = np.maximum(degree - np.bincount(keys // num_items, minlength=num_users), 0)
        if not want.any():
            break
    return split_per_user(keys // num_items, keys % num_items, seed)


def make_folder(size: str, work: Path, model: str) -> Path:
    from cliper_dist.data.interactions import write_inter

    folder = work / f"{size}_{model}"
    inter = folder / f"{size}.inter"
    if not inter.exists():
        folder.mkdir(parents=True, exist_ok=True)
        write_inter(inter, power_law_interactions(*SIZES[size]))
    if model == "freedom" and not (folder / "image_feat.npy").exists():
        n_items = SIZES[size][1]
        rng = np.random.default_rng(0)  # MMRec's Baby shapes: image 4096, text 384
        np.save(folder / "image_feat.npy", rng.standard_normal((n_items, 4096), dtype=np.float32))
        np.save(folder / "text_feat.npy", rng.standard_normal((n_items, 384), dtype=np.float32))
    return folder


def make_feature_store(size: str, work: Path, dim: int = 768, views: int = 5, centres: int = 2000,
                       noise: float = 0.7, block: int = 50_000) -> Path:
    """An encode-output directory (image.npy (I, dim), text_views.npy (views, I, dim)), written a
    block of items at a time into memory-mapped files: never the whole 4.6 GB at x60."""
    folder = work / f"{size}_features"
    if (folder / "manifest.json").exists():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    n_items = SIZES[size][1]
    rng = np.random.default_rng(1)
    image_centres = rng.standard_normal((centres, dim), dtype=np.float32)
    text_centres = rng.standard_normal((views, centres, dim), dtype=np.float32)  # each view its own
    centre_of = rng.integers(centres, size=n_items)
    image = np.lib.format.open_memmap(folder / "image.npy", mode="w+", dtype=np.float32, shape=(n_items, dim))
    text = np.lib.format.open_memmap(folder / "text_views.npy", mode="w+", dtype=np.float32,
                                     shape=(views, n_items, dim))
    for lo in range(0, n_items, block):
        hi = min(n_items, lo + block)
        c = centre_of[lo:hi]
        image[lo:hi] = image_centres[c] + noise * rng.standard_normal((hi - lo, dim), dtype=np.float32)
        for v in range(views):
            text[v, lo:hi] = text_centres[v, c] + noise * rng.standard_normal((hi - lo, dim), dtype=np.float32)
    image.flush()
    text.flush()
    del image, text
    (folder / "manifest.json").write_text(json.dumps({"num_items": n_items, "views": views, "synthetic": True}))
    return folder


def run_job(folder: Path, features: Path, ranks: int, threads: int, work: Path, args) -> dict:
    """launch/train.py on the size's data: load, kNN, one epoch, one sampled evaluation."""
    out = work / f"job_{ranks}x{threads}_{int(time.time())}"
    scale = (args.batch / 2048) ** 0.5  # docs/train.md's large-batch rule: lr and reg_weight x sqrt(B / B0)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}",
           str(REPO / "launch/train.py"), "--config", str(REPO / "configs/train/freedom.yaml"),
           "--data", str(folder), "--features", str(features), "--out", str(out), "epochs=1",
           f"batch_size={args.batch}", f"eval_users={args.eval_users}", "checkpoint_every=0", "save_best=false",
           "resume=never", f"threads={threads}", "model.knn=hnsw", f"model.embedding_dim={args.dim}",
           f"optim.lr={1e-3 * scale:g}", f"model.reg_weight={1e-4 * scale:g}", f"optim.rows={args.rows}"]
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS=str(threads))
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stdout[-4000:]}")
    final = json.loads((out / "final.json").read_text())
    recall = [line for line in proc.stdout.splitlines() if "hnsw kNN graph: recall" in line]
    return {"wall_s": round(wall, 1), "phase_s": final["phase_s"], "peak_rss_mb": final["peak_rss_mb"],
            "batch": args.batch, "eval_users": args.eval_users, "valid_recall@20_estimate": final["valid"]["recall@20"],
            "knn_recall_log": recall}


def worker(folder: str, model: str, dim: int, max_steps: int, rows: str, with_eval: bool, knn: str = "exact") -> None:
    """One layout, on every rank of a torchrun: build, one epoch (or max_steps), one evaluation."""
    import torch

    from cliper_dist import dist
    from cliper_dist.model.base import Batch
    from cliper_dist.model.registry import model_config
    from cliper_dist.parallel.comm import STATS
    from cliper_dist.parallel.optim import OptimConfig
    from cliper_dist.data.batches import epoch_batches
    from cliper_dist.train.evaluate import evaluate
    from cliper_dist.train.job import TrainConfig, build_engine

    info = dist.init(device="cpu")
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    keys = {"knn": knn} if model == "freedom" else {}  # the search of FREEDOM's item graph; lightgcn has none
    cfg = TrainConfig(data=folder, out="", model=model_config(model, embedding_dim=dim, **keys),
                      optim=OptimConfig(rows=rows))
    t0 = time.perf_counter()
    engine = build_engine(cfg, info)
    build_s = time.perf_counter() - t0
    dist.keep_freed_memory()  # as the train job does, after the build
    total_steps = -(-len(engine.data.train_user) // cfg.batch_size)
    wire0 = wire_bytes()
    STATS.reset()
    cpu0, t0 = time.process_time(), time.perf_counter()
    if max_steps:
        # the epoch's graph and the first step (its one-time costs: buffers allocated and
        # faulted in, FREEDOM's S^T) once, the other steps' time scaled to the epoch's steps
        graph = engine.model.train_graph(0)
        first = None
        for step, arrays in enumerate(epoch_batches(engine.data, engine.train_keys, 0, cfg.seed, cfg.batch_size)):
            if step == max_steps:
                break
            engine.step(graph, Batch(*(torch.from_numpy(a) for a in arrays)))
            first = first or time.perf_counter()
        timed = min(max_steps, total_steps)
        epoch_s = first - t0 + (time.perf_counter() - first) * (total_steps - 1) / max(timed - 1, 1)
    else:
        engine.train_epoch(0)
        epoch_s = time.perf_counter() - t0
    train_cpu = time.process_time() - cpu0
    steps_run = min(max_steps, total_steps) if max_steps else total_steps
    comm = {"s_per_step": STATS.seconds / steps_run, "bytes_per_step": STATS.bytes_sent / steps_run,
            "calls_per_step": STATS.calls / steps_run}
    if wire0 is not None:
        comm["wire_bytes_per_step"] = (wire_bytes() - wire0) / steps_run
    cpu0, t0 = time.process_time(), time.perf_counter()
    metrics = evaluate(engine.model, engine.data, engine.split, cfg.eval_batch_users) if with_eval else None
    eval_s, eval_cpu = time.perf_counter() - t0, time.process_time() - cpu0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    per_rank = dist.all_gather_object({"rss": round(rss, 1), "train_cpu": round(train_cpu, 1),
                                       "eval_cpu": round(eval_cpu, 1), "comm": comm})
    if info.is_main:
        print(json.dumps({"s_per_epoch": round(epoch_s, 2), "projected": bool(max_steps) and max_steps < total_steps,
                          "steps": total_steps, "eval_s": round(eval_s, 2), "build_s": round(build_s, 2),
                          "peak_rss_mb": [r["rss"] for r in per_rank],
                          "train_cpu_s": [r["train_cpu"] for r in per_rank],
                          "eval_cpu_s": [r["eval_cpu"] for r in per_rank],
                          "comm_s_per_step": [round(r["comm"]["s_per_step"], 5) for r in per_rank],
                          "comm_bytes_per_step": [round(r["comm"]["bytes_per_step"]) for r in per_rank],
                          "comm_calls_per_step": per_rank[0]["comm"]["calls_per_step"],
                          **({"wire_bytes_per_step": [round(r["comm"]["wire_bytes_per_step"]) for r in per_rank]}
                             if "wire_bytes_per_step" in comm else {}),
                          "valid_recall@20": metrics["valid"]["recall@20"] if metrics else None}), flush=True)


def wire_bytes() -> int | None:
    """Bytes this host has sent on the interface the ranks bind (GLOO_SOCKET_IFNAME), when set:
    what crossed the link, the rendezvous store's traffic included."""
    ifname = os.environ.get("GLOO_SOCKET_IFNAME")
    if not ifname or ifname == "lo":
        return None
    return int(Path(f"/sys/class/net/{ifname}/statistics/tx_bytes").read_text())


def worker_args(folder: Path, model: str, args) -> list[str]:
    """This script's ``--_worker`` arguments (run_layout's, and benchmarks/multihost.py's)."""
    return ["--_worker", str(folder), model, str(args.dim), str(args.max_steps), getattr(args, "rows", "all"),
            str(int(not getattr(args, "skip_eval", True))), getattr(args, "knn", "exact")]


def run_layout(folder: Path, ranks: int, threads: int, args) -> dict:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}", __file__,
           *worker_args(folder, args.model, args)]
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS=str(threads))
    proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", choices=SIZES, default="baby")
    parser.add_argument("--layouts", default="1x2,1x1,2x1,4x1", help="RANKSxTHREADS per rank, comma-separated")
    parser.add_argument("--model", choices=("lightgcn", "freedom"), default="lightgcn")
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--rows", choices=("all", "touched"), default="all", help="Adam row semantics")
    parser.add_argument("--max-steps", type=int, default=0, help="time this many steps and project the epoch")
    parser.add_argument("--knn", choices=("exact", "hnsw"), default="exact", help="freedom: the item graph's search")
    parser.add_argument("--skip-eval", action="store_true", help="no evaluation (x60: hours of scoring on 2 cores)")
    parser.add_argument("--workdir", default=None, help="keeps the generated data between runs")
    parser.add_argument("--job", action="store_true", help="the whole FREEDOM train job on clustered 768-d features")
    parser.add_argument("--batch", type=int, default=131072, help="--job: batch size")
    parser.add_argument("--eval-users", type=int, default=20000, help="--job: sampled users evaluated")
    args = parser.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="train_scale_"))
    t0 = time.perf_counter()
    folder = make_folder(args.size, work, "lightgcn" if args.job else args.model)
    features = make_feature_store(args.size, work) if args.job else None
    print(f"data: {folder} ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    if args.job:
        for layout in args.layouts.split(","):
            ranks, threads = (int(x) for x in layout.split("x"))
            print(json.dumps({"bench": "train_scale_job", "size": args.size, "model": "freedom", "ranks": ranks,
                              "threads": threads, **run_job(folder, features, ranks, threads, work, args)}), flush=True)
        return
    rows = []
    for layout in args.layouts.split(","):
        ranks, threads = (int(x) for x in layout.split("x"))
        row = {"bench": "train_scale", "size": args.size, "model": args.model, "dim": args.dim, "rows": args.rows,
               "ranks": ranks, "threads": threads, **run_layout(folder, ranks, threads, args)}
        rows.append(row)
        base = next((r for r in rows if r["ranks"] == 1 and r["threads"] == 1), None)
        if base is not None:
            row["speedup_vs_1x1"] = round(base["s_per_epoch"] / row["s_per_epoch"], 2)
            row["rss_vs_1x1"] = round(max(row["peak_rss_mb"]) / base["peak_rss_mb"][0], 2)
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--_worker":
        folder, model, dim, max_steps, rows, with_eval = sys.argv[2:8]
        knn = sys.argv[8] if len(sys.argv) > 8 else "exact"
        from cliper_dist import dist

        dist.run_main(lambda: worker(folder, model, int(dim), int(max_steps), rows, with_eval == "1", knn))
    else:
        main()
