"""SASRec on the sharded item table: a training step and the users' representations.

An item's input vector is its ID row (the torchrec table), its frozen features projected to the
model's width (CLIPER fused or adapted features, ``ItemContent``), or their sum
(``model.item_input``); the same vectors are the output layer that scores the next item.

Each rank's loss is its targets' share of the global mean, so the sum over ranks is the loss
of the whole batch: torchrec sums the table's row gradients over ranks (and fbgemm applies
them in the backward), and the dense gradients are summed over ranks (an all-reduce), never
averaged. Two losses:

- ``bce``: the paper's, each position's target against one sampled negative;
- ``ce``: the full softmax over every item (``softmax.cross_entropy``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, ClassVar, Literal

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torchrec import KeyedJaggedTensor
from torchrec.distributed.model_parallel import DistributedModelParallel
from torchrec.distributed.types import ShardingPlan
from torchrec.sparse.jagged_tensor import JaggedTensor
from torchrec.streamable import Pipelineable

from cliper_dist.data.features import ItemVectors
from cliper_dist.data.item_features import Features
from cliper_dist.errors import UserError
from cliper_dist.model.base import FeatureConfig
from cliper_dist.parallel.optim import OptimConfig
from cliper_dist.seq.data import Batch, Examples, Sequences
from cliper_dist.seq.sasrec import Norm, SASRec, left_pad
from cliper_dist.seq.softmax import cross_entropy, rows_travel, target_ranks
from cliper_dist.seq.table import ItemTable, Optimizer, TableOptim, keyed_ids, row_bounds

ItemInput = Literal["id", "features", "id+features"]


@dataclass
class SASRecConfig(FeatureConfig):
    """``model.name=sasrec``: the sequential task (docs/sequential.md)."""

    name: Literal["sasrec"] = "sasrec"
    loss: Literal["bce", "ce"] = "ce"  # bce: one sampled negative per position (the paper); ce: full softmax
    item_input: ItemInput = "id"  # an item's vector: ID row, projected features (--features), or their sum
    train_examples: Examples = "window"  # window: a user's last L+1 items (paper); prefix: one per item (RecBole)
    max_len: int = 50  # L: the most recent items a user's representation reads
    blocks: int = 2  # self-attention blocks
    heads: int = 1
    norm: Norm = "pre"  # the blocks' LayerNorms: pre (the paper's) or post (RecBole's, BERT's)
    dropout: float = 0.2
    table_optimizer: Optimizer = "rowwise_adagrad"  # fbgemm's, fused into the backward (CPU: no Adam)
    table_lr: float = 0.01
    table_eps: float = 1e-8
    softmax_block: int = 256  # positions scored at once against the rows (ce: softmax.py); 256 x 1,000 logits fit L2

    # keys added after runs were saved, and what those runs did (config.refuse_changed)
    SAVED_WITHOUT: ClassVar[dict[str, Any]] = {"train_examples": "window", "norm": "pre"}

    @property
    def uses_ids(self) -> bool:
        return self.item_input != "features"

    @property
    def uses_features(self) -> bool:
        return self.item_input != "id"

    def check(self) -> None:
        """One line per misconfiguration, before anything is loaded or written."""
        for key in ("max_len", "blocks", "heads", "embedding_dim", "softmax_block"):
            if getattr(self, key) < 1:
                raise UserError(f"model.{key} must be >= 1; got {getattr(self, key)}")
        if self.embedding_dim % self.heads:
            raise UserError(f"model.embedding_dim {self.embedding_dim} is not divisible by model.heads {self.heads}")
        if not 0.0 <= self.dropout < 1.0:
            raise UserError(f"model.dropout must be in [0, 1); got {self.dropout}")
        if self.uses_features and self.fusion == "mlp":
            raise UserError("model.fusion=mlp is trained with FREEDOM only; sasrec reads fixed features: "
                            "fusion sa, sum or concat")


def feature_matrix(features: Features, fusion: str, tau: float) -> torch.Tensor:
    """Each item's modalities (CLIPER-fused text views or the ready text feature, the image),
    each row L2-normalised so the modalities weigh alike, side by side: (I, D_text + D_image)."""
    parts = [F.normalize(v.whole(), dim=1) for v in features.modalities(fusion, tau) if isinstance(v, ItemVectors)]
    return torch.cat(parts, dim=1)


class ItemContent(nn.Module):
    """Frozen item features, projected to the model's width by a trained linear map (data-parallel)."""

    def __init__(self, features: torch.Tensor, dim: int):
        super().__init__()
        self.register_buffer("features", features, persistent=False)
        self.proj = nn.Linear(features.shape[1], dim)

    def forward(self, items: torch.Tensor) -> torch.Tensor:
        return self.proj(self.features[items])


def distinct(items: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Each key's distinct items, and the index that expands their vectors back to ``items[key]``.
    A row is looked up (and its gradient sent back) once per key, rank and step, however many
    positions read it: the lookup's all-to-alls carry a few rows instead of every position (torchrec's
    ``use_index_dedup``, whose kernel is CUDA-only). The gradient is the same: fbgemm's exact
    optimizers sum a row's gradients either way."""
    pairs = {key: torch.unique(values, return_inverse=True) for key, values in items.items()}
    return {key: ids for key, (ids, _) in pairs.items()}, {key: expand for key, (_, expand) in pairs.items()}


@dataclass
class SeqBatch(Pipelineable):
    """A rank's step input as torchrec's pipeline moves it: the batch, the ids each key looks up,
    the index that expands a key's looked-up vectors to its positions (``distinct``; none for
    ``rows``), and the ids' ``KeyedJaggedTensor`` (None without an ID table)."""

    batch: Batch
    ids: dict[str, torch.Tensor]
    expand: dict[str, torch.Tensor]
    kjt: KeyedJaggedTensor | None

    def to(self, device: torch.device, non_blocking: bool = False) -> "SeqBatch":
        b = self.batch
        moved = replace(b, **{k: getattr(b, k).to(device, non_blocking=non_blocking)
                              for k in ("inputs", "targets", "negatives", "lengths")})
        ids, expand = ({k: t.to(device, non_blocking=non_blocking) for k, t in d.items()}
                       for d in (self.ids, self.expand))
        kjt = None if self.kjt is None else self.kjt.to(device, non_blocking=non_blocking)
        return SeqBatch(moved, ids, expand, kjt)

    def record_stream(self, stream) -> None:
        if self.kjt is not None:
            self.kjt.record_stream(stream)

    def pin_memory(self) -> "SeqBatch":
        return self


class SeqHead(nn.Module):
    """The dense, data-parallel part of a step: item vectors, the encoder and the loss. It holds no
    sharded module, so torchrec's pipeline tracer takes it as a leaf."""

    def __init__(self, cfg: SASRecConfig, row_counts: tuple[int, ...], features: torch.Tensor | None):
        super().__init__()
        self.cfg, self.row_counts = cfg, row_counts  # every rank's share of the output layer's rows
        self.encoder = SASRec(cfg.embedding_dim, cfg.max_len, cfg.blocks, cfg.heads, cfg.dropout, cfg.norm)
        self.content = None if features is None else ItemContent(features, cfg.embedding_dim)

    def vectors(self, looked_up: dict[str, JaggedTensor] | None, ids: dict[str, torch.Tensor],
                expand: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Each key's item vectors, one per position: its ID rows (looked up through torchrec) plus
        projected features, computed once per distinct item and expanded."""
        out = {}
        for key, items in ids.items():
            v = None if looked_up is None else looked_up[key].values()
            if self.content is not None:
                v = self.content(items) if v is None else v + self.content(items)
            out[key] = v[expand[key]] if key in expand else v
        return out

    def encode(self, embeddings: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x, mask = left_pad(embeddings, lengths, max(int(lengths.max()), 1) if lengths.numel() else 1)
        return self.encoder(x, mask), mask

    def forward(self, looked_up: dict[str, JaggedTensor] | None, step: SeqBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """(this rank's share of the global batch's mean loss, the same detached)."""
        batch = step.batch
        vectors = self.vectors(looked_up, step.ids, step.expand)
        y, mask = self.encode(vectors["seq"], batch.lengths)
        h = batch.scored(y, mask)
        if self.cfg.loss == "ce":
            loss = cross_entropy(h, batch.targets, vectors["rows"], batch.counts, self.row_counts,
                                 self.cfg.softmax_block)
        else:
            pos = (h * vectors["pos"]).sum(-1)
            neg = (h * vectors["neg"]).sum(-1)
            loss = (F.softplus(-pos) + F.softplus(neg)).sum() / batch.total
        return loss, loss.detach()


class SeqNet(nn.Module):
    """What a step runs, as torchrec's pipeline expects it: the collection's lookup of the batch's
    ``kjt``, then the head."""

    def __init__(self, items: nn.Module | None, head: SeqHead):
        super().__init__()
        self.items, self.head = items, head

    def forward(self, step: SeqBatch) -> tuple[torch.Tensor, torch.Tensor]:
        return self.head(self.items(step.kjt) if self.items is not None else None, step)


class DenseStep:
    """The dense part's optimizer step as torchrec's pipeline calls it: the gradients summed over
    ranks (each rank's loss is its share of the global mean), then Adam. The table's optimizer
    already ran, fused into the backward."""

    def __init__(self, params: list[nn.Parameter], optim: OptimConfig):
        self.params = params
        self.adam = torch.optim.Adam(params, lr=optim.lr, betas=(optim.beta1, optim.beta2), eps=optim.eps,
                                     weight_decay=optim.weight_decay)
        for p in params:  # Adam's state exists from the start: a checkpoint loads into it
            self.adam.state[p] = {"step": torch.tensor(0.0), "exp_avg": torch.zeros_like(p),
                                  "exp_avg_sq": torch.zeros_like(p)}

    def zero_grad(self, set_to_none: bool = False) -> None:
        self.adam.zero_grad(set_to_none=False)

    def step(self) -> None:
        if dist.is_initialized() and dist.get_world_size() > 1:
            grads = [p.grad for p in self.params]
            flat = torch.cat([g.reshape(-1) for g in grads])
            dist.all_reduce(flat)
            for g, part in zip(grads, flat.split([g.numel() for g in grads])):
                g.copy_(part.view_as(g))
        self.adam.step()


class SeqModel:
    """The item vectors (sharded ID table and/or ``ItemContent``) and the SASRec encoder; rank r
    scores against its rows [lo, hi) of the output layer. ``net`` is the step's module, under
    ``DistributedModelParallel`` when there is an ID table (``dmp``)."""

    config_class = SASRecConfig  # model.name=sasrec (model/registry.py)
    task = "seq"

    def __init__(self, cfg: SASRecConfig, optim: OptimConfig, num_items: int, seed: int, rank: int, world_size: int,
                 device: torch.device, features: torch.Tensor | None = None):
        if cfg.uses_features != (features is not None):
            raise ValueError(f"item_input={cfg.item_input} with features {'absent' if features is None else 'given'}")
        self.cfg, self.num_items, self.device = cfg, num_items, device
        self.lo, self.hi = row_bounds(num_items, rank, world_size)
        table = (ItemTable(num_items, cfg.embedding_dim, TableOptim(cfg.table_optimizer, cfg.table_lr, cfg.table_eps),
                           world_size, device) if cfg.uses_ids else None)
        torch.manual_seed(seed)  # the same dense initial values on every rank
        row_counts = tuple(hi - lo for lo, hi in (row_bounds(num_items, r, world_size) for r in range(world_size)))
        self.head = SeqHead(cfg, row_counts, features).to(device)
        net = SeqNet(None if table is None else table.collection, self.head)
        self.table, self.dmp = table, None
        if table is not None:
            self.dmp = DistributedModelParallel(net, device=device, plan=ShardingPlan({"items": table.plan}),
                                                sharders=[table.sharder], init_data_parallel=False)
            table.bind(self.dmp.state_dict(), "items.", seed, rank, world_size)
            net = self.dmp
        self.net = net
        self.optimizer = DenseStep(list(self.head.parameters()), optim)

    @property
    def encoder(self) -> SASRec:
        return self.head.encoder

    @property
    def content(self) -> ItemContent | None:
        return self.head.content

    def step_input(self, batch: Batch) -> SeqBatch:
        """A batch's distinct ids per key and their KJT. The full softmax's ``rows``: every row when
        they travel (``softmax.rows_travel``: torchrec's all-to-alls bring them), else this rank's
        own (row-wise routing keeps them here)."""
        items = {"seq": batch.inputs}
        if self.cfg.loss == "bce":
            items.update(pos=batch.targets, neg=batch.negatives)
        ids, expand = distinct(items)
        if self.cfg.loss == "ce":
            every = rows_travel(self.num_items, batch.counts)
            ids["rows"] = torch.arange(0, self.num_items) if every else torch.arange(self.lo, self.hi)
        return SeqBatch(batch, ids, expand, keyed_ids(ids) if self.table else None)

    def step(self, batch: Batch) -> torch.Tensor:
        """One training step on this rank's share of a global batch, unpipelined (the trainer runs
        torchrec's pipeline); returns its loss share."""
        self.net.train()
        self.optimizer.zero_grad()
        loss, out = self.net(self.step_input(batch))
        loss.backward()  # the table's rows are updated here (fbgemm, fused)
        self.optimizer.step()
        return out

    def lookup(self, items: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Item vectors outside a training step (evaluation, serving)."""
        ids, expand = distinct(items)
        collection = self.dmp.module.items if self.dmp is not None else None
        return self.head.vectors(None if collection is None else collection(keyed_ids(ids)), ids, expand)

    @torch.no_grad()
    def own_rows(self) -> torch.Tensor:
        """This rank's rows of the output layer, [lo, hi) x d."""
        rows = self.table.local.detach() if self.table else 0.0
        if self.content is not None:
            rows = rows + self.content(torch.arange(self.lo, self.hi))
        return rows

    @torch.no_grad()
    def user_vectors(self, history: tuple[np.ndarray, np.ndarray], users: np.ndarray) -> torch.Tensor:
        """The representation of each of ``users`` (this rank's; the table's lookup is collective, so
        every rank calls alike, with users or without) after the last L items of its ``history`` =
        (indptr, items)."""
        self.net.eval()
        indptr, seen = history
        windows = [seen[indptr[u]:indptr[u + 1]][-self.cfg.max_len:] for u in users]
        lengths = torch.tensor([len(w) for w in windows], dtype=torch.long)
        inputs = torch.from_numpy(np.concatenate(windows)) if windows else torch.zeros(0, dtype=torch.long)
        y, _ = self.head.encode(self.lookup({"seq": inputs})["seq"], lengths)
        return y[:, -1]

    def rank_targets(self, history: tuple[np.ndarray, np.ndarray], targets: np.ndarray,
                     users: np.ndarray) -> torch.Tensor:
        """0-based full-ranking rank of each of ``users``' target (``targets``: every user's)."""
        h = self.user_vectors(history, users)
        return target_ranks(h, torch.from_numpy(users), torch.from_numpy(targets[users]), self.own_rows(), self.lo,
                            history)

    def state_dict(self, with_optimizer: bool) -> dict:
        """The DCP state, every entry a view of the live tensors: the table's rows (a ShardedTensor)
        and the dense parameters; with the optimizers, fbgemm's row state and Adam's."""
        state: dict = {"model": self.net.state_dict()}
        if with_optimizer:
            state["adam"] = {f"{name}.{key}": value for name, p in self.head.named_parameters()
                             for key, value in self.optimizer.adam.state[p].items()}
            if self.dmp is not None:
                state["table_optim"] = self.dmp.fused_optimizer.state_dict()
        return state


def evaluate(model: SeqModel, seqs: Sequences, split: str, rank: int, world_size: int,
             batch_users: int = 256, users: np.ndarray | None = None, ks: tuple[int, ...] = (10, 20)
             ) -> dict[str, float]:
    """HR@k and NDCG@k of every user with a ``split`` target (among ``users`` when given), ranked
    against all items."""
    targets = seqs.test if split == "test" else seqs.valid
    history = seqs.history(with_valid=split == "test")
    candidates = np.flatnonzero(targets >= 0)
    if users is not None:
        candidates = np.intersect1d(candidates, users)
    per_rank = -(-len(candidates) // world_size)
    mine = candidates[rank * per_rank:(rank + 1) * per_rank]
    ranks = [model.rank_targets(history, targets, mine[s:s + batch_users])
             for s in range(0, per_rank, batch_users)]
    r = torch.cat(ranks).double() if ranks else torch.zeros(0, dtype=torch.float64)
    sums = torch.stack([torch.tensor(float(len(r)), dtype=torch.float64)]
                       + [v for k in ks for v in ((r < k).sum().double(),
                                                  torch.where(r < k, 1.0 / torch.log2(r + 2.0), 0.0).sum())])
    if dist.is_initialized() and world_size > 1:
        dist.all_reduce(sums)
    n = max(float(sums[0]), 1.0)
    hr = {f"hr@{k}": round(float(sums[1 + 2 * i]) / n, 6) for i, k in enumerate(ks)}
    return hr | {f"ndcg@{k}": round(float(sums[2 + 2 * i]) / n, 6) for i, k in enumerate(ks)}
