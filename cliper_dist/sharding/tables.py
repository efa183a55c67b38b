"""ID tables (users, items): a torchrec EmbeddingCollection sharded column-wise, one block per rank.

torchrec plans the tables (``column_wise``: rank r holds the columns ``ColumnSplit.bounds``
gives it), allocates each rank's block and owns the sharded state: its state dict holds
ShardedTensors that torch.distributed.checkpoint writes per rank and reshards on load at
another world size. The compute kernel is torchrec's ``dense`` one (plain weights, no
fused in-backward optimizer): training reads and updates the local blocks in place and
never calls the collection's forward, because a lookup all-to-alls rows between ranks
while column-parallel propagation needs this rank's entire block, which it already holds.
``ColumnAdam`` steps the blocks: fbgemm's fused optimizers have no Adam on CPU, and parity
with MMRec needs Adam's dense semantics.

Built on the meta device, so no rank ever materialises a block it does not own. Table
names avoid ``items`` (it clashes with ModuleDict.items).
"""

from __future__ import annotations

import math
import os

import torch
from torchrec import EmbeddingCollection, EmbeddingConfig
from torchrec.distributed.embedding import EmbeddingCollectionSharder
from torchrec.distributed.model_parallel import DistributedModelParallel
from torchrec.distributed.sharding_plan import column_wise, construct_module_sharding_plan
from torchrec.distributed.types import ShardingPlan

from cliper_dist.parallel.columns import ColumnSplit, seeded_columns, uniform

USER_TABLE, ITEM_TABLE = "user_id", "item_id"


class IdTables:
    """Column-sharded ID tables, ``rows`` = {table name: number of ids}, and this rank's blocks
    (``block(name)``: rows x d_r; ``user`` and ``item`` for the trainer's two tables).

    Initialised Xavier-uniform from the full table shape, column by column from
    (seed, table, column): the same tables at any world size.
    """

    def __init__(self, rows: dict[str, int], dim: int, split: ColumnSplit, seed: int, device: torch.device,
                 what: str = "model.embedding_dim"):
        split.check(dim, what)
        self.dim, self.split = dim, split
        configs = [EmbeddingConfig(name=name, num_embeddings=n, embedding_dim=dim, feature_names=[name])
                   for name, n in rows.items()]
        collection = EmbeddingCollection(tables=configs, device=torch.device("meta"))
        sharder = EmbeddingCollectionSharder()
        per_table = {c.name: column_wise(size_per_rank=split.sizes(dim), compute_kernel="dense") for c in configs}
        local_size = int(os.environ.get("LOCAL_WORLD_SIZE", split.world_size))  # ranks per node (torchrun)
        module_plan = construct_module_sharding_plan(collection, per_table, sharder=sharder, local_size=local_size,
                                                     world_size=split.world_size, device_type=device.type)
        self.plan = ShardingPlan({"": module_plan})
        self.module = DistributedModelParallel(collection, device=device, plan=self.plan, sharders=[sharder],
                                               init_data_parallel=False)
        state = self.module.state_dict()
        self.blocks = {name: state[f"embeddings.{name}.weight"].local_shards()[0].tensor for name in rows}
        with torch.no_grad():
            for name, n in rows.items():
                bound = math.sqrt(6.0 / (n + dim))
                self.blocks[name].copy_(seeded_columns(n, dim, split, seed, name, uniform(bound)))

    @property
    def user(self) -> torch.Tensor:
        return self.blocks[USER_TABLE]

    @property
    def item(self) -> torch.Tensor:
        return self.blocks[ITEM_TABLE]

    def state_dict(self) -> dict:
        """ShardedTensors of both tables (views of the blocks): DCP writes and loads them in place."""
        return self.module.state_dict()

    def describe(self) -> str:
        lo, hi = self.split.bounds(self.dim)
        tables = ", ".join(f"{name} {block.shape[0]} x {self.dim}" for name, block in self.blocks.items())
        return f"torchrec column_wise ID tables ({tables}); rank {self.split.rank} holds columns [{lo}, {hi})"
