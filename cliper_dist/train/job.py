"""The train job: one run loop for every task, full-ranking evaluation.

    torchrun --nproc_per_node 2 launch/train.py --config configs/train/lightgcn.yaml \\
        --data ../shared/data/amazon/baby --out runs/baby_lightgcn

The model's task (``model/registry.py``) picks the trainer the loop drives: "cf", a graph
recommender on column-sharded state (``engine.py``, evaluated by ``evaluate.py``); "seq",
SASRec on a torchrec row-sharded item table (``seq/trainer.py``). The run loop: build the
trainer, resume from the run directory's last checkpoint if there is one, then per epoch train,
evaluate, keep the early-stopping state on the trainer's primary valid metric, write the metric
line and checkpoints; at the end write final.json.
"""

from __future__ import annotations

import json
import resource
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Protocol

import numpy as np
import torch

from cliper_dist import checkpoint, dirs, dist, files
from cliper_dist import config as config_lib
from cliper_dist.ctr.inputs import load_ctr_data
from cliper_dist.ctr.trainer import CtrTrainer
from cliper_dist.data.item_features import Features, load_job_features
from cliper_dist.data.recdata import RecData, load_rec_data
from cliper_dist.errors import UserError
from cliper_dist.model.base import Recommender
from cliper_dist.model.registry import ModelSection, model_class, model_config
from cliper_dist.parallel.columns import ColumnSplit
from cliper_dist.parallel.optim import OptimConfig
from cliper_dist.phases import Phases
from cliper_dist.seq import trainer as seq_trainer
from cliper_dist.seq.data import load_sequences
from cliper_dist.seq.model import feature_matrix
from cliper_dist.sharding.tables import ITEM_TABLE, USER_TABLE, IdTables
from cliper_dist.train.engine import Engine
from cliper_dist.train.evaluate import evaluated_users, sample_users

log = dist.log
CONFIG_FILE, METRICS_FILE, FINAL_FILE = "config.yaml", "metrics.jsonl", "final.json"
# Keys a resumed run may change: the epoch budget, and how (not what) it computes and saves.
RESUMABLE_CHANGES = ("out", "epochs", "resume", "threads", "device", "eval_batch_users", "checkpoint_every")


@dataclass
class TrainConfig:
    data: str = ""  # dataset directory or MMRec folder (sasrec: converted with split=loo, with timestamps)
    features: str = ""  # models that read features: encode output dir, adapt output or MMRec folder ("" = data)
    out: str = ""  # run directory
    seed: int = 999  # initial values, batches, negatives and pruning derive from (seed, epoch)
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto: cuda (nccl) where visible, else cpu (gloo)
    threads: int = 0  # torch intra-op threads per rank (0: leave torch's default)
    epochs: int = 1000  # epoch budget (early stopping usually ends the run first)
    batch_size: int = 2048  # global (cf: interactions, every rank on its own columns; seq: examples, dealt out)
    patience: int = 20  # evaluations without a better primary valid metric before stopping (cf: R@20, seq: N@10)
    eval_every: int = 1  # epochs between evaluations (valid and test, full ranking)
    eval_batch_users: int = 256  # users scored at once against all items (memory: this x items floats)
    eval_users: int = 0  # 0: full ranking of every user with held-out items; N: a seeded sample of N (an estimate)
    checkpoint_every: int = 1  # evaluations between resume checkpoints (0: none)
    save_best: bool = True  # keep the model of the best valid epoch (tools/recommend.py)
    resume: Literal["auto", "never"] = "auto"  # auto: continue from RUN_DIR's last checkpoint if any
    model: ModelSection = field(default_factory=model_config)  # the recommender (model/registry.py); its keys follow, by model
    optim: OptimConfig = field(default_factory=OptimConfig)


def load_model_inputs(cfg: TrainConfig) -> tuple[RecData, Features | None]:
    """The interactions, and the item features when the model uses them."""
    data = load_rec_data(cfg.data)
    if not model_class(cfg.model.name).uses_features:
        return data, None
    return data, load_job_features(cfg.data, cfg.features, data.num_items, f"model {cfg.model.name}")


def build_model(cfg: TrainConfig, data: RecData, features: Features | None,
                info: dist.DistInfo) -> tuple[Recommender, IdTables]:
    """The configured model on this rank's columns, and the torchrec ID tables it trains."""
    split = ColumnSplit(info.rank, info.world_size)
    tables = IdTables({USER_TABLE: data.num_users, ITEM_TABLE: data.num_items}, cfg.model.embedding_dim, split,
                      cfg.seed, info.device)
    return model_class(cfg.model.name)(cfg.model, data, tables, split, cfg.seed, features), tables


def eval_sample(users: np.ndarray, cfg: TrainConfig) -> tuple[np.ndarray | None, dict | None]:
    """The users evaluation ranks (None: all of ``users``), and the estimate's label when sampled."""
    sampled = sample_users(users, cfg.eval_users, cfg.seed)
    if sampled is None:
        return None, None
    return sampled, {"sampled_users": len(sampled), "of_users": len(users), "seed": cfg.seed}


def build_engine(cfg: TrainConfig, info: dist.DistInfo) -> Engine:
    """The "cf" trainer: a graph recommender on column-sharded state."""
    data, features = load_model_inputs(cfg)
    if features is not None and info.is_main:
        log.info("features: %s", features.describe())
    model, tables = build_model(cfg, data, features, info)
    users, estimate = eval_sample(evaluated_users(data), cfg)
    return Engine(model, tables, cfg.optim, data, info, cfg.seed, cfg.batch_size, cfg.eval_batch_users, users,
                  estimate)


def build_seq_trainer(cfg: TrainConfig, info: dist.DistInfo) -> seq_trainer.SeqTrainer:
    """The "seq" trainer: SASRec over a torchrec row-sharded item table."""
    seqs = load_sequences(cfg.data)
    features = None
    if cfg.model.uses_features:
        found = load_job_features(cfg.data, cfg.features, seqs.num_items, f"model.item_input={cfg.model.item_input}")
        features = feature_matrix(found, cfg.model.fusion, cfg.model.tau)
        if info.is_main:
            log.info("features: %s", found.describe())
    elif cfg.features:
        log.warning("--features is not read: model.item_input=id (features or id+features read them)")
    users, estimate = eval_sample(seq_trainer.evaluated_users(seqs), cfg)
    return seq_trainer.SeqTrainer(cfg.model, cfg.optim, seqs, features, info, cfg.seed, cfg.batch_size,
                                  cfg.eval_batch_users, users, estimate)


def build_ctr_trainer(cfg: TrainConfig, info: dist.DistInfo) -> CtrTrainer:
    """The "ctr" trainer: DLRM / DCN on a planner-sharded torchrec EmbeddingBagCollection."""
    data = load_ctr_data(cfg.data, cfg.features, cfg.model, cfg.seed)
    if info.is_main:
        log.info("ctr data: %s, %d users, %d items, %s labels, %s", data.source, data.num_users, data.num_items,
                 data.labels.kind, {s: len(p) for s, p in data.positives.items()})
    return CtrTrainer(data, cfg.model, cfg.optim, cfg.batch_size, cfg.seed, info)


class Trainer(Protocol):
    """What the run loop drives: ``train/engine.py`` (cf), ``seq/trainer.py`` (seq), ``ctr/trainer.py`` (ctr)."""

    primary: str  # the valid metric early stopping maximises
    shown: tuple[str, ...]  # the metrics of the epoch's log line
    build_seconds: dict[str, float]  # the long parts of the build (FREEDOM: "knn"), for the phase times
    estimate: dict | None  # the label of metrics over a sample of users (eval_users), or None

    def describe(self) -> str: ...
    def train_epoch(self, epoch: int, phases: Phases) -> float: ...
    def evaluate(self) -> dict[str, dict[str, float]]: ...
    def state_dict(self, with_optimizer: bool) -> dict[str, Any]: ...


BUILDERS: dict[str, Callable[[TrainConfig, dist.DistInfo], Trainer]] = {"cf": build_engine, "seq": build_seq_trainer,
                                                                        "ctr": build_ctr_trainer}


@dataclass
class RunState:
    """Early-stopping bookkeeping; saved in every checkpoint's meta.json."""

    epoch: int = -1  # last finished epoch
    best: float = -1.0
    best_epoch: int = -1
    waited: int = 0
    history: list = field(default_factory=list)
    train_seconds: float = 0.0
    wall_seconds: float = 0.0
    phase_seconds: dict = field(default_factory=dict)  # Phases: load, knn, graph, steps, eval, checkpoint


def peak_rss_mb() -> float:
    """This process's peak resident memory (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _validate(cfg: TrainConfig) -> None:
    for key in ("data", "out"):
        if not getattr(cfg, key):
            raise UserError(f"train: '{key}' is required (--{key} or {key}=...)")
    for key in ("epochs", "eval_every", "patience", "eval_batch_users", "batch_size"):
        if getattr(cfg, key) < 1:
            raise UserError(f"train: '{key}' must be >= 1; got {getattr(cfg, key)}")
    if model_class(cfg.model.name).task == "seq":
        cfg.model.check()
        if cfg.optim.rows != "all":
            raise UserError("optim.rows applies to the graph models' Adam; sasrec's item table steps the rows a "
                            "batch reaches, with model.table_optimizer")
    if model_class(cfg.model.name).task == "ctr":
        cfg.model.check()
        if cfg.optim.rows != "all" or cfg.optim.lr_decay != 1.0:
            raise UserError("optim.rows and optim.lr_decay apply to the graph models' Adam; the CTR models' tables "
                            "step with model.table_optimizer, their dense layers with plain Adam")
    dirs.check_output(cfg.out, dirs.RUN, {"--data": cfg.data, "--features": cfg.features})


def run(cfg: TrainConfig, info: dist.DistInfo) -> dict:
    _validate(cfg)
    dist.check_shared_dir(cfg.out)
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    last = checkpoint.resolve(out, checkpoint.LAST) if cfg.resume == "auto" else None
    if last is not None:
        config_lib.refuse_changed(cfg, checkpoint.read_meta(last), RESUMABLE_CHANGES, "a run")
    started = time.perf_counter()
    trainer = BUILDERS[model_class(cfg.model.name).task](cfg, info)
    dist.keep_freed_memory()  # after the build: loading's transient arrays go back to the OS
    build = {"load": time.perf_counter() - started - sum(trainer.build_seconds.values()), **trainer.build_seconds}
    log.info("%s", trainer.describe())
    primary = trainer.primary

    state = RunState()
    if last is not None:
        meta = checkpoint.load(last, trainer.state_dict(with_optimizer=True))
        state = RunState(**meta["run"])
        log.info("resumed from %s (epoch %d done, best valid %s %.4f at epoch %d)", last, state.epoch, primary,
                 state.best, state.best_epoch)
    phases = Phases(state.phase_seconds)
    state.phase_seconds = phases.seconds  # saved with the run state in every checkpoint
    for name, seconds in build.items():
        phases.add(name, seconds)
    metrics_path = out / METRICS_FILE
    if info.is_main:
        out.mkdir(parents=True, exist_ok=True)
        config_lib.save(cfg, out / CONFIG_FILE)
        # the metric lines of the epochs the checkpoint covers (a crash may have left more)
        files.write_jsonl(metrics_path, state.history)

    estimate = trainer.estimate
    if estimate:
        log.info("evaluation: an estimate over %d of %d users (eval_users, seed %d)", estimate["sampled_users"],
                 estimate["of_users"], cfg.seed)
    start = time.perf_counter() - state.wall_seconds
    evals_since_ckpt = 0
    stopped = state.waited >= cfg.patience  # a finished run that is resumed does nothing
    epoch = state.epoch
    while not stopped and epoch + 1 < cfg.epochs:
        epoch += 1
        t0 = time.perf_counter()
        loss = trainer.train_epoch(epoch, phases)
        state.train_seconds += time.perf_counter() - t0
        state.epoch = epoch
        if (epoch + 1) % cfg.eval_every and epoch + 1 != cfg.epochs:
            continue
        t1 = time.perf_counter()
        with phases("eval"):
            metrics = trainer.evaluate()
        record = {"epoch": epoch, "loss": round(loss, 6), "epoch_s": round(t1 - t0, 3),
                  "eval_s": round(time.perf_counter() - t1, 3), **metrics}
        if estimate:
            record["estimate"] = estimate
        state.history.append(record)
        if info.is_main:
            with metrics_path.open("a") as f:
                f.write(json.dumps(record) + "\n")
            shown = " ".join(f"{split} {k} {metrics[split][k]:.4f}" for split in ("valid", "test")
                             for k in trainer.shown)
            log.info("epoch %d loss %.4f %s (train %.1fs, eval %.1fs)", epoch, loss, shown, t1 - t0, record["eval_s"])
        improved = metrics["valid"][primary] > state.best
        if improved:
            state.best, state.best_epoch, state.waited = metrics["valid"][primary], epoch, 0
        else:
            state.waited += 1
        stopped = state.waited >= cfg.patience
        state.wall_seconds = time.perf_counter() - start
        if improved and cfg.save_best:
            with phases("checkpoint"):
                checkpoint.save(out, checkpoint.BEST, epoch, trainer.state_dict(with_optimizer=False),
                                {"run": vars(state), "kind": "best", "config": config_lib.to_dict(cfg)}, info.rank)
        evals_since_ckpt += 1
        if cfg.checkpoint_every and (evals_since_ckpt >= cfg.checkpoint_every or stopped or epoch + 1 == cfg.epochs):
            with phases("checkpoint"):
                checkpoint.save(out, checkpoint.LAST, epoch, trainer.state_dict(with_optimizer=True),
                                {"run": vars(state), "kind": "last", "config": config_lib.to_dict(cfg)}, info.rank)
            evals_since_ckpt = 0
        if stopped:
            log.info("early stop: no better valid %s in %d evaluations", primary, state.waited)

    if not state.history:
        raise UserError(f"no evaluation ran (epochs={cfg.epochs}, eval_every={cfg.eval_every})")
    best_record = next(r for r in state.history if r["epoch"] == state.best_epoch)
    epochs_run = state.epoch + 1
    final = {"model": cfg.model.name, "task": model_class(cfg.model.name).task, "primary": primary,
             "best_epoch": state.best_epoch, "valid": best_record["valid"],
             "test": best_record["test"], "epochs": epochs_run, "world_size": info.world_size,
             "early_stopped": stopped, "wall_s": round(time.perf_counter() - start, 3),
             "s_per_epoch": round(state.train_seconds / epochs_run, 4),
             "eval_s_mean": round(float(np.mean([r["eval_s"] for r in state.history])), 4),
             "phase_s": phases.rounded(), **({"estimate": estimate} if estimate else {}),
             "peak_rss_mb": [round(x, 1) for x in dist.all_gather_object(peak_rss_mb())]}
    if info.is_main:
        log.info("phases: %s", phases.describe())
        files.write_json(out / FINAL_FILE, final)
    return final
