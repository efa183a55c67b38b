"""Top-K items per user from a trained run (the model of its best valid epoch).

    python tools/recommend.py RUN_DIR --users U123,U456 --k 20
    python tools/recommend.py RUN_DIR --users-file users.txt --k 20 --checkpoint last
    python tools/recommend.py RUN_DIR --users 0,17,42 --by-index

Users are named by the catalog's own ids (users.jsonl of the dataset; an MMRec folder's ids
are its userID numbers), or by index with --by-index. Prints one JSON line per user:
{"user": ID, "user_index": U, "items": [item ids], "titles": [...], "scores": [...]}, best
first ("titles" where the dataset has them; UTF-8, non-ASCII text as is). The user's training items are never
recommended. A sequential run (model.name=sasrec) recommends each user's next items after
its whole history (train, valid and test items, in time order), none of them recommended again.
Unknown users are refused before the model is loaded. Runs as one process:
the run's sharded checkpoint is resharded onto it by torch.distributed.checkpoint. The
run's config.yaml says where its data (and features) are; --data/--features override
moved folders.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cliper_dist import checkpoint, config, dirs, dist, files, quiet
from cliper_dist.data import schema
from cliper_dist.data.recdata import load_rec_data
from cliper_dist.errors import UserError
from cliper_dist.model.registry import model_class
from cliper_dist.train.job import CONFIG_FILE, TrainConfig, build_engine, build_seq_trainer
from cliper_dist.train.metrics import csr_entries


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=config.ToolHelp)
    parser.add_argument("run_dir", help="a train run directory (config.yaml, checkpoints/)")
    who = parser.add_mutually_exclusive_group(required=True)
    who.add_argument("--users", help="comma-separated user ids")
    who.add_argument("--users-file", help="file of user ids, one per line")
    parser.add_argument("--by-index", action="store_true", help="the users are indices 0..U-1, not catalog ids")
    parser.add_argument("--k", type=int, default=20, help="items per user")
    parser.add_argument("--checkpoint", choices=(checkpoint.BEST, checkpoint.LAST), default=checkpoint.BEST,
                        help="the best valid epoch's tables, or the last checkpoint's")
    parser.add_argument("--data", help="the run's dataset, where it has moved (None: the run's config)")
    parser.add_argument("--features", help="the run's features, where they have moved (None: the run's config)")
    parser.add_argument("--verbose", action="store_true", help="show known-harmless library warnings")
    return parser.parse_args(argv)


@dataclass
class Catalog:
    """The ids users and items have in the catalog (an MMRec folder's are its index numbers)."""

    num_users: int
    user_ids: list[str] | None = None
    item_ids: list[str] | None = None
    titles: list[str] | None = None

    @classmethod
    def open(cls, data: str) -> "Catalog":
        if dirs.kind(data) != dirs.DATASET:
            return cls(load_rec_data(data).num_users)
        users = [row["user_id"] for row in files.read_jsonl(Path(data) / schema.USERS)]
        items = list(files.read_jsonl(Path(data) / schema.ITEMS))
        return cls(len(users), users, [it["item_id"] for it in items], [it.get("title") or "" for it in items])

    def indices(self, names: list[str], by_index: bool) -> np.ndarray:
        if by_index or self.user_ids is None:
            try:
                index = np.array([int(x) for x in names], dtype=np.int64)
            except ValueError:
                raise UserError(f"user indices must be integers; got {names[:5]}") from None
            bad = index[(index < 0) | (index >= self.num_users)]
            if len(bad):
                raise UserError(f"user(s) {bad[:5].tolist()} out of range: the run has users 0..{self.num_users - 1}")
            return index
        lookup = {u: i for i, u in enumerate(self.user_ids)}
        unknown = [x for x in names if x not in lookup]
        if unknown:
            raise UserError(f"unknown user id(s) {unknown[:5]} (ids are those of the dataset's users.jsonl; "
                            "--by-index takes indices)")
        return np.array([lookup[x] for x in names], dtype=np.int64)

    def user(self, index: int) -> str | int:
        return self.user_ids[index] if self.user_ids is not None else index

    def describe_items(self, items: list[int]) -> dict:
        if self.item_ids is None:
            return {"items": items}
        return {"items": [self.item_ids[i] for i in items], "titles": [self.titles[i] for i in items]}


def recommend(run_dir: str | Path, names: list[str], k: int, kind: str = checkpoint.BEST,
              overrides: list[str] = (), by_index: bool = False) -> list[dict]:
    run_dir = Path(run_dir)
    if not (run_dir / CONFIG_FILE).is_file():
        raise UserError(f"{run_dir}: not a train run directory (no {CONFIG_FILE})")
    path = checkpoint.resolve(run_dir, kind)
    if path is None:
        raise UserError(f"{run_dir}: no complete '{kind}' checkpoint (save_best=false or the run never evaluated?)")
    if k < 1:
        raise UserError(f"--k must be >= 1; got {k}")
    cfg = config.load_saved(TrainConfig, run_dir / CONFIG_FILE, [f"out={run_dir}", *overrides])
    if model_class(cfg.model.name).task == "ctr":
        raise UserError(f"{run_dir}: a CTR run ({cfg.model.name}) scores given (user, item) pairs; it ranks no "
                        f"catalog, so there is nothing to recommend from it")
    catalog = Catalog.open(cfg.data)
    users = catalog.indices(names, by_index)
    info = dist.init(device="cpu")
    scores_of = cf_scores if model_class(cfg.model.name).task == "cf" else next_item_scores
    scores = scores_of(cfg, info, path, users)
    with torch.no_grad():
        top = scores.topk(min(k, scores.shape[1]), dim=1)
    out = []
    for row, u in enumerate(users.tolist()):
        keep = torch.isfinite(top.values[row])  # a user who saw almost every item gets fewer
        out.append({"user": catalog.user(u), "user_index": u, **catalog.describe_items(top.indices[row][keep].tolist()),
                    "scores": [round(float(s), 6) for s in top.values[row][keep]]})
    return out


@torch.no_grad()
def cf_scores(cfg: TrainConfig, info: dist.DistInfo, path: Path, users: np.ndarray) -> torch.Tensor:
    """Every item's score for ``users`` (their training items: -inf), from a graph model's tables."""
    engine = build_engine(cfg, info)
    checkpoint.load(path, engine.state_dict(with_optimizer=False))
    users_emb, items_emb = engine.model.embeddings()  # one rank: every column
    scores = users_emb[torch.from_numpy(users)] @ items_emb.T
    r, c = csr_entries(engine.data.train.indptr, engine.data.train.indices, users)
    scores[torch.from_numpy(r), torch.from_numpy(c)] = -torch.inf
    return scores


@torch.no_grad()
def next_item_scores(cfg: TrainConfig, info: dist.DistInfo, path: Path, users: np.ndarray) -> torch.Tensor:
    """Every item's score as the next of ``users``' whole histories (the items seen: -inf)."""
    trainer = build_seq_trainer(cfg, info)
    checkpoint.load(path, trainer.state_dict(with_optimizer=False))
    model = trainer.model
    indptr, seen = trainer.seqs.history(with_valid=True, with_test=True)
    scores = model.user_vectors((indptr, seen), users) @ model.own_rows().T  # one rank: every item
    r, c = csr_entries(indptr, seen, users)
    scores[torch.from_numpy(r), torch.from_numpy(c)] = -torch.inf
    return scores


def json_line(row: dict) -> str:
    """One output line: JSON with non-ASCII text as is (not \\u escapes)."""
    return json.dumps(row, ensure_ascii=False)


def main() -> None:
    args = parse_args(sys.argv[1:])
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(encoding="utf-8")
    if not args.verbose:
        quiet.hide_known_library_noise()
    if args.users_file is not None and not Path(args.users_file).is_file():
        raise UserError(f"--users-file not found: {args.users_file}")
    text = args.users if args.users is not None else Path(args.users_file).read_text()
    names = [x.strip() for x in text.replace("\n", ",").split(",") if x.strip()]
    overrides = [f"{key}={v}" for key in ("data", "features") if (v := getattr(args, key))]
    for line in recommend(args.run_dir, names, args.k, args.checkpoint, overrides, args.by_index):
        print(json_line(line))


if __name__ == "__main__":
    dist.run_main(main)
