"""SASRec on the demo with four item inputs: ID only, features only (CLIPER), ID + CLIPER, ID +
adapted features; test HR@10 and NDCG@10, mean ± std over seeds, on one leave-one-out split.

    python benchmarks/seq_demo_table.py [--seeds 0,1,2] [--workdir runs/seq_demo_table] [--train KEY=VALUE ...]

Builds what it needs under ``--workdir`` (each step skipped when its output is there): the demo
catalog (``tools/make_demo.py``: users walk through the categories in time), converted with
``split=loo``; the tiny CLIP trained on the catalog's own pairs (``configs/pretrain/demo.yaml``,
as ``scripts/demo.sh``); the CLIPER features it encodes; adapted features (``launch/adapt.py``,
``configs/adapt/demo.yaml``). Then ``launch/train.py --config configs/train/sasrec.yaml`` per
seed and input, a world of one, with ``TRAIN`` below and ``--train`` on top. The seed is the SASRec run's; the features are the same for every seed (one CLIP
and one adaptation, seed 0). One JSON line per run, one per input with the means and standard
deviations, then a Markdown table. A quality comparison on one small split, not a timing.
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

INPUTS = {  # name: (model.item_input, feature directory under the workdir or None)
    "SASRec ID-only": ("id", None),
    "SASRec features-only (CLIPER)": ("features", "features"),
    "SASRec ID + CLIPER": ("id+features", "features"),
    "SASRec ID + adapted": ("id+features", "adapted"),
}
METRICS = ("hr@10", "ndcg@10")
# configs/train/sasrec.yaml, with batches the demo's 500 users cut into ~16 steps an epoch (32 users,
# ~300 positions a step, as seq_recbole.py trains)
TRAIN = ["batch_size=32", "epochs=300"]


def prepare(work: Path, threads: int, items: int, users: int, pretrain: list[str], adapt: list[str]) -> None:
    """Demo catalog -> loo dataset -> catalog-trained CLIP -> CLIPER features -> adapted features."""
    model = REPO / "configs" / "models" / "clip-tiny.json"
    if not (work / "raw" / "interactions.csv").exists():
        launch_tool("make_demo.py", ["--out", work / "raw", "--items", items, "--users", users])
    if not (work / "dataset" / "manifest.json").exists():
        launch("convert.py", ["--format", "jsonl", "--catalog", work / "raw" / "catalog.jsonl", "--images",
                              work / "raw" / "images", "--interactions", work / "raw" / "interactions.csv",
                              "--out", work / "dataset", "shard_size=100", "split=loo"], threads)
    if not (work / "clip-catalog" / "clip.pt").exists():
        launch_tool("init_checkpoint.py", ["--model", model, "--out", work / "clip-tiny.pt"])
        launch("pretrain.py", ["--config", REPO / "configs" / "pretrain" / "demo.yaml", "--data", work / "dataset",
                               "--model", model, "--init", work / "clip-tiny.pt", "--out", work / "clip-catalog",
                               "seed=0", *pretrain], threads)
    if not (work / "features" / "manifest.json").exists():
        launch("encode.py", ["--data", work / "dataset", "--out", work / "features", "--model", model,
                             "--pretrained", work / "clip-catalog" / "clip.pt"], threads)
    if not (work / "adapted" / "manifest.json").exists():
        launch("adapt.py", ["--config", REPO / "configs" / "adapt" / "demo.yaml", "--data", work / "dataset",
                            "--features", work / "features", "--out", work / "adapted", "seed=0",
                            f"threads={threads}", *adapt], threads)


def launch_tool(script: str, args: list) -> None:
    import subprocess

    result = subprocess.run([sys.executable, str(REPO / "tools" / script), *map(str, args)], text=True,
                            capture_output=True)
    if result.returncode != 0:
        sys.exit(f"{script} failed:\n{result.stderr[-3000:]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--workdir", type=Path, default=REPO / "runs" / "seq_demo_table")
    parser.add_argument("--items", type=int, default=1000, help="demo catalog size (tools/make_demo.py)")
    parser.add_argument("--users", type=int, default=500, help="demo users (tools/make_demo.py)")
    parser.add_argument("--inputs", default=",".join(INPUTS), help="which rows, comma-separated")
    parser.add_argument("--train", nargs="*", default=[], help="train key=value overrides (every run), after "
                        "configs/train/sasrec.yaml and " + " ".join(TRAIN))
    parser.add_argument("--pretrain", nargs="*", default=[], help="CLIP pretrain key=value overrides (on "
                        "configs/pretrain/demo.yaml)")
    parser.add_argument("--adapt", nargs="*", default=[], help="adapt key=value overrides (on "
                        "configs/adapt/demo.yaml)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--prepare-only", action="store_true", help="build the dataset and features, train nothing")
    args = parser.parse_args()
    work = args.workdir
    prepare(work, args.threads, args.items, args.users, args.pretrain, args.adapt)
    if args.prepare_only:
        return
    names = args.inputs.split(",")
    rows: dict[str, list[dict]] = {name: [] for name in names}
    for seed in (int(s) for s in args.seeds.split(",")):
        for name in names:
            item_input, features = INPUTS[name]
            out = work / "runs" / f"{item_input.replace('+', '_')}-{features or 'none'}-{seed}"
            extra = ["--features", work / features] if features else []
            seconds = launch("train.py", ["--config", REPO / "configs" / "train" / "sasrec.yaml", "--data",
                                          work / "dataset", "--out", out, *extra, f"model.item_input={item_input}",
                                          f"seed={seed}", f"threads={args.threads}", "checkpoint_every=0",
                                          "save_best=false", *TRAIN, *args.train], args.threads)
            final = json.loads((out / "final.json").read_text())
            row = {"bench": "seq_demo_table", "input": name, "seed": seed, "best_epoch": final["best_epoch"],
                   **{f"{split}_{m}": round(final[split][m], 5) for split in ("valid", "test") for m in METRICS},
                   "train_s": round(seconds, 1)}
            rows[name].append(row)
            print(json.dumps(row), flush=True)
    table = ["| item input | test HR@10 | test NDCG@10 | seeds |", "|---|---|---|---|"]
    for name, runs in rows.items():
        summary = {"bench": "seq_demo_table", "input": name, "seeds": len(runs)}
        cells = []
        for m in METRICS:
            mean, std = mean_std((r[f"test_{m}"] for r in runs), 4)
            summary[f"test_{m}_mean"], summary[f"test_{m}_std"] = mean, std
            cells.append(f"{mean:.4f} ± {std:.4f}")
        print(json.dumps(summary), flush=True)
        table.append(f"| {name} | {cells[0]} | {cells[1]} | {len(runs)} |")
    print("\n".join(table), flush=True)


if __name__ == "__main__":
    main()
