"""The train job: a graph recommender on column-sharded state, full-ranking evaluation.

    torchrun --nproc_per_node 2 launch/train.py --config configs/train/lightgcn.yaml \\
        --data ../shared/data/amazon/baby --out runs/baby_lightgcn

The run loop: build the model and hand it to the engine (``engine.py``), resume from the run directory's last
checkpoint if there is one, then per epoch train, evaluate (``evaluate.py``), keep the
early-stopping state, write the metric line and checkpoints; at the end write final.json.
"""

from __future__ import annotations

import json
import resource
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from cliper_dist import checkpoint, dirs, dist, files
from cliper_dist import config as config_lib
from cliper_dist.data.item_features import Features, load_job_features
from cliper_dist.data.recdata import RecData, load_rec_data
from cliper_dist.errors import UserError
from cliper_dist.model.base import Recommender
from cliper_dist.model.registry import ModelSection, model_class, model_config
from cliper_dist.parallel.columns import ColumnSplit
from cliper_dist.parallel.optim import OptimConfig
from cliper_dist.sharding.tables import ITEM_TABLE, USER_TABLE, IdTables
from cliper_dist.train.engine import Engine
from cliper_dist.train.evaluate import evaluate, evaluated_users, sample_users
from cliper_dist.phases import Phases

log = dist.log
CONFIG_FILE, METRICS_FILE, FINAL_FILE = "config.yaml", "metrics.jsonl", "final.json"
# Keys a resumed run may change: the epoch budget, and how (not what) it computes and saves.
RESUMABLE_CHANGES = ("out", "epochs", "resume", "threads", "device", "eval_batch_users", "checkpoint_every")


@dataclass
class TrainConfig:
    data: str = ""  # dataset directory or MMRec folder
    features: str = ""  # freedom: encode output dir or MMRec folder with image_feat/text_feat.npy ("" = data)
    out: str = ""  # run directory
    seed: int = 999  # initial values, batches, negatives and pruning derive from (seed, epoch)
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto: cuda (nccl) where visible, else cpu (gloo)
    threads: int = 0  # torch intra-op threads per rank (0: leave torch's default)
    epochs: int = 1000  # epoch budget (early stopping usually ends the run first)
    batch_size: int = 2048  # global: every rank steps on the whole batch, its own columns
    patience: int = 20  # evaluations without a better valid Recall@20 before stopping
    eval_every: int = 1  # epochs between evaluations (valid and test, full ranking)
    eval_batch_users: int = 256  # users scored at once against all items (memory: this x items floats)
    eval_users: int = 0  # 0: full ranking of every user with held-out items; N: a seeded sample of N (an estimate)
    checkpoint_every: int = 1  # evaluations between resume checkpoints (0: none)
    save_best: bool = True  # keep the tables of the best valid epoch (tools/recommend.py)
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


def build_engine(cfg: TrainConfig, info: dist.DistInfo) -> Engine:
    data, features = load_model_inputs(cfg)
    if features is not None and info.is_main:
        log.info("features: %s", features.describe())
    model, tables = build_model(cfg, data, features, info)
    return Engine(model, tables, cfg.optim, data, info, cfg.seed, cfg.batch_size)


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
    model_class(cfg.model.name)
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
    engine = build_engine(cfg, info)
    dist.keep_freed_memory()  # after the build: loading's transient arrays go back to the OS
    build = {"load": time.perf_counter() - started - sum(engine.model.build_seconds.values()),
             **engine.model.build_seconds}
    d = engine.data
    log.info("train: %s, %d users, %d items, %d train interactions, model %s, %d rank(s), Adam rows=%s",
             d.source, d.num_users, d.num_items, len(d.train_user), cfg.model.name, info.world_size, cfg.optim.rows)
    log.info("%s", engine.describe())

    state = RunState()
    if last is not None:
        meta = checkpoint.load(last, engine.state_dict(with_optimizer=True))
        state = RunState(**meta["run"])
        log.info("resumed from %s (epoch %d done, best valid R@20 %.4f at epoch %d)", last, state.epoch,
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

    sampled = sample_users(d, cfg.eval_users, cfg.seed)
    estimate = None if sampled is None else {"sampled_users": len(sampled),
                                             "of_users": len(evaluated_users(d)), "seed": cfg.seed}
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
        loss = engine.train_epoch(epoch, phases)
        state.train_seconds += time.perf_counter() - t0
        state.epoch = epoch
        if (epoch + 1) % cfg.eval_every and epoch + 1 != cfg.epochs:
            continue
        t1 = time.perf_counter()
        with phases("eval"):
            metrics = evaluate(engine.model, d, engine.split, cfg.eval_batch_users, sampled)
        record = {"epoch": epoch, "loss": round(loss, 6), "epoch_s": round(t1 - t0, 3),
                  "eval_s": round(time.perf_counter() - t1, 3), **metrics}
        if estimate:
            record["estimate"] = estimate
        state.history.append(record)
        if info.is_main:
            with metrics_path.open("a") as f:
                f.write(json.dumps(record) + "\n")
            log.info("epoch %d loss %.4f valid R@20 %.4f N@20 %.4f test R@20 %.4f (train %.1fs, eval %.1fs)",
                     epoch, loss, metrics["valid"]["recall@20"], metrics["valid"]["ndcg@20"],
                     metrics["test"]["recall@20"], t1 - t0, record["eval_s"])
        improved = metrics["valid"]["recall@20"] > state.best
        if improved:
            state.best, state.best_epoch, state.waited = metrics["valid"]["recall@20"], epoch, 0
        else:
            state.waited += 1
        stopped = state.waited >= cfg.patience
        state.wall_seconds = time.perf_counter() - start
        if improved and cfg.save_best:
            with phases("checkpoint"):
                checkpoint.save(out, checkpoint.BEST, epoch, engine.state_dict(with_optimizer=False),
                                {"run": vars(state), "kind": "best", "config": config_lib.to_dict(cfg)}, info.rank)
        evals_since_ckpt += 1
        if cfg.checkpoint_every and (evals_since_ckpt >= cfg.checkpoint_every or stopped or epoch + 1 == cfg.epochs):
            with phases("checkpoint"):
                checkpoint.save(out, checkpoint.LAST, epoch, engine.state_dict(with_optimizer=True),
                                {"run": vars(state), "kind": "last", "config": config_lib.to_dict(cfg)}, info.rank)
            evals_since_ckpt = 0
        if stopped:
            log.info("early stop: no better valid Recall@20 in %d evaluations", state.waited)

    if not state.history:
        raise UserError(f"no evaluation ran (epochs={cfg.epochs}, eval_every={cfg.eval_every})")
    best_record = next(r for r in state.history if r["epoch"] == state.best_epoch)
    epochs_run = state.epoch + 1
    final = {"model": cfg.model.name, "best_epoch": state.best_epoch, "valid": best_record["valid"],
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
