"""Does CPMM-style adaptation help FREEDOM? Test metrics of LightGCN, FREEDOM on raw features
and FREEDOM on adapted features, on the same split, averaged over seeds.

    python benchmarks/adapt_quality.py --data runs/demo/dataset --features runs/demo/features \
        --train-config configs/train/demo.yaml [--seeds 0,1,2] [--adapt key=value ...] [--train key=value ...] \
        [--freedom model.knn_k=...]  # --train: keys every model has; --freedom: FREEDOM's own

One JSON line per (seed, variant), then one per variant with the mean and standard deviation
over seeds. Every job runs as a world of one through its launcher. ``--features`` may be an
encode output or an MMRec folder (for Baby: the random stand-ins of benchmarks/train_epoch.py).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from stats import mean_std  # noqa: E402

VARIANTS = ("lightgcn", "freedom-raw", "freedom-adapted")


def launch(script: str, args: list, threads: int) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(REPO)}
    start = time.perf_counter()
    result = subprocess.run([sys.executable, str(REPO / "launch" / script), *map(str, args)], env=env, text=True,
                            capture_output=True)
    if result.returncode != 0:
        sys.exit(f"{script} failed:\n{result.stderr[-3000:]}")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--features", required=True)
    parser.add_argument("--train-config", required=True, help="train YAML (FREEDOM settings; LightGCN reuses it)")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--adapt", nargs="*", default=[], help="adapt key=value overrides")
    parser.add_argument("--train", nargs="*", default=[], help="train key=value overrides (every variant: keys every "
                        "model has)")
    parser.add_argument("--freedom", nargs="*", default=[], help="train key=value overrides of FREEDOM's own keys "
                        "(model.knn_k, ...): the two FREEDOM variants")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="adapt_quality_"))
    rows = {v: [] for v in VARIANTS}
    for seed in (int(s) for s in args.seeds.split(",")):
        common = ["--config", args.train_config, "--data", args.data, f"seed={seed}", f"threads={args.threads}",
                  "checkpoint_every=0", "save_best=false", *args.train]
        adapted = work / f"adapted-{seed}"
        adapt_s = launch("adapt.py", ["--data", args.data, "--features", args.features, "--out", adapted,
                                      f"seed={seed}", f"threads={args.threads}", *args.adapt], args.threads)
        for variant, extra in (("lightgcn", ["model.name=lightgcn"]),
                               ("freedom-raw", ["--features", args.features, *args.freedom]),
                               ("freedom-adapted", ["--features", adapted, *args.freedom])):
            out = work / f"{variant}-{seed}"
            seconds = launch("train.py", [*common, *extra, "--out", out], args.threads)
            final = json.loads((out / "final.json").read_text())
            row = {"bench": "adapt_quality", "variant": variant, "seed": seed, "best_epoch": final["best_epoch"],
                   **{f"{split}_{m}": round(final[split][m], 5) for split in ("valid", "test")
                      for m in ("recall@20", "ndcg@20")},
                   "train_s": round(seconds, 1), **({"adapt_s": round(adapt_s, 1)} if variant.endswith("adapted")
                                                    else {})}
            rows[variant].append(row)
            print(json.dumps(row), flush=True)
    for variant, runs in rows.items():
        summary = {"bench": "adapt_quality", "variant": variant, "seeds": len(runs)}
        for key in ("valid_recall@20", "test_recall@20", "test_ndcg@20"):
            summary[f"{key}_mean"], summary[f"{key}_std"] = mean_std((r[key] for r in runs), 5)
        print(json.dumps(summary), flush=True)
    raw = statistics.mean(r["test_recall@20"] for r in rows["freedom-raw"])
    adapted = statistics.mean(r["test_recall@20"] for r in rows["freedom-adapted"])
    print(json.dumps({"bench": "adapt_quality", "adapted_vs_raw_test_recall@20": round(adapted / raw, 4)}))


if __name__ == "__main__":
    main()
