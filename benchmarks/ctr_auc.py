"""Test AUC of the CTR trainer against DeepCTR-Torch 0.3.0 on the same samples, with a planted click
signal that depends on the items' content (``ctr/synthetic.py``).

    python benchmarks/ctr_auc.py [--dims 16,32 --bottom-mlps 64 none --peer-nets matched,defaults
                                  --seeds 0,1,2 --peers deepfm,dcn,dcnv2]

Explicit labels (the planted clicks), the dataset's 80/10/10 split. Ours: ``CtrTrainer`` at 1
rank (the job's trainer: DLRM or DCN, fbgemm's row-wise Adagrad + Adam), ID-only and with the
item features. The peer (DeepFM, DCN or DCN-v2 with the same sparse and dense inputs, Adam) runs in its
own virtual environment, ``benchmarks/.peers/deepctr`` (made on first use: torch from the local
CPU wheel or PyTorch's CPU index, then deepctr-torch 0.3.0; never a project dependency). Both
report the test AUC of their best valid epoch, on the ID-only inputs (ids, catalog fields, counts) and
with the item features.

Settings are chosen the same way on both sides, on valid AUC, never on test: each side runs every
embedding width in ``--dims`` at every seed in ``--seeds``, crossed with a second choice of two
(the default grid gives each side 4 settings): ours every ``--bottom-mlps`` (the dense features'
projection), a peer every ``--peer-nets`` (its MLP and cross layers matched to ours, or the
library's defaults for the model; ``benchmarks/peers/deepctr_auc.py``); a side's
setting is the one with the best mean valid AUC over the seeds, per input, and its result that
setting's test AUC, mean and standard deviation over the seeds. One JSON line per run, then the
summary: each side's setting and test AUC, and ours minus each peer's (per seed, then mean, std).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from cliper_dist import dist  # noqa: E402
from cliper_dist.ctr.catalog import build_field  # noqa: E402
from cliper_dist.ctr.config import DCNConfig, DLRMConfig  # noqa: E402
from cliper_dist.ctr.data import CtrData, LabelConfig, standardise  # noqa: E402
from cliper_dist.ctr.synthetic import synthetic_ctr  # noqa: E402
from cliper_dist.ctr.trainer import CtrTrainer  # noqa: E402
from cliper_dist.parallel.optim import OptimConfig  # noqa: E402
from stats import mean_std  # noqa: E402

PEER = REPO / "benchmarks" / ".peers" / "deepctr"
SEED = 0


def ensure_peer() -> Path:
    python = PEER / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(PEER)], check=True)
        pip = [str(python), "-m", "pip", "-q", "install"]
        if subprocess.run([*pip, "torch==2.13.0"]).returncode:
            subprocess.run([*pip, "torch==2.13.0", "--index-url", "https://download.pytorch.org/whl/cpu"], check=True)
        # deepctr-torch imports requests (its version check) without declaring it
        subprocess.run([*pip, "deepctr-torch==0.3.0", "numpy", "scikit-learn", "requests"], check=True)
    return python


def make_data(args, with_features: bool) -> CtrData:
    s = synthetic_ctr(args.users, args.items, args.per_user, seed=SEED, feature_dim=32)
    fields = [build_field(s.items, "brand", 2), build_field(s.items, "categories", 2)]
    dense = standardise(torch.from_numpy(s.features)) if with_features else None
    return CtrData.build(s.inter, s.num_users, s.num_items, LabelConfig("explicit"), SEED, fields, dense, "synthetic")


def train_ours(data: CtrData, args, info, dim: int, bottom_mlp: list[int], seed: int) -> dict:
    keys = dict(embedding_dim=dim, bottom_mlp=bottom_mlp, top_mlp=[64, 32], bottom_out=args.bottom_out,
                table_lr=args.table_lr)
    cfg = DCNConfig(**keys) if args.model == "dcn" else DLRMConfig(**keys)
    trainer = CtrTrainer(data, cfg, OptimConfig(lr=1e-3), args.batch, seed, info)
    best, waited, record = -1.0, 0, {}
    for epoch in range(args.epochs):
        trainer.train_epoch(epoch)
        m = trainer.evaluate()
        if m["valid"]["auc"] > best:
            best, waited = m["valid"]["auc"], 0
            record = {"epoch": epoch, "valid_auc": round(m["valid"]["auc"], 5), "test_auc": round(m["test"]["auc"], 5),
                      "test_logloss": round(m["test"]["logloss"], 5)}
        else:
            waited += 1
            if waited >= args.patience:
                break
    return {"side": f"ours_{args.model}", "seed": seed, "dim": dim, "bottom_mlp": bottom_mlp,
            "bottom_out": args.bottom_out, **record, "epochs_run": epoch + 1}


def export(data: CtrData, path: Path) -> None:
    """The samples as the peer reads them: one id per single-valued field, the category bag padded
    with 0 (ids shifted by one), the same dense columns."""
    brand, category = data.fields
    out = {"size_user": data.num_users, "size_item": data.num_items, "size_brand": brand.num_ids,
           "size_category": category.num_ids}
    maxlen = int(np.diff(category.offsets).max())
    for split in ("train", "valid", "test"):
        s = data.positives[split]
        batch = data.batch(s)
        values, lengths = category.bags(s.item)
        bag = np.zeros((len(s), maxlen), dtype=np.int64)
        rows = np.repeat(np.arange(len(s)), lengths)
        cols = np.arange(len(values)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        bag[rows, cols] = values + 1
        out.update({f"{split}_user": s.user, f"{split}_item": s.item, f"{split}_brand": brand.bags(s.item)[0],
                    f"{split}_category": bag, f"{split}_dense": batch.dense_features.numpy(),
                    f"{split}_label": s.label})
    np.savez(path, **out)


def mlp_sizes(text: str) -> list[int]:
    """``none`` (one linear projection) or comma-separated hidden sizes."""
    return [] if text == "none" else [int(x) for x in text.split(",")]


def int_list(text: str) -> list[int]:
    return [int(x) for x in text.split(",")]


def run_grid(args, info, inputs: str, data: CtrData, samples: Path) -> list[dict]:
    """Every side's runs on one input: ours per width and bottom MLP, each peer per width, at every seed."""
    runs = []
    for seed in args.seeds:
        for dim in args.dims:
            runs += [train_ours(data, args, info, dim, mlp, seed) for mlp in args.bottom_mlps]
            runs += [run_peer(samples, peer, args, dim, net, seed) for peer in args.peers for net in args.peer_nets]
    for r in runs:
        r["inputs"] = inputs
        print(json.dumps(r), flush=True)
    return runs


def setting(run: dict) -> str:
    return f"dim={run['dim']}" + (f" bottom_mlp={run['bottom_mlp']}" if "bottom_mlp" in run else f" net={run['net']}")


def choose(runs: list[dict]) -> dict[str, list[dict]]:
    """Each side's runs (one per seed, in seed order) at its setting of best mean valid AUC."""
    chosen = {}
    for side in dict.fromkeys(r["side"] for r in runs):
        by_setting: dict[str, list[dict]] = {}
        for r in runs:
            if r["side"] == side:
                by_setting.setdefault(setting(r), []).append(r)
        chosen[side] = max(by_setting.values(), key=lambda rs: np.mean([r["valid_auc"] for r in rs]))
    return chosen


def summarise(runs: list[dict], ours: str) -> dict:
    """Per input: each side's chosen setting and test AUC, and ours minus each peer's."""
    summary = {}
    for inputs in dict.fromkeys(r["inputs"] for r in runs):
        chosen = choose([r for r in runs if r["inputs"] == inputs])
        ours_auc = [r["test_auc"] for r in chosen[ours]]
        for side, rs in chosen.items():
            summary[f"{side}_{inputs}"] = {"setting": setting(rs[0]), "test_auc": mean_std((r["test_auc"] for r in rs), 5),
                                          "valid_auc": round(float(np.mean([r["valid_auc"] for r in rs])), 5)}
            if side != ours:
                diffs = [round(a - r["test_auc"], 5) for a, r in zip(ours_auc, rs)]
                summary[f"ours_minus_{side}_{inputs}"] = {"per_seed": diffs, "mean_std": mean_std(diffs, 5)}
    return summary


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--users", type=int, default=3000)
    p.add_argument("--items", type=int, default=2000)
    p.add_argument("--per-user", type=int, default=30)
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--patience", type=int, default=3)
    p.add_argument("--table-lr", type=float, default=0.05)
    p.add_argument("--dims", default="16,32", type=int_list, help="embedding widths, comma-separated: both sides' grid")
    p.add_argument("--bottom-mlps", nargs="+", default=[[64], []], type=mlp_sizes,
                   help="ours: model.bottom_mlp choices, each 'none' (one linear map) or comma-separated sizes")
    p.add_argument("--bottom-out", default="linear", choices=["linear", "relu"], help="ours: model.bottom_out")
    p.add_argument("--seeds", default="0", type=int_list, help="both sides' initial values and batch order, "
                   "comma-separated (the data: seed 0)")
    p.add_argument("--model", default="dlrm", choices=["dlrm", "dcn"])
    p.add_argument("--peers", default="deepfm,dcn,dcnv2", type=lambda t: t.split(","),
                   help="DeepCTR-Torch models, comma-separated: deepfm, dcn (vector cross), dcnv2 (matrix cross)")
    p.add_argument("--peer-nets", default="matched,defaults", type=lambda t: t.split(","),
                   help="the peers' second choice, comma-separated: matched (ours' top MLP, 3 cross layers), "
                        "defaults (DeepCTR-Torch's own for the model)")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    info = dist.init(device="cpu")
    runs = []
    for features in (False, True):
        data = make_data(args, features)
        with tempfile.TemporaryDirectory() as tmp:
            export(data, Path(tmp) / "samples.npz")
            runs += run_grid(args, info, "features" if features else "id_only", data, Path(tmp) / "samples.npz")
    print(json.dumps({"summary": "ctr_auc", "seeds": args.seeds, "dims": args.dims, "bottom_mlps": args.bottom_mlps,
                      "peer_nets": args.peer_nets,
                      **summarise(runs, f"ours_{args.model}")}), flush=True)


def run_peer(samples: Path, peer: str, args, dim: int, net: str, seed: int) -> dict:
    out = subprocess.run([str(ensure_peer()), str(REPO / "benchmarks" / "peers" / "deepctr_auc.py"), str(samples),
                          "--model", peer, "--epochs", str(args.epochs), "--patience", str(args.patience),
                          "--batch", str(args.batch), "--threads", str(args.threads), "--dim", str(dim),
                          "--net", net, "--seed", str(seed)],
                         capture_output=True, text=True)
    line = next((x for x in out.stdout.splitlines() if x.startswith("{")), None)
    if out.returncode or line is None:
        sys.exit(f"the peer failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    return {**json.loads(line), "dim": dim, "net": net, "seed": seed}


if __name__ == "__main__":
    main()
