"""Does content help once the CLIP has seen the catalog? The demo's table, averaged over seeds.

    python benchmarks/demo_signal.py [--seeds 0,1,2] [--out runs/demo_signal]

Runs README command 1's pipeline (``scripts/demo.sh``) once per seed (the seed of the CLIP
training and of the recommender training; the catalog is fixed) and prints one JSON line per
seed and model, then one line per model with the mean and standard deviation of test R@20
and N@20 and the ratios the demo claims: catalog-trained over random-init features, and
over ID-only LightGCN. A quality comparison on one split, not a timing.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from tools.compare_runs import read_run  # noqa: E402

RUNS = {"lightgcn": "run-lightgcn", "freedom_random_clip": "run-random", "freedom_catalog_clip": "run"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--out", default="runs/demo_signal", help="one demo output directory per seed under it")
    args = parser.parse_args()
    results: dict[str, list[dict]] = {name: [] for name in RUNS}
    for seed in [int(s) for s in args.seeds.split(",")]:
        out = Path(args.out) / f"seed{seed}"
        t0 = time.perf_counter()
        subprocess.run(["bash", str(REPO / "scripts/demo.sh")], check=True, stdout=subprocess.DEVNULL,
                       env={**os.environ, "DEMO_OUT": str(out), "SEED": str(seed)})
        seconds = time.perf_counter() - t0
        retrieval = [json.loads(line) for line in (out / "clip-catalog/pretrain/metrics.jsonl").open()][-1]
        for name, run in RUNS.items():
            row = {"seed": seed, "name": name, **read_run(f"{name}={out / run}"), "demo_s": round(seconds, 1)}
            if name == "freedom_catalog_clip":
                row["held_out_i2t_r1"] = {v: m["i2t_r1"] for v, m in retrieval["retrieval"].items()}
                row["chance_r1"] = {v: m["chance_r1"] for v, m in retrieval["retrieval"].items()}
            results[name].append(row)
            print(json.dumps(row), flush=True)
    mean = {name: float(np.mean([r["test_recall@20"] for r in rows])) for name, rows in results.items()}
    for name, rows in results.items():
        recall = [r["test_recall@20"] for r in rows]
        ndcg = [r["test_ndcg@20"] for r in rows]
        print(json.dumps({"name": name, "seeds": len(rows), "test_recall@20_mean": round(mean[name], 4),
                          "test_recall@20_std": round(float(np.std(recall)), 4),
                          "test_ndcg@20_mean": round(float(np.mean(ndcg)), 4),
                          "vs_random_clip": round(mean[name] / mean["freedom_random_clip"], 3),
                          "vs_lightgcn": round(mean[name] / mean["lightgcn"], 3)}))


if __name__ == "__main__":
    main()
