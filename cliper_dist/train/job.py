"""The train job: sharded ID tables + CLIPER features under LightGCN/FREEDOM, full-ranking eval.

Each step every rank looks up both tables whole through the sharded EmbeddingCollection,
propagates over the (pruned) graph, and takes the BPR loss of its slice of the global
batch. Table gradients are summed by torchrec's backward and applied by the fused
optimizer on the owning rank; dense parameters (feature tables, projections) are
all-reduced explicitly and stepped by Adam. Evaluation splits users across ranks.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as torch_dist

from cliper_dist import config as config_lib
from cliper_dist import dist
from cliper_dist.encode.store import FeatureStore
from cliper_dist.errors import UserError
from cliper_dist.model.graph import degree_sensitive_prune, knn_item_graph, user_item_adjacency
from cliper_dist.model.recommender import GraphRecommender, ModelConfig, fixed_text_fusion
from cliper_dist.sharding.tables import ITEM_FEATURE, USER_FEATURE, ShardingConfig, full_lookup_kjt, shard_id_tables
from cliper_dist.train.data import RecData, epoch_batches, load_rec_data
from cliper_dist.train.metrics import KS, metric_sums, topk_hits

log = dist.log


@dataclass
class TrainConfig:
    data: str = ""  # dataset directory or MMRec folder
    features: str = ""  # feature directory of the encode job (freedom)
    out: str = ""  # run directory
    seed: int = 999
    device: str = "auto"
    epochs: int = 1000
    batch_size: int = 2048  # global: split across ranks
    lr: float = 1e-3  # Adam, dense parameters (feature tables, projections, MLP fusion)
    patience: int = 20  # evaluations without a better valid Recall@20 before stopping
    eval_every: int = 1
    eval_batch_users: int = 2048
    model: ModelConfig = field(default_factory=ModelConfig)
    sharding: ShardingConfig = field(default_factory=ShardingConfig)


@dataclass
class Features:
    image: torch.Tensor  # (I, D)
    text_views: torch.Tensor  # (I, C, D)


def load_features(path: str, num_items: int) -> Features:
    """The encode job's raw image and text-view embeddings, checked before training starts."""
    store = FeatureStore.open(path)
    image = np.asarray(store.array("image"), dtype=np.float32)
    views = np.asarray(store.array("text_views"), dtype=np.float32)
    for name, arr in (("image", image), ("text_views", views)):
        rows = arr.shape[0] if name == "image" else arr.shape[1]
        if rows != num_items:
            raise UserError(f"{path}/{name}.npy has {rows} item rows, the dataset has {num_items} items")
        if not np.isfinite(arr).all():
            raise UserError(f"{path}/{name}.npy contains NaN or infinite values")
    return Features(torch.from_numpy(image), torch.from_numpy(np.ascontiguousarray(views.transpose(1, 0, 2))))


def build_item_graph(cfg: ModelConfig, feats: Features) -> torch.Tensor:
    """mm_adj = w * kNN(image) + (1 - w) * kNN(text), frozen for the whole run."""
    text = fixed_text_fusion("sum" if cfg.fusion == "mlp" else cfg.fusion, feats.text_views, feats.image, cfg.tau)
    image_adj = knn_item_graph(feats.image, cfg.knn_k).to_sparse_coo()
    text_adj = knn_item_graph(text, cfg.knn_k).to_sparse_coo()
    w = cfg.mm_image_weight
    return (image_adj * w + text_adj * (1.0 - w)).coalesce().to_sparse_csr()


class Trainer:
    def __init__(self, cfg: TrainConfig, info: dist.DistInfo):
        self.cfg, self.info = cfg, info
        self.data: RecData = load_rec_data(cfg.data)
        feats = None
        if cfg.model.name == "freedom":
            if not cfg.features:
                raise UserError("model freedom needs features=FEATURES_DIR (the encode job's output)")
            feats = load_features(cfg.features, self.data.num_items)
        dist.seed_everything(cfg.seed)
        device = info.device
        self.tables, plan = shard_id_tables(self.data.num_users, self.data.num_items, cfg.model.embedding_dim,
                                            cfg.sharding, info.world_size, device)
        if info.is_main:
            log.info("sharding plan:\n%s", plan)
        self.model = GraphRecommender(cfg.model, self.data.num_users, self.data.num_items,
                                      feats.image if feats else None, feats.text_views if feats else None).to(device)
        if feats is not None:
            self.model.set_item_graph(build_item_graph(cfg.model, feats).to(device))
        dense = [p for p in self.model.parameters() if p.requires_grad]
        self.dense_params = dense
        self.optimizer = torch.optim.Adam(dense, lr=cfg.lr) if dense else None
        self._sync_dense_params()
        self.kjt = full_lookup_kjt(self.data.num_users, self.data.num_items, device)
        self.full_adj = user_item_adjacency(self.data.train_user, self.data.train_item,
                                            self.data.num_users, self.data.num_items).to(device)
        self.train_keys = self.data.train_keys()

    def _sync_dense_params(self) -> None:
        """Every rank starts from rank 0's dense parameters."""
        if torch_dist.is_initialized():
            for p in self.dense_params:
                torch_dist.broadcast(p.data, src=0)

    def tables_whole(self) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.tables(self.kjt)
        return out[USER_FEATURE].values(), out[ITEM_FEATURE].values()

    def epoch_graph(self, epoch: int) -> torch.Tensor:
        m = self.cfg.model
        if m.name != "freedom" or m.edge_dropout <= 0:
            return self.full_adj
        rng = np.random.default_rng([self.cfg.seed, epoch, 7])  # same on every rank
        u, i = degree_sensitive_prune(self.data.train_user, self.data.train_item, self.data.num_users,
                                      self.data.num_items, 1.0 - m.edge_dropout, rng)
        return user_item_adjacency(u, i, self.data.num_users, self.data.num_items).to(self.info.device)

    def train_epoch(self, epoch: int) -> float:
        self.model.train()
        adj = self.epoch_graph(epoch)
        total, steps = 0.0, 0
        device = self.info.device
        for users, pos, neg in epoch_batches(self.data, self.train_keys, epoch, self.cfg.seed,
                                             self.cfg.batch_size, self.info.rank, self.info.world_size):
            user_table, item_table = self.tables_whole()
            loss = self.model.loss(user_table, item_table, adj, torch.from_numpy(users).to(device),
                                   torch.from_numpy(pos).to(device), torch.from_numpy(neg).to(device),
                                   global_batch=self.cfg.batch_size)
            loss.backward()  # fused optimizer updates the table shards here
            if self.optimizer is not None:
                self._all_reduce_dense_grads()
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
            total += float(loss)
            steps += 1
        # Each rank's loss is its share of the global-batch mean: the sum is the global mean.
        total_t = torch.tensor([total], dtype=torch.float64)
        if torch_dist.is_initialized():
            torch_dist.all_reduce(total_t)
        return total_t.item() / max(steps, 1)

    def _all_reduce_dense_grads(self) -> None:
        if not torch_dist.is_initialized():
            return
        grads = [p.grad for p in self.dense_params if p.grad is not None]
        flat = torch.cat([g.reshape(-1) for g in grads])
        torch_dist.all_reduce(flat)  # each rank's loss is already divided by the global batch
        offset = 0
        for g in grads:
            g.copy_(flat[offset:offset + g.numel()].view_as(g))
            offset += g.numel()

    @torch.no_grad()
    def evaluate(self) -> dict[str, dict[str, float]]:
        """Valid and test metrics; users are split across ranks and the sums all-reduced."""
        self.model.eval()
        user_table, item_table = self.tables_whole()
        users_emb, items_emb = self.model.propagate(user_table, item_table, self.full_adj)
        results = {}
        for split_name, truth_csr in (("valid", self.data.valid), ("test", self.data.test)):
            has_truth = np.flatnonzero(truth_csr.lengths() > 0)
            mine = has_truth[self.info.rank::self.info.world_size]
            sums = dict.fromkeys([f"{m}@{k}" for m in ("recall", "ndcg") for k in KS], 0.0)
            for lo in range(0, len(mine), self.cfg.eval_batch_users):
                batch = mine[lo:lo + self.cfg.eval_batch_users]
                scores = users_emb[torch.from_numpy(batch)] @ items_emb.T
                scores[self._mask(self.data.train, batch)] = -torch.inf
                truth = torch.zeros_like(scores)
                truth[self._mask(truth_csr, batch)] = 1.0
                hits = topk_hits(scores, truth, max(KS))
                for k, v in metric_sums(hits, torch.from_numpy(truth_csr.lengths()[batch])).items():
                    sums[k] += v
            vec = torch.tensor(list(sums.values()) + [len(mine)], dtype=torch.float64)
            if torch_dist.is_initialized():
                torch_dist.all_reduce(vec)
            count = max(vec[-1].item(), 1.0)
            results[split_name] = {k: round(v / count, 6) for k, v in zip(sums, vec[:-1].tolist())}
        return results

    @staticmethod
    def _mask(csr, batch: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        lengths = csr.lengths()[batch]
        rows = np.repeat(np.arange(len(batch)), lengths)
        cols = np.concatenate([csr.row(u) for u in batch]) if len(batch) else np.zeros(0, np.int64)
        return torch.from_numpy(rows), torch.from_numpy(cols)


def run(cfg: TrainConfig, info: dist.DistInfo) -> dict | None:
    for key in ("data", "out"):
        if not getattr(cfg, key):
            raise UserError(f"train: '{key}' is required (--{key} or {key}=...)")
    if cfg.batch_size < info.world_size:
        raise UserError(f"batch_size {cfg.batch_size} is smaller than the world size {info.world_size}")
    out = Path(cfg.out)
    if info.is_main:
        out.mkdir(parents=True, exist_ok=True)
        config_lib.save(cfg, out / "config.yaml")
    trainer = Trainer(cfg, info)
    d = trainer.data
    log.info("train: %s, %d users, %d items, %d train interactions, model %s, world size %d",
             d.source, d.num_users, d.num_items, len(d.train_user), cfg.model.name, info.world_size)
    best, best_epoch, waited, history = -1.0, -1, 0, []
    start = time.perf_counter()
    train_seconds = 0.0
    metrics_path = out / "metrics.jsonl"
    if info.is_main:
        metrics_path.write_text("")
    for epoch in range(cfg.epochs):
        t0 = time.perf_counter()
        loss = trainer.train_epoch(epoch)
        train_seconds += time.perf_counter() - t0
        if (epoch + 1) % cfg.eval_every and epoch + 1 != cfg.epochs:
            continue
        t1 = time.perf_counter()
        metrics = trainer.evaluate()
        record = {"epoch": epoch, "loss": round(loss, 6), "epoch_s": round(t1 - t0, 3),
                  "eval_s": round(time.perf_counter() - t1, 3), **metrics}
        history.append(record)
        if info.is_main:
            with metrics_path.open("a") as f:
                f.write(json.dumps(record) + "\n")
            log.info("epoch %d loss %.4f valid R@20 %.4f N@20 %.4f test R@20 %.4f (%.1fs)", epoch, loss,
                     metrics["valid"]["recall@20"], metrics["valid"]["ndcg@20"], metrics["test"]["recall@20"],
                     time.perf_counter() - t0)
        if metrics["valid"]["recall@20"] > best:
            best, best_epoch, waited = metrics["valid"]["recall@20"], epoch, 0
        else:
            waited += 1
            if waited >= cfg.patience:
                log.info("early stop: no better valid Recall@20 in %d evaluations", waited)
                break
    best_record = next(r for r in history if r["epoch"] == best_epoch)
    epochs_run = history[-1]["epoch"] + 1
    final = {"model": cfg.model.name, "best_epoch": best_epoch, "valid": best_record["valid"],
             "test": best_record["test"], "epochs": epochs_run, "world_size": info.world_size,
             "wall_s": round(time.perf_counter() - start, 3), "s_per_epoch": round(train_seconds / epochs_run, 4)}
    if info.is_main:
        (out / "final.json").write_text(json.dumps(final, indent=2) + "\n")
    return final
