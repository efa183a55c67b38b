"""The train job: sharded ID tables + CLIPER features under LightGCN/FREEDOM, full-ranking eval.

Each step every rank looks up both tables whole through the sharded EmbeddingCollection,
propagates over the (pruned) graph, and takes the BPR loss of its slice of the global
batch. Table gradients are summed by torchrec's backward and applied by the fused
optimizer on the owning rank; dense parameters (feature tables, projections) are
all-reduced explicitly and stepped by Adam. Evaluation splits users across ranks.

    torchrun --nproc_per_node 2 launch/train.py --config configs/train/baby_lightgcn.yaml \\
        --data ../shared/data/amazon/baby --out runs/baby_lightgcn
"""

from __future__ import annotations

import json
import resource
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.distributed as torch_dist

from cliper_dist import config as config_lib
from cliper_dist import dist
from cliper_dist.errors import UserError
from cliper_dist.model.graph import SparseGraph, degree_sensitive_prune, knn_item_graph, user_item_adjacency
from cliper_dist.model.recommender import GraphRecommender, ModelConfig, fixed_text_fusion
from cliper_dist.sharding.tables import ITEM_FEATURE, USER_FEATURE, ShardingConfig, full_lookup_kjt, shard_id_tables
from cliper_dist.train import checkpoint
from cliper_dist.train.data import RecData, epoch_batches, load_rec_data
from cliper_dist.train.features import Features, has_mmrec_features, load_features
from cliper_dist.train.metrics import evaluate_users

log = dist.log
CONFIG_FILE, METRICS_FILE, FINAL_FILE = "config.yaml", "metrics.jsonl", "final.json"


@dataclass
class TrainConfig:
    data: str = ""  # dataset directory or MMRec folder
    features: str = ""  # freedom: encode output dir or MMRec folder with image_feat/text_feat.npy ("" = data)
    out: str = ""  # run directory
    seed: int = 999
    device: str = "auto"
    threads: int = 0  # torch intra-op threads per rank (0: leave torch's default)
    epochs: int = 1000
    batch_size: int = 2048  # global: split across ranks
    lr: float = 1e-3  # Adam, dense parameters (feature tables, projections, MLP fusion)
    patience: int = 20  # evaluations without a better valid Recall@20 before stopping
    eval_every: int = 1
    eval_batch_users: int = 4096
    checkpoint_every: int = 1  # evaluations between resume checkpoints (0: none)
    save_best: bool = True  # keep the tables of the best valid epoch (tools/recommend.py)
    resume: Literal["auto", "never"] = "auto"  # auto: continue from RUN_DIR's last checkpoint if any
    stop_after_epoch: int = -1  # stop once this epoch is checkpointed, as if preempted (tests; -1: off)
    model: ModelConfig = field(default_factory=ModelConfig)
    sharding: ShardingConfig = field(default_factory=ShardingConfig)


def build_item_graph(cfg: ModelConfig, feats: Features) -> SparseGraph:
    """mm_adj = w * kNN(image) + (1 - w) * kNN(text), frozen for the whole run (FREEDOM).

    The text kNN graph uses the fused text feature; with MLP fusion (trained, so not known
    up front) it uses the SUM fusion of the raw views. With one modality, mm_adj is its graph.
    """
    if feats.text_views is not None:
        kind = "sum" if cfg.fusion == "mlp" else cfg.fusion
        text = fixed_text_fusion(kind, feats.text_views, feats.image, cfg.tau)
    else:
        text = feats.text
    adjs = []
    if feats.image is not None:
        adjs.append((cfg.mm_image_weight if text is not None else 1.0, knn_item_graph(feats.image, cfg.knn_k)))
    if text is not None:
        adjs.append((1.0 - cfg.mm_image_weight if feats.image is not None else 1.0, knn_item_graph(text, cfg.knn_k)))
    mixed = adjs[0][0] * adjs[0][1].to_sparse_coo()
    for w, a in adjs[1:]:
        mixed = mixed + w * a.to_sparse_coo()
    return SparseGraph.general(mixed.coalesce().to_sparse_csr())


class Trainer:
    def __init__(self, cfg: TrainConfig, info: dist.DistInfo):
        self.cfg, self.info = cfg, info
        self.data: RecData = load_rec_data(cfg.data)
        self.features: Features | None = None
        if cfg.model.name == "freedom":
            feat_dir = cfg.features or (cfg.data if has_mmrec_features(cfg.data) else "")
            if not feat_dir:
                raise UserError("model freedom needs features=FEATURES_DIR (the encode job's output, or an MMRec "
                                "folder with image_feat.npy/text_feat.npy)")
            self.features = load_features(feat_dir, self.data.num_items)
            if info.is_main:
                log.info("features: %s", self.features.describe())
                if self.features.text is not None:
                    log.info("one ready text feature: CLIPER fusion (%s) bypassed", cfg.model.fusion)
        dist.seed_everything(cfg.seed)
        device = info.device
        self.tables, plan = shard_id_tables(self.data.num_users, self.data.num_items, cfg.model.embedding_dim,
                                            cfg.sharding, info.world_size, device)
        self.plan = plan
        if info.is_main:
            log.info("sharding plan:\n%s", plan)
        f = self.features
        self.model = GraphRecommender(cfg.model, self.data.num_users, self.data.num_items,
                                      image=f.image if f else None, text_views=f.text_views if f else None,
                                      text=f.text if f else None).to(device)
        if f is not None:
            self.model.set_item_graph(build_item_graph(cfg.model, f).to(device))
        self.dense_params = [p for p in self.model.parameters() if p.requires_grad]
        # fused Adam: one kernel over each tensor (FREEDOM fine-tunes I x 4096 feature tables,
        # where the per-op implementation costs ~8x more per step on CPU); same update rule
        self.optimizer = (torch.optim.Adam(self.dense_params, lr=cfg.lr, fused=True)
                          if self.dense_params else None)
        self._sync_dense_params()
        self.kjt = full_lookup_kjt(self.data.num_users, self.data.num_items, device)
        self.full_adj = user_item_adjacency(self.data.train_user, self.data.train_item,
                                            self.data.num_users, self.data.num_items).to(device)
        self.train_keys = self.data.train_keys()

    def _sync_dense_params(self) -> None:
        """Every rank starts from rank 0's dense parameters."""
        if torch_dist.is_initialized() and self.info.world_size > 1:
            for p in self.dense_params:
                torch_dist.broadcast(p.data, src=0)

    def tables_whole(self) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.tables(self.kjt)
        return out[USER_FEATURE].values(), out[ITEM_FEATURE].values()

    def epoch_graph(self, epoch: int) -> SparseGraph:
        """The user-item graph of this epoch: FREEDOM's degree-sensitive pruning, resampled
        from (seed, epoch) so every rank (and a resumed run) draws the same graph."""
        m = self.cfg.model
        if m.name != "freedom" or m.edge_dropout <= 0:
            return self.full_adj
        rng = np.random.default_rng([self.cfg.seed, epoch, 7])
        u, i = degree_sensitive_prune(self.data.train_user, self.data.train_item, self.data.num_users,
                                      self.data.num_items, 1.0 - m.edge_dropout, rng)
        return user_item_adjacency(u, i, self.data.num_users, self.data.num_items).to(self.info.device)

    def step(self, adj: SparseGraph, users: np.ndarray, pos: np.ndarray, neg: np.ndarray,
             global_batch: int) -> torch.Tensor:
        """One optimisation step on this rank's slice of a global batch; returns its loss share."""
        device = self.info.device
        user_table, item_table = self.tables_whole()
        loss = self.model.loss(user_table, item_table, adj, torch.from_numpy(users).to(device),
                               torch.from_numpy(pos).to(device), torch.from_numpy(neg).to(device),
                               global_batch=global_batch)
        loss.backward()  # the fused optimizer updates the table shards here
        if self.optimizer is not None:
            self._all_reduce_dense_grads()
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    def train_epoch(self, epoch: int) -> float:
        self.model.train()
        adj = self.epoch_graph(epoch)
        total = torch.zeros((), dtype=torch.float64)
        steps = 0
        for users, pos, neg, n in epoch_batches(self.data, self.train_keys, epoch, self.cfg.seed,
                                                self.cfg.batch_size, self.info.rank, self.info.world_size):
            total += self.step(adj, users, pos, neg, n).double().cpu()
            steps += 1
        # Each rank's loss is its share of the global-batch mean: the sum is the global mean.
        total_t = total.reshape(1)
        if self.info.world_size > 1:
            torch_dist.all_reduce(total_t)
        return total_t.item() / max(steps, 1)

    def _all_reduce_dense_grads(self) -> None:
        if self.info.world_size == 1:
            return
        grads = [p.grad for p in self.dense_params if p.grad is not None]
        flat = torch.cat([g.reshape(-1) for g in grads])
        torch_dist.all_reduce(flat)  # each rank's loss is already divided by the global batch
        offset = 0
        for g in grads:
            g.copy_(flat[offset:offset + g.numel()].view_as(g))
            offset += g.numel()

    @torch.no_grad()
    def final_embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(users, items) propagated over the full training graph, as evaluation scores them."""
        self.model.eval()
        user_table, item_table = self.tables_whole()
        return self.model.split(self.model.propagate(user_table, item_table, self.full_adj))

    @torch.no_grad()
    def evaluate(self) -> dict[str, dict[str, float]]:
        """Valid and test metrics; users are split across ranks and the sums all-reduced."""
        users_emb, items_emb = self.final_embeddings()
        results = {}
        for split_name, truth in (("valid", self.data.valid), ("test", self.data.test)):
            has_truth = np.flatnonzero(truth.lengths() > 0)
            mine = has_truth[self.info.rank::self.info.world_size]
            sums = evaluate_users(users_emb, items_emb, mine, self.data.train, truth, self.cfg.eval_batch_users)
            vec = torch.tensor(list(sums.values()) + [len(mine)], dtype=torch.float64)
            if self.info.world_size > 1:
                torch_dist.all_reduce(vec)
            count = max(vec[-1].item(), 1.0)
            results[split_name] = {k: round(v / count, 6) for k, v in zip(sums, vec[:-1].tolist())}
        return results

    # -- checkpoint state ------------------------------------------------------------------
    def state_dict(self, with_optimizer: bool) -> dict[str, Any]:
        """The DCP state: sharded tables (+ fused optimizer state), dense params (+ Adam)."""
        state: dict[str, Any] = {"tables": self.tables.state_dict(), "model": self.model.state_dict()}
        if with_optimizer:
            state["tables_optim"] = self.tables.fused_optimizer.state_dict()
            if self.optimizer is not None:
                state["dense_optim"] = self._adam_state()
        return state

    def _adam_state(self) -> dict[str, Any]:
        """Adam's state keyed by parameter position (zeros before the first step, so a fresh
        trainer offers load templates of the right shapes)."""
        out = {}
        for i, p in enumerate(self.dense_params):
            st = self.optimizer.state.get(p) or {"step": torch.zeros(()), "exp_avg": torch.zeros_like(p),
                                                 "exp_avg_sq": torch.zeros_like(p)}
            out[str(i)] = {k: st[k] for k in ("step", "exp_avg", "exp_avg_sq")}
        return out

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.tables.load_state_dict(state["tables"])
        self.model.load_state_dict(state["model"])
        if "tables_optim" in state:
            self.tables.fused_optimizer.load_state_dict(state["tables_optim"])
        if "dense_optim" in state and self.optimizer is not None:
            for i, p in enumerate(self.dense_params):
                self.optimizer.state[p] = {k: v.clone() for k, v in state["dense_optim"][str(i)].items()}


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


def peak_rss_mb() -> float:
    """This process's peak resident memory (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _validate(cfg: TrainConfig, info: dist.DistInfo) -> None:
    for key in ("data", "out"):
        if not getattr(cfg, key):
            raise UserError(f"train: '{key}' is required (--{key} or {key}=...)")
    if cfg.batch_size < info.world_size:
        raise UserError(f"batch_size {cfg.batch_size} is smaller than the world size {info.world_size}")
    for key in ("epochs", "eval_every", "patience", "eval_batch_users"):
        if getattr(cfg, key) < 1:
            raise UserError(f"train: '{key}' must be >= 1; got {getattr(cfg, key)}")


def run(cfg: TrainConfig, info: dist.DistInfo) -> dict | None:
    _validate(cfg, info)
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    trainer = Trainer(cfg, info)
    d = trainer.data
    log.info("train: %s, %d users, %d items, %d train interactions, model %s, world size %d",
             d.source, d.num_users, d.num_items, len(d.train_user), cfg.model.name, info.world_size)
    state = RunState()
    last = checkpoint.resolve(out, checkpoint.LAST) if cfg.resume == "auto" else None
    if last is not None:
        tensors = trainer.state_dict(with_optimizer=True)
        meta = checkpoint.load(last, tensors, info.rank)
        trainer.load_state_dict(tensors)
        state = RunState(**meta["run"])
        log.info("resumed from %s (epoch %d done, best valid R@20 %.4f at epoch %d)", last, state.epoch,
                 state.best, state.best_epoch)
    metrics_path = out / METRICS_FILE
    if info.is_main:
        out.mkdir(parents=True, exist_ok=True)
        config_lib.save(cfg, out / CONFIG_FILE)
        # the metric lines of the epochs the checkpoint covers (a crash may have left more)
        metrics_path.write_text("".join(json.dumps(r) + "\n" for r in state.history))
    start = time.perf_counter() - state.wall_seconds
    evals_since_ckpt = 0
    stopped = state.waited >= cfg.patience  # a finished run that is resumed does nothing
    epoch = state.epoch
    while not stopped and epoch + 1 < cfg.epochs:
        epoch += 1
        t0 = time.perf_counter()
        loss = trainer.train_epoch(epoch)
        state.train_seconds += time.perf_counter() - t0
        state.epoch = epoch
        if (epoch + 1) % cfg.eval_every and epoch + 1 != cfg.epochs:
            continue
        t1 = time.perf_counter()
        metrics = trainer.evaluate()
        record = {"epoch": epoch, "loss": round(loss, 6), "epoch_s": round(t1 - t0, 3),
                  "eval_s": round(time.perf_counter() - t1, 3), **metrics}
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
            checkpoint.save(out, checkpoint.BEST, epoch, trainer.state_dict(with_optimizer=False),
                            {"run": vars(state), "kind": "best"}, info.rank)
        evals_since_ckpt += 1
        preempt = epoch == cfg.stop_after_epoch
        done = stopped or epoch + 1 == cfg.epochs
        if cfg.checkpoint_every and (evals_since_ckpt >= cfg.checkpoint_every or preempt or done):
            checkpoint.save(out, checkpoint.LAST, epoch, trainer.state_dict(with_optimizer=True),
                            {"run": vars(state), "kind": "last"}, info.rank)
            evals_since_ckpt = 0
        if stopped:
            log.info("early stop: no better valid Recall@20 in %d evaluations", state.waited)
        elif preempt:
            log.info("stop_after_epoch=%d: stopping after the checkpoint (resume=auto continues)", epoch)
            return None
    if not state.history:
        raise UserError(f"no evaluation ran (epochs={cfg.epochs}, eval_every={cfg.eval_every})")
    best_record = next(r for r in state.history if r["epoch"] == state.best_epoch)
    epochs_run = state.epoch + 1
    final = {"model": cfg.model.name, "best_epoch": state.best_epoch, "valid": best_record["valid"],
             "test": best_record["test"], "epochs": epochs_run, "world_size": info.world_size,
             "early_stopped": stopped, "wall_s": round(time.perf_counter() - start, 3),
             "s_per_epoch": round(state.train_seconds / epochs_run, 4),
             "eval_s_mean": round(float(np.mean([r["eval_s"] for r in state.history])), 4),
             "peak_rss_mb": [round(x, 1) for x in dist.all_gather_object(peak_rss_mb())]}
    if info.is_main:
        (out / FINAL_FILE).write_text(json.dumps(final, indent=2) + "\n")
    return final
