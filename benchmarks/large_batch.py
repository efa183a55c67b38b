"""Large-batch training on Baby: test R@20 and wall-clock to the best epoch as the batch grows.

    python benchmarks/large_batch.py --data ../shared/data/amazon/baby \
        [--runs 2048:none,8192:sqrt,8192:linear,32768:sqrt,32768:linear] [--config configs/train/lightgcn.yaml]

Each run is ``launch/train.py`` with the config, to early stopping, 1 rank x ``--threads``,
without checkpoints, at ``batch_size`` B and the learning rate and regularisation that a
scaling rule gives from the config's values at its own batch B0 (docs/train.md, "Large
batches"):

- ``none``: lr and reg_weight unchanged;
- ``sqrt``: lr and reg_weight times sqrt(B / B0) (the documented rule for an EmbLoss
  reg_weight: LightGCN, VBPR);
- ``sqrt_lr``: lr times sqrt(B / B0), reg_weight unchanged (the rule for FREEDOM, whose
  reg_weight weighs mean-form modality BPR losses);
- ``linear``: lr times B / B0, reg_weight unchanged.

One JSON line per run: best epoch, valid and test R@20 there, s/epoch, and the seconds of
training and evaluation up to and including the best epoch.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cliper_dist import config as config_lib  # noqa: E402
from cliper_dist.train.job import TrainConfig  # noqa: E402

RULES = {"none": lambda r: (1.0, 1.0), "sqrt": lambda r: (r ** 0.5, r ** 0.5), "sqrt_lr": lambda r: (r ** 0.5, 1.0),
         "linear": lambda r: (r, 1.0)}


def run(config: Path, data: str, batch: int, rule: str, threads: int, work: Path, extra: list[str]) -> dict:
    base = config_lib.load(TrainConfig, config)  # its batch may be TrainConfig's default
    lr_x, reg_x = RULES[rule](batch / base.batch_size)
    lr, reg = base.optim.lr * lr_x, base.model.reg_weight * reg_x
    out = work / f"b{batch}_{rule}"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1",
           str(REPO / "launch/train.py"), "--config", str(config), "--data", data, "--out", str(out),
           f"batch_size={batch}", f"optim.lr={lr:g}", f"model.reg_weight={reg:g}", f"threads={threads}",
           "checkpoint_every=0", "save_best=false", "resume=never", *extra]
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS=str(threads))
    proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stdout[-4000:]}")
    final = json.loads((out / "final.json").read_text())
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    upto = [x for x in lines if x["epoch"] <= final["best_epoch"]]
    return {"bench": "large_batch", "batch": batch, "rule": rule, "lr": float(f"{lr:g}"), "reg_weight": float(f"{reg:g}"),
            "best_epoch": final["best_epoch"], "epochs": final["epochs"],
            "valid_recall@20": final["valid"]["recall@20"], "test_recall@20": final["test"]["recall@20"],
            "s_per_epoch": final["s_per_epoch"],
            "train_s_to_best": round(sum(x["epoch_s"] for x in upto), 3),
            "wall_s_to_best": round(sum(x["epoch_s"] + x["eval_s"] for x in upto), 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True, help="MMRec Baby folder (baby.inter)")
    parser.add_argument("--config", default=str(REPO / "configs/train/lightgcn.yaml"))
    parser.add_argument("--runs", default="2048:none,8192:none,8192:sqrt,8192:linear,32768:sqrt,32768:linear",
                        help="BATCH:RULE, comma-separated (rules: none, sqrt, sqrt_lr, linear)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--train", nargs="*", default=[], help="extra key=value overrides for every run")
    args = parser.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="large_batch_"))
    rows = []
    for spec in args.runs.split(","):
        batch, rule = spec.split(":")
        rows.append(run(Path(args.config), args.data, int(batch), rule, args.threads, work, args.train))
        print(json.dumps(rows[-1]), flush=True)
    base = rows[0]
    for r in rows[1:]:
        print(json.dumps({"bench": "large_batch", "batch": r["batch"], "rule": r["rule"],
                          "test_recall@20_vs_first": round(r["test_recall@20"] / base["test_recall@20"], 3),
                          "wall_to_best_speedup_vs_first": round(base["wall_s_to_best"] / max(r["wall_s_to_best"], 1e-3), 2)}))


if __name__ == "__main__":
    main()
