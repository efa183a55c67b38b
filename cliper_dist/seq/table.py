"""The item table of the sequential task: a torchrec EmbeddingCollection sharded row-wise.

Rank r owns the rows ``[lo, hi)`` torchrec's plan gives it. Every use of a row goes through the
collection's forward with a ``KeyedJaggedTensor`` (torchrec all-to-alls the ids to their owners
and the embeddings back), and the optimizer is fbgemm's, fused into the backward: a row is
updated once per step from the sum of its gradients over every key and rank ("exact" optimizers
merge duplicate ids). The keys share the one table, each holding its distinct ids in one bag
(``model.distinct``):

- ``seq``: the step's input items,
- ``pos`` / ``neg``: its targets and their sampled negatives (BCE),
- ``rows``: the output layer of the full softmax: every row when the step's rows travel (every rank
  looks them all up, and torchrec's all-to-alls carry them; ``softmax.rows_travel``), else this
  rank's own, which row-wise routing keeps on this rank.

Why fused: torchrec 1.8's ``dense`` kernel fails the row-wise sequence all-to-all on CPU (its
output carries every id, not the owner's, and the split sizes do not match); fbgemm's CPU
kernels (``fused``) work, with exact SGD, Adagrad and row-wise Adagrad (no Adam on CPU).

Gradient division is off: torchrec's default divides the rows' gradients by the world size (to
match DDP's averaging); here each rank's loss is its share of the global mean, so gradients add.

Initialised from (seed, row block) independently of the world size: the same table at any number
of ranks.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Literal

import torch
from fbgemm_gpu.split_embedding_configs import EmbOptimType
from torchrec import EmbeddingCollection, EmbeddingConfig, KeyedJaggedTensor
from torchrec.distributed.comm_ops import set_gradient_division
from torchrec.distributed.embedding import EmbeddingCollectionSharder
from torchrec.distributed.sharding_plan import construct_module_sharding_plan, row_wise

from cliper_dist.seq.sasrec import INIT_STD

KEYS = ("seq", "pos", "neg", "rows")
TABLE = "item_id"
INIT_BLOCK = 1 << 16  # rows drawn per generator seed: the table is the same at any world size

Optimizer = Literal["sgd", "rowwise_adagrad", "adagrad"]
FBGEMM_OPTIMIZERS = {"sgd": EmbOptimType.EXACT_SGD, "rowwise_adagrad": EmbOptimType.EXACT_ROWWISE_ADAGRAD,
                     "adagrad": EmbOptimType.EXACT_ADAGRAD}


@dataclass
class TableOptim:
    """fbgemm's fused optimizer of the item table (applied inside backward)."""

    name: Optimizer = "rowwise_adagrad"
    lr: float = 0.01
    eps: float = 1e-8


def row_bounds(num_rows: int, rank: int, world_size: int) -> tuple[int, int]:
    """The rows [lo, hi) torchrec's ``row_wise`` plan gives ``rank``: blocks of ceil(rows / world)."""
    block = -(-num_rows // world_size)
    return min(rank * block, num_rows), min((rank + 1) * block, num_rows)


def init_rows(lo: int, hi: int, num_rows: int, dim: int, seed: int, xavier: bool = False) -> torch.Tensor:
    """Rows [lo, hi) of a table's initial values, drawn in blocks of INIT_BLOCK rows from generators
    seeded by (seed, block): N(0, INIT_STD) as SASRec's weights, or Xavier-uniform over
    (num_rows, dim) with ``xavier`` (the CTR tables')."""
    bound = math.sqrt(6.0 / (num_rows + dim))
    out = torch.empty(hi - lo, dim)
    for block in range(lo // INIT_BLOCK, (hi - 1) // INIT_BLOCK + 1 if hi > lo else 0):
        b_lo, b_hi = block * INIT_BLOCK, min((block + 1) * INIT_BLOCK, num_rows)
        g = torch.Generator().manual_seed(seed * 1_000_003 + block)
        values = torch.empty(b_hi - b_lo, dim)
        values = (values.uniform_(-bound, bound, generator=g) if xavier else
                  values.normal_(0.0, INIT_STD, generator=g))
        s, e = max(lo, b_lo), min(hi, b_hi)
        out[s - lo:e - lo] = values[s - b_lo:e - b_lo]
    return out


class ItemTable:
    """``num_items`` x ``dim`` rows sharded row-wise over the world. The collection is built on the
    meta device with its plan and sharder; ``DistributedModelParallel`` of the module holding it
    (``seq/model.py``) materialises this rank's rows, and ``bind`` initialises them."""

    def __init__(self, num_items: int, dim: int, optim: TableOptim, world_size: int, device: torch.device):
        self.num_items, self.dim = num_items, dim
        # torchrec divides the gradients its all-to-alls carry back by the world size (DDP's mean of
        # per-rank means); each rank's loss here is its share of the global mean, so they must add up
        set_gradient_division(False)
        config = EmbeddingConfig(name=TABLE, num_embeddings=num_items, embedding_dim=dim, feature_names=list(KEYS))
        self.collection = EmbeddingCollection(tables=[config], device=torch.device("meta"))
        fused = {"optimizer": FBGEMM_OPTIMIZERS[optim.name], "learning_rate": optim.lr, "eps": optim.eps}
        self.sharder = EmbeddingCollectionSharder(fused_params=fused)
        local_size = int(os.environ.get("LOCAL_WORLD_SIZE", world_size))
        self.plan = construct_module_sharding_plan(self.collection, {TABLE: row_wise(compute_kernel="fused")},
                                                   sharder=self.sharder, local_size=local_size,
                                                   world_size=world_size, device_type=device.type)

    def bind(self, state: dict, prefix: str, seed: int, rank: int, world_size: int) -> None:
        """Find this rank's rows in the sharded module's ``state`` (``prefix``: the collection's path)
        and write their initial values."""
        shard = state[f"{prefix}embeddings.{TABLE}.weight"].local_shards()[0]
        self.lo = shard.metadata.shard_offsets[0]
        self.hi = self.lo + shard.metadata.shard_sizes[0]
        self.local = shard.tensor  # this rank's rows, in place (fbgemm's weights)
        if (self.lo, self.hi) != row_bounds(self.num_items, rank, world_size):
            raise RuntimeError(f"torchrec's row-wise plan gave rank {rank} rows [{self.lo}, {self.hi}), "
                               f"not {row_bounds(self.num_items, rank, world_size)}")
        with torch.no_grad():
            self.local.copy_(init_rows(self.lo, self.hi, self.num_items, self.dim, seed))


def keyed_ids(ids: dict[str, torch.Tensor]) -> KeyedJaggedTensor:
    """``ids[key]`` for each key present as one KeyedJaggedTensor of the table's keys, one bag per key
    (absent keys: empty). A sequence collection returns a row per id whatever the bags, so one bag
    serves every key and every rank."""
    empty = torch.zeros(0, dtype=torch.long)
    values = [ids.get(k, empty) for k in KEYS]
    return KeyedJaggedTensor.from_lengths_sync(keys=list(KEYS), values=torch.cat(values).long(),
                                               lengths=torch.tensor([len(v) for v in values], dtype=torch.int32))
