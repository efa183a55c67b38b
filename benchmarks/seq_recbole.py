"""SASRec side by side with RecBole 1.2.1's, on the same leave-one-out split: test NDCG@10 and
train seconds per epoch of each, and their ratios.

    python benchmarks/seq_recbole.py [--users 2000 --items 1000 --epochs 200 --patience 10 --examples window,prefix]
    python benchmarks/seq_recbole.py --data DATASET   # a dataset converted with --split loo
    python benchmarks/seq_recbole.py --examples window --norms pre,post --peer-blocks recbole,paper --seeds 0,1,2
    # like for like: RecBole's blocks and examples on both sides, RecBole's table trained as ours
    python benchmarks/seq_recbole.py --examples prefix --norms post --peer-table adam,rowwise_adagrad --seeds 0,1,2

The peer lives in its own virtual environment, ``benchmarks/.peers/recbole`` (made here, once,
about 1.6 GB; never a project dependency): RecBole 1.2.1 from PyPI with what it still runs on, pinned:
torch 2.13.0 (CPU), numpy 1.26.4 (it uses ``np.float``, gone in numpy 1.24), pandas 2.2.3,
scipy 1.13.1, setuptools < 81; and ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` at run time (its
best-model reload fails under torch >= 2.6's ``torch.load(weights_only=True)`` default).

Data: by default the demo's users (``data.demo.sequential_interactions``: colour and shape
preferences, each user walking through the categories in time) at ``--users``, written as an
MMRec folder with our ``--split loo`` labels. RecBole gets atomic files of the same events
(``user_id:token item_id:token timestamp:float``, in ``--workdir``/recbole) whose timestamp is each event's step in its
user's time order (ties broken by input order, as ours), so its ``LS: valid_and_test`` split
with ``order: TO`` must pick our valid and test item for every user; the peer dumps the split
it made and this script checks it is ours, user by user (``split_identical``). Users with fewer
than 3 events are left out of the atomic files (ours trains on them and evaluates none of them;
RecBole would hold one out).

Ours is the job: ``launch/train.py --config configs/train/sasrec.yaml`` (a world of one), read
from its ``final.json``. Both sides: hidden 64, 2 blocks, 1 head, L = 50, dropout 0.2, full
softmax cross-entropy, the same Adam lr, up to ``--epochs`` epochs with early stopping on valid
NDCG@10 (``--patience`` epochs), test at the best valid epoch, 1 process x ``--threads``
threads; train seconds per epoch are the mean over the epochs run, evaluation excluded, on
both sides. What still differs, by design of each:
- the optimizer: RecBole uses Adam on every parameter; ours Adam on the dense part and fbgemm's
  fused row-wise Adagrad on the item table (``--table-lr``; fbgemm 1.8 refuses Adam in CPU mode).
  ``--peer-table rowwise_adagrad`` trains RecBole's item table as ours (the same row-wise Adagrad
  at ``--table-lr``, Adam on the rest);
- an epoch, unless ours runs RecBole's way: RecBole trains one example per training event
  (every prefix of a user's sequence, the last item as target), so ``--batch`` counts events.
  Ours runs once per form in ``--examples``: ``window`` (the job's default, the paper's) trains
  one window per user with every position as a target, so its batch counts users
  (``--ours-batch``, by default ``--batch`` over the mean training positions per user: about as
  many targets a step); ``prefix`` (``model.train_examples=prefix``) trains RecBole's examples at
  RecBole's ``--batch``. ``prefix`` sees every training event as a target once per epoch, as
  RecBole does; ``window`` those in the last L + 1 of a user's train (here: all of them);
- the blocks: RecBole's are post-LayerNorm (BERT's); ours pre-LayerNorm (the paper's); its FFN
  is set to ours (inner size 64, ReLU). Each side can run the other's: ``--norms post`` runs ours
  with ``model.norm=post`` (RecBole's placement), ``--peer-blocks paper`` runs RecBole's SASRec
  with our whole encoder in it (its table, loss, optimizer, data, trainer and evaluation
  unchanged). The encoders still differ in small ways the swap carries along: ours has no q/k/v
  bias, a dropout inside the FFN, LayerNorm eps 1e-8 (RecBole's 1e-12) and positions counted back
  from the most recent item (RecBole's from the oldest);
- evaluation: both rank every item. RecBole's own metrics for a sequential model do not exclude
  the user's history; ours do. The peer therefore also ranks its test users the way ours does
  (history excluded) and the comparison uses that (``recbole_own_*`` are its own numbers).

One JSON line per side and seed (ours: per form and norm), then a summary over ``--seeds``
(each seed draws the synthetic catalog too): each side's test NDCG@10 as [mean, std];
``ndcg_ratio_<form>[_post][_vs_paper_blocks][_vs_rowwise_adagrad_table]`` (ours' mean over
RecBole's; the target is within 3%), the same per seed, and ``epoch_speedup_...`` (RecBole's mean
train s/epoch over ours; the target is >= 2x). The host's speed drifts 15-25% in minutes: read the
speed ratios as noisy.
"""

from __future__ import annotations

import argparse
import hashlib
import inspect
import itertools
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from stats import mean_std  # noqa: E402

PEER = REPO / "benchmarks" / ".peers" / "recbole"
PEER_PINS = ["recbole==1.2.1", "numpy==1.26.4", "pandas==2.2.3", "scipy==1.13.1", "setuptools<81"]
TORCH = "torch==2.13.0"
NAME = "seqbench"
KS = (10, 20)


# ---------------------------------------------------------------- the peer's environment

def ensure_peer_venv(root: Path = PEER) -> Path:
    """RecBole's virtual environment (idempotent: a stamp of the pins marks it done); its python."""
    python = root / "bin" / "python"
    stamp = root / ".pins"
    want = hashlib.sha256(" ".join([TORCH, *PEER_PINS]).encode()).hexdigest()[:16]
    if stamp.exists() and stamp.read_text() == want and python.exists():
        return python
    root.parent.mkdir(parents=True, exist_ok=True)
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(root)], check=True)
    pip = [str(python), "-m", "pip", "--disable-pip-version-check", "-q", "install"]
    # the CPU wheel: a local one where pip finds it, else PyTorch's CPU index (never the CUDA build)
    if subprocess.run(pip + [f"{TORCH}+cpu"], stderr=subprocess.DEVNULL).returncode:
        subprocess.run(pip + [TORCH, "--index-url", os.environ.get("TORCH_CPU_INDEX",
                                                                  "https://download.pytorch.org/whl/cpu")], check=True)
    subprocess.run(pip + PEER_PINS, check=True)
    stamp.write_text(want)
    return python


# ---------------------------------------------------------------- data

def synthetic_dataset(out: Path, users: int, items: int, seed: int) -> Path:
    """The demo's users (planted category walk) as an MMRec folder with our leave-one-out split."""
    sys.path.insert(0, str(REPO))
    from cliper_dist.data.demo import DemoSpec, sequential_interactions
    from cliper_dist.data.interactions import split_per_user, write_inter

    user, item, timestamp, _ = sequential_interactions(DemoSpec(num_items=items, num_users=users, seed=seed))
    out.mkdir(parents=True, exist_ok=True)
    write_inter(out / f"{NAME}.inter", split_per_user(user, item, seed, timestamp=timestamp, leave_one_out=True))
    return out


def write_atomic(data: Path, out: Path, max_len: int) -> dict:
    """RecBole atomic files of ``data``'s events, and our split (valid/test item per user) to check.

    The timestamp written is each event's step in its user's time order (ties: input order), so
    any order RecBole sorts by is ours."""
    import numpy as np

    sys.path.insert(0, str(REPO))
    from cliper_dist.data.recdata import load_interactions
    from cliper_dist.data.schema import SPLIT_TEST, SPLIT_TRAIN, SPLIT_VALID

    inter, num_users, num_items, source = load_interactions(data)
    if inter.timestamp is None:
        raise SystemExit(f"{source}: no timestamp column; convert with --split loo from a source with timestamps")
    order = np.lexsort((np.arange(len(inter.user)), inter.timestamp, inter.user))
    user, item, split = inter.user[order], inter.item[order], inter.split[order]
    counts = np.bincount(user, minlength=num_users)
    step = np.arange(len(user)) - np.repeat(np.cumsum(counts) - counts, counts)
    keep = counts[user] >= 3
    # our loo split puts the last event in test and the one before in valid: check the file says so
    last = step == counts[user] - 1
    if not (np.array_equal(split[keep & last], np.full((keep & last).sum(), SPLIT_TEST))
            and np.array_equal(split[keep & (step == counts[user] - 2)], np.full((keep & last).sum(), SPLIT_VALID))):
        raise SystemExit(f"{source}: not a leave-one-out split by time (convert with --split loo)")
    folder = out / NAME
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f"{NAME}.inter", "w") as f:
        f.write("user_id:token\titem_id:token\ttimestamp:float\n")
        for u, i, t in zip(user[keep].tolist(), item[keep].tolist(), step[keep].tolist()):
            f.write(f"{u}\t{i}\t{t}\n")
    ours = {"valid": {str(u): int(i) for u, i in zip(user[split == SPLIT_VALID], item[split == SPLIT_VALID])},
            "test": {str(u): int(i) for u, i in zip(user[split == SPLIT_TEST], item[split == SPLIT_TEST])}}
    train = np.bincount(user[split == SPLIT_TRAIN], minlength=num_users)
    positions = np.minimum(train[train >= 2], max_len + 1) - 1  # ours: a user's training positions
    return {"num_users": int(num_users), "num_items": int(num_items), "events": int(keep.sum()),
            "positions_per_user": float(positions.mean()),
            "users_left_out": int((counts[counts > 0] < 3).sum()), "split": ours}


# ---------------------------------------------------------------- RecBole (runs in the peer's venv)

def peer_main(args) -> None:
    """Train RecBole's SASRec on the atomic files under ``args.workdir``; print one JSON line."""
    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.model.sequential_recommender import SASRec
    from recbole.trainer import Trainer
    from recbole.utils import init_logger, init_seed

    work = Path(args.workdir)
    config = Config(model="SASRec", dataset=NAME, config_dict={
        "data_path": str(work), "checkpoint_dir": str(work / "saved"), "use_gpu": False, "device": "cpu",
        "seed": args.seed, "reproducibility": True, "show_progress": False, "state": "INFO",
        "USER_ID_FIELD": "user_id", "ITEM_ID_FIELD": "item_id", "TIME_FIELD": "timestamp",
        "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
        "MAX_ITEM_LIST_LENGTH": args.max_len, "hidden_size": 64, "inner_size": 64, "n_layers": 2, "n_heads": 1,
        "hidden_dropout_prob": args.dropout, "attn_dropout_prob": args.dropout, "hidden_act": "relu",
        "loss_type": "CE", "train_neg_sample_args": None,
        "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "full", "group_by": "user"},
        "metrics": ["Hit", "NDCG"], "topk": list(KS), "valid_metric": "NDCG@10",
        "epochs": args.epochs, "stopping_step": args.patience, "eval_step": 1,
        "train_batch_size": args.batch, "eval_batch_size": 256, "learning_rate": args.lr,
    })
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    dataset = create_dataset(config)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    init_seed(config["seed"], config["reproducibility"])
    blocks, = args.peer_blocks
    model = (SASRec if blocks == "recbole" else _paper_blocks(SASRec))(config, train_data.dataset)
    model = model.to(config["device"])
    trainer = Trainer(config, model)
    table, = args.peer_table
    if table == "rowwise_adagrad":
        trainer.optimizer = _TableApart(model, args.lr, args.table_lr)
    epoch_s = []
    train_epoch = trainer._train_epoch

    def timed(*a, **kw):
        t0 = time.perf_counter()
        out = train_epoch(*a, **kw)
        epoch_s.append(time.perf_counter() - t0)
        return out

    trainer._train_epoch = timed
    valid_scores = []
    valid_epoch = trainer._valid_epoch

    def recorded(*a, **kw):
        score, result = valid_epoch(*a, **kw)
        valid_scores.append(float(score))
        return score, result

    trainer._valid_epoch = recorded
    best_valid, _ = trainer.fit(train_data, valid_data, saved=True, show_progress=False)
    own = trainer.evaluate(test_data, load_best_model=True, show_progress=False)
    uid, iid = dataset.uid_field, dataset.iid_field

    def token(field, ids):
        return dataset.id2token(field, ids.numpy()).tolist()

    # the split RecBole made, in our ids (tokens are our ids), and its test ranked as ours ranks:
    # every item but the padding id and the user's history (train + valid), full ranking
    split = {}
    for name, data in (("valid", valid_data), ("test", test_data)):
        d = data.dataset.inter_feat
        split[name] = dict(zip(token(uid, d[uid]), [int(t) for t in token(iid, d[iid])]))
    history: dict[int, set] = {}
    for data in (train_data, valid_data):
        d = data.dataset.inter_feat
        for u, i in zip(d[uid].tolist(), d[iid].tolist()):
            history.setdefault(u, set()).add(i)
    for u, seq, n in zip(train_data.dataset.inter_feat[uid].tolist(),
                         train_data.dataset.inter_feat[dataset.item_id_list_field].tolist(),
                         train_data.dataset.inter_feat[dataset.item_list_length_field].tolist()):
        history.setdefault(u, set()).update(seq[:n])  # each user's first item is only ever an input
    model.eval()
    ranks = []
    with torch.no_grad():
        for batch in test_data:
            interaction = batch[0].to("cpu")
            scores = model.full_sort_predict(interaction).view(len(interaction), -1)
            scores[:, 0] = -float("inf")
            target = interaction[iid]
            for row, (u, t) in enumerate(zip(interaction[uid].tolist(), target.tolist())):
                seen = torch.tensor(sorted(history.get(u, set()) - {t}), dtype=torch.long)
                s = scores[row].clone()
                s[seen] = -float("inf")
                ranks.append(int((s > s[t]).sum()))
    r = np.asarray(ranks, dtype=np.float64)
    test = {}
    for k in KS:
        test[f"hr@{k}"] = float((r < k).mean())
        test[f"ndcg@{k}"] = float(np.where(r < k, 1.0 / np.log2(r + 2.0), 0.0).mean())
    impl = ("recbole-1.2.1" + ("" if blocks == "recbole" else "+paper-blocks")
            + ("" if table == "adam" else f"+rowwise-adagrad-table@{args.table_lr}"))
    print(json.dumps({"impl": impl, "test": test, "test_users": len(r),
                      "recbole_own_test": {k.lower(): float(v) for k, v in own.items()},
                      "best_valid_ndcg@10": float(best_valid), "epochs": len(epoch_s),
                      "best_epoch": int(np.argmax(valid_scores)) if valid_scores else -1,
                      "s_per_epoch": float(np.mean(epoch_s)), "num_items_ranked": dataset.item_num - 1,
                      "split": split}), flush=True)


def _paper_blocks(recbole_sasrec: type) -> type:
    """RecBole's SASRec with its encoder swapped for ours (``cliper_dist.seq.sasrec.SASRec``: the
    paper's pre-LayerNorm blocks and final LayerNorm, positions counted back from the most recent
    item); RecBole's item table, loss, optimizer, data, trainer and evaluation are unchanged. It
    tells the block equations' share of a gap from everything else's."""
    sys.path.insert(0, str(REPO))
    from cliper_dist.seq.sasrec import SASRec as Encoder

    class PaperBlocksSASRec(recbole_sasrec):
        def __init__(self, config, dataset):
            super().__init__(config, dataset)
            del self.trm_encoder, self.position_embedding, self.LayerNorm
            self.encoder = Encoder(self.hidden_size, self.max_seq_length, self.n_layers, self.n_heads,
                                   self.hidden_dropout_prob)

        def forward(self, item_seq, item_seq_len):
            left = right_to_left(item_seq, item_seq_len)
            return self.encoder(self.item_embedding(left), left > 0)[:, -1]

    return PaperBlocksSASRec


class _TableApart:
    """RecBole's optimizer with its item table trained as ours is (``--peer-table rowwise_adagrad``):
    fbgemm's exact row-wise Adagrad at ``table_lr`` on ``item_embedding`` (a row's state grows by the
    mean of its squared gradient; ``seq/reference.py`` writes the same), Adam at ``lr`` on the rest.
    RecBole's trainer calls ``zero_grad``, ``step`` and ``state_dict``."""

    def __init__(self, model, lr: float, table_lr: float, eps: float = 1e-8):
        import torch

        self.table = model.item_embedding.weight
        self.adam = torch.optim.Adam([p for p in model.parameters() if p is not self.table], lr=lr)
        self.state = torch.zeros(self.table.shape[0])
        self.table_lr, self.eps = table_lr, eps

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.adam.zero_grad(set_to_none)
        self.table.grad = None

    def step(self) -> None:
        import torch

        self.adam.step()
        with torch.no_grad():
            g = self.table.grad
            self.state += g.pow(2).mean(1)
            self.table -= self.table_lr * g / (self.state.sqrt() + self.eps)[:, None]

    def state_dict(self) -> dict:
        return {"adam": self.adam.state_dict(), "table_state": self.state}


def right_to_left(item_seq, lengths):
    """RecBole's right-padded (B, L) sequences, left-padded as ours: a row of n items moves right
    by L - n (its padding, 0, wraps round to the front)."""
    import torch

    n = item_seq.shape[1]
    return item_seq.gather(1, (torch.arange(n, device=item_seq.device) + lengths[:, None]) % n)


def run_peer(args, work: Path) -> dict:
    """RecBole's result; with ``--reuse-peer``, the one saved by an earlier run of the same flags and files."""
    encoder = (REPO / "cliper_dist/seq/sasrec.py").read_text() if args.peer_blocks == "paper" else ""
    table = args.peer_table == "rowwise_adagrad"  # only then does --table-lr reach RecBole
    flags = [f for f in common_flags(args) if table or not f.startswith("--table-lr=")]
    optimizer = inspect.getsource(_TableApart) if table else ""
    key = hashlib.sha256((" ".join(flags) + (work / NAME / f"{NAME}.inter").read_text() + encoder + optimizer)
                         .encode()).hexdigest()[:16]
    saved = work / f"peer_result_{args.peer_blocks}_{args.peer_table}.json"
    if args.reuse_peer and saved.exists() and json.loads(saved.read_text())["key"] == key:
        return json.loads(saved.read_text())["result"]
    python = ensure_peer_venv()
    env = {**os.environ, "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1", "OMP_NUM_THREADS": str(args.threads)}
    cmd = [str(python), str(Path(__file__).resolve()), "--_peer", "--workdir", str(work)] + common_flags(args)
    # cwd: RecBole writes its log/ and log_tensorboard/ folders there
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=work)
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    if out.returncode or not lines:
        raise SystemExit(f"RecBole failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    saved.write_text(json.dumps({"key": key, "result": json.loads(lines[-1])}))
    return json.loads(lines[-1])


def common_flags(args) -> list[str]:
    return [f"--{k.replace('_', '-')}={getattr(args, k)}"
            for k in ("epochs", "patience", "batch", "lr", "table_lr", "max_len", "dropout", "threads", "seed",
                      "peer_blocks", "peer_table")]


# ---------------------------------------------------------------- ours

def run_ours(args, data: Path, examples: str, norm: str) -> dict:
    """``launch/train.py`` with ``model.name=sasrec`` (configs/train/sasrec.yaml), a world of one,
    training on ``examples`` (``model.train_examples``) with ``norm`` blocks (``model.norm``)."""
    out = args.workdir / f"ours_{examples}_{norm}"
    batch = args.ours_batch if examples == "window" else args.batch
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, str(REPO / "launch" / "train.py"), "--config", str(REPO / "configs/train/sasrec.yaml"),
           "--data", str(data), "--out", str(out), f"epochs={args.epochs}", f"patience={args.patience}",
           f"batch_size={batch}", f"model.train_examples={examples}", f"model.norm={norm}", f"optim.lr={args.lr}",
           f"model.table_lr={args.table_lr}",
           f"model.max_len={args.max_len}", f"model.dropout={args.dropout}", f"threads={args.threads}",
           f"seed={args.seed}", "checkpoint_every=0", "save_best=false"]
    if out.exists():
        shutil.rmtree(out)
    result = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if result.returncode:
        raise SystemExit(f"ours failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    final = json.loads((out / "final.json").read_text())
    return {"impl": "cliper-dist", "examples": examples, "norm": norm, "test": final["test"],
            "best_valid_ndcg@10": final["valid"]["ndcg@10"], "batch": batch, "epochs": final["epochs"],
            "best_epoch": final["best_epoch"], "s_per_epoch": final["s_per_epoch"], "table_lr": args.table_lr,
            "peak_rss_mb": final["peak_rss_mb"]}


# ---------------------------------------------------------------- the comparison

def choices(*allowed: str):
    """An argparse type: a comma-separated list of some of ``allowed``."""
    def parse(text: str) -> list[str]:
        picked = text.split(",")
        if not set(picked) <= set(allowed):
            raise argparse.ArgumentTypeError(f"some of {', '.join(allowed)}, comma-separated; got {text!r}")
        return picked
    return parse


def peer_side(blocks: str, table: str) -> str:
    """The summary's name of a RecBole run (--peer-blocks x --peer-table)."""
    return "recbole" + ("" if blocks == "recbole" else "_paper_blocks") + ("" if table == "adam" else f"_{table}_table")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, help="a dataset converted with --split loo (default: synthetic)")
    p.add_argument("--users", type=int, default=2000, help="synthetic: the demo's users at this many (4x the demo)")
    p.add_argument("--items", type=int, default=1000, help="synthetic: catalog size")
    p.add_argument("--epochs", type=int, default=200)
    p.add_argument("--patience", type=int, default=10, help="epochs without a better valid NDCG@10")
    p.add_argument("--batch", type=int, default=256, help="RecBole's and ours with prefix examples: events per "
                   "batch")
    p.add_argument("--examples", default="window,prefix", type=choices("window", "prefix"), help="ours: the "
                   "forms of training example to run, comma-separated, each a run (model.train_examples)")
    p.add_argument("--norms", default="pre", type=choices("pre", "post"), help="ours: the blocks to run, "
                   "comma-separated, each a run per form of example (model.norm: pre, the paper's; post, RecBole's)")
    p.add_argument("--peer-blocks", default="recbole", type=choices("recbole", "paper"), help="RecBole runs "
                   "to make, comma-separated, each a run: recbole (its SASRec as shipped: post-LayerNorm blocks) "
                   "and/or paper (its SASRec with our encoder, the paper's pre-LayerNorm blocks, in it)")
    p.add_argument("--peer-table", default="adam", type=choices("adam", "rowwise_adagrad"), help="RecBole's "
                   "item table optimizer, comma-separated, each a run per --peer-blocks: adam (its own: Adam on "
                   "every parameter) and/or rowwise_adagrad (ours: fbgemm's row-wise Adagrad at --table-lr on the "
                   "table, Adam on the rest)")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam (RecBole: every parameter; ours: the dense part)")
    p.add_argument("--table-lr", type=float, default=0.01, help="the item table's row-wise Adagrad: ours "
                   "(configs/train/sasrec.yaml's), and RecBole's with --peer-table rowwise_adagrad")
    p.add_argument("--max-len", type=int, default=50)
    p.add_argument("--dropout", type=float, default=0.2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seeds", default=[0], type=lambda t: [int(x) for x in t.split(",")], help="comma-separated: "
                   "every side runs once per seed (the synthetic catalog is drawn with it too); the summary "
                   "compares the means")
    p.add_argument("--seed", type=int, help=argparse.SUPPRESS)  # the peer's, from --seeds
    p.add_argument("--workdir", type=Path, default=REPO / "runs" / "seq_recbole")
    p.add_argument("--ours-batch", type=int, help="ours, window examples: users per batch (default: --batch over "
                   "the mean number of training positions per user, so both sides train on about as many targets "
                   "per step)")
    p.add_argument("--reuse-peer", action="store_true", help="reuse RecBole's result of an earlier run of the "
                   "same flags and data in --workdir (to tune ours)")
    p.add_argument("--_peer", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args._peer:
        return peer_main(args)
    if args.seed is not None:
        p.error("--seed is the peer's own; pass --seeds")
    root, runs, identical = args.workdir.resolve(), {}, True
    for seed in args.seeds:
        identical &= run_seed(argparse.Namespace(**{**vars(args), "seed": seed, "workdir": root / f"seed{seed}"}),
                              runs)
    summary = {"summary": "seq_recbole", "split_identical": identical, "seeds": args.seeds, "threads": args.threads,
               "batch": args.batch, "lr": args.lr, "table_lr": args.table_lr}
    summary.update({f"ndcg@10_{side}": mean_std((r["test"]["ndcg@10"] for r in rs), 4) for side, rs in runs.items()})
    peers = itertools.product(args.peer_blocks, args.peer_table)
    for side, (blocks, table) in itertools.product([s for s in runs if s.startswith("ours")], peers):
        ours, peer = runs[side], runs[peer_side(blocks, table)]
        suffix = (side.removeprefix("ours_").removesuffix("_pre") + ("" if blocks == "recbole" else "_vs_paper_blocks")
                  + ("" if table == "adam" else f"_vs_{table}_table"))
        ndcg = [[r["test"]["ndcg@10"] for r in rs] for rs in (ours, peer)]
        summary[f"ndcg_ratio_{suffix}"] = round(statistics.mean(ndcg[0]) / statistics.mean(ndcg[1]), 3)
        summary[f"ndcg_ratio_{suffix}_per_seed"] = [round(o / p, 3) for o, p in zip(*ndcg)]
        summary[f"epoch_speedup_{suffix}"] = round(statistics.mean(r["s_per_epoch"] for r in peer)
                                                   / statistics.mean(r["s_per_epoch"] for r in ours), 2)
    print(json.dumps(summary), flush=True)


def run_seed(args, runs: dict[str, list[dict]]) -> bool:
    """Every side at ``args.seed`` (its catalog, split and runs in ``args.workdir``), each result
    printed and appended to ``runs[side]``; whether RecBole's split is ours."""
    data = args.data or synthetic_dataset(args.workdir / "data", args.users, args.items, args.seed)
    atomic = write_atomic(data, args.workdir / "recbole", args.max_len)
    if not args.ours_batch:
        args.ours_batch = max(1, round(args.batch / atomic["positions_per_user"]))
    identical = True
    for blocks, table in itertools.product(args.peer_blocks, args.peer_table):
        peer = run_peer(argparse.Namespace(**{**vars(args), "peer_blocks": blocks, "peer_table": table}),
                        args.workdir / "recbole")
        peer_split = peer.pop("split")
        identical &= all(peer_split[s] == atomic["split"][s] for s in ("valid", "test"))
        peer = {**peer, "seed": args.seed, "split_identical": identical, "events": atomic["events"],
                "users_left_out": atomic["users_left_out"]}
        print(json.dumps(peer), flush=True)
        runs.setdefault(peer_side(blocks, table), []).append(peer)
    for examples, norm in itertools.product(args.examples, args.norms):
        ours = {**run_ours(args, data, examples, norm), "seed": args.seed, "num_items_ranked": atomic["num_items"]}
        print(json.dumps(ours), flush=True)
        runs.setdefault(f"ours_{examples}_{norm}", []).append(ours)
    return identical


if __name__ == "__main__":
    main()
