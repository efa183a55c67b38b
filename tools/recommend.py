"""Top-K items per user from a trained run (the tables of its best valid epoch).

    python tools/recommend.py RUN_DIR --users 0,17,42 --k 20
    python tools/recommend.py RUN_DIR --users-file users.txt --k 20 --checkpoint last

Prints one JSON line per user: {"user": U, "items": [...], "scores": [...]}, best first.
The user's training items are never recommended. Runs as one process: the run's sharded
checkpoint is resharded onto it by torch.distributed.checkpoint. The run's config.yaml
says where its data (and features) are; --data/--features override moved folders.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from cliper_dist import config, dist
from cliper_dist.errors import UserError
from cliper_dist.train import checkpoint
from cliper_dist.train.job import CONFIG_FILE, TrainConfig, build_engine
from cliper_dist.train.metrics import csr_entries


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", help="a train run directory (config.yaml, checkpoints/)")
    who = parser.add_mutually_exclusive_group(required=True)
    who.add_argument("--users", help="comma-separated user indices")
    who.add_argument("--users-file", help="file of user indices, one per line")
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--checkpoint", choices=(checkpoint.BEST, checkpoint.LAST), default=checkpoint.BEST)
    parser.add_argument("--data", help="override the run's data path")
    parser.add_argument("--features", help="override the run's features path")
    return parser.parse_args(argv)


def parse_users(text: str) -> np.ndarray:
    try:
        return np.array([int(x) for x in text.replace("\n", ",").split(",") if x.strip()], dtype=np.int64)
    except ValueError:
        raise UserError(f"user indices must be integers; got {text[:80]!r}") from None


def recommend(run_dir: str | Path, users: np.ndarray, k: int, kind: str = checkpoint.BEST,
              overrides: list[str] = ()) -> list[dict]:
    run_dir = Path(run_dir)
    if not (run_dir / CONFIG_FILE).is_file():
        raise UserError(f"{run_dir}: not a train run directory (no {CONFIG_FILE})")
    path = checkpoint.resolve(run_dir, kind)
    if path is None:
        raise UserError(f"{run_dir}: no complete '{kind}' checkpoint (save_best=false or the run never evaluated?)")
    cfg = config.load(TrainConfig, run_dir / CONFIG_FILE, [f"out={run_dir}", *overrides])
    info = dist.init(device="cpu")
    engine = build_engine(cfg, info)
    n_users, n_items = engine.data.num_users, engine.data.num_items
    bad = users[(users < 0) | (users >= n_users)]
    if len(bad):
        raise UserError(f"user(s) {bad[:5].tolist()} out of range: the run has users 0..{n_users - 1}")
    if k < 1:
        raise UserError(f"--k must be >= 1; got {k}")
    checkpoint.load(path, engine.state_dict(with_optimizer=False))
    users_emb, items_emb = engine.model.embeddings()  # one rank: every column
    with torch.no_grad():
        scores = users_emb[torch.from_numpy(users)] @ items_emb.T
        r, c = csr_entries(engine.data.train.indptr, engine.data.train.indices, users)
        scores[torch.from_numpy(r), torch.from_numpy(c)] = -torch.inf
        top = scores.topk(min(k, n_items), dim=1)
    out = []
    for row, u in enumerate(users.tolist()):
        keep = torch.isfinite(top.values[row])  # a user who trained on almost every item gets fewer
        out.append({"user": u, "items": top.indices[row][keep].tolist(),
                    "scores": [round(float(s), 6) for s in top.values[row][keep]]})
    return out


def main() -> None:
    args = parse_args(sys.argv[1:])
    if args.users_file is not None and not Path(args.users_file).is_file():
        raise UserError(f"--users-file not found: {args.users_file}")
    users = parse_users(args.users if args.users is not None else Path(args.users_file).read_text())
    overrides = [f"{key}={v}" for key in ("data", "features") if (v := getattr(args, key))]
    for line in recommend(args.run_dir, users, args.k, args.checkpoint, overrides):
        print(json.dumps(line))


if __name__ == "__main__":
    dist.run_main(main)
