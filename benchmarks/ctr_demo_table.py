"""DLRM on the demo with three dense inputs: ID-only (ids, catalog fields, counts), + CLIPER features,
+ adapted features; test AUC and LogLoss at the best valid AUC, mean ± std over seeds.

    python benchmarks/ctr_demo_table.py --data DATASET --features FEATURES --adapted ADAPTED \\
        [--seeds 0,1,2] [--out runs/ctr_demo_table] [--train KEY=VALUE ...]

``DATASET`` is a converted demo (``scripts/demo.sh`` or ``benchmarks/seq_demo_table.py`` make one),
``FEATURES`` the CLIPER features the catalog-trained CLIP encoded, ``ADAPTED`` the adapt job's
output. Each run is ``launch/train.py --config configs/train/dlrm.yaml`` (implicit labels: the
demo has no ratings), a world of one, with ``--train`` on top; the seed is the run's (initial
values, negatives, batches), the features are the same for every seed. One JSON line per run, one
per input with the means and standard deviations, then a Markdown table. A quality comparison on
one small split, not a timing.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from adapt_quality import launch  # noqa: E402
from stats import mean_std  # noqa: E402

METRICS = ("auc", "logloss")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True)
    p.add_argument("--features", required=True)
    p.add_argument("--adapted", required=True)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--out", default=str(REPO / "runs" / "ctr_demo_table"))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--train", nargs="*", default=[], help="train key=value overrides")
    args = p.parse_args()
    inputs = {"DLRM ID-only": None, "DLRM + CLIPER": args.features, "DLRM + adapted": args.adapted}
    rows = {}
    for name, features in inputs.items():
        per_seed = []
        for seed in map(int, args.seeds.split(",")):
            out = Path(args.out) / f"{name.split()[-1].lower()}-{seed}"
            if not (out / "final.json").exists():
                launch("train.py", ["--config", REPO / "configs" / "train" / "dlrm.yaml", "--data", args.data,
                                    *(["--features", features] if features else []), "--out", out, f"seed={seed}",
                                    f"threads={args.threads}", "checkpoint_every=0", "save_best=false", *args.train],
                       args.threads)
            final = json.loads((out / "final.json").read_text())
            line = {"input": name, "seed": seed, "best_epoch": final["best_epoch"],
                    **{f"test_{m}": round(final["test"][m], 4) for m in METRICS},
                    **{f"valid_{m}": round(final["valid"][m], 4) for m in METRICS}, "wall_s": final["wall_s"]}
            print(json.dumps(line), flush=True)
            per_seed.append(line)
        rows[name] = {m: mean_std((r[f"test_{m}"] for r in per_seed), 4) for m in METRICS}
        print(json.dumps({"input": name, "seeds": len(per_seed), **{f"test_{m}": rows[name][m] for m in METRICS}}),
              flush=True)
    print("\n| input | test AUC | test LogLoss |\n|---|---|---|")
    for name, r in rows.items():
        print(f"| {name} | {r['auc'][0]:.4f} ± {r['auc'][1]:.4f} | {r['logloss'][0]:.4f} ± {r['logloss'][1]:.4f} |")


if __name__ == "__main__":
    main()
