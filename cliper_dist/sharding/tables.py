"""The user/item ID tables as a torchrec EmbeddingCollection, planned and sharded across ranks.

Built on the meta device, planned explicitly for the real topology (rank 0 plans and
broadcasts), then wrapped in DistributedModelParallel: no rank ever materialises a table
it does not own. Table names avoid ``items`` (it clashes with ModuleDict.items).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from fbgemm_gpu.split_embedding_configs import EmbOptimType
from torchrec import EmbeddingCollection, EmbeddingConfig, KeyedJaggedTensor
from torchrec.distributed import comm_ops
from torchrec.distributed.embedding import EmbeddingCollectionSharder
from torchrec.distributed.model_parallel import DistributedModelParallel
from torchrec.distributed.planner import EmbeddingShardingPlanner, Topology
from torchrec.distributed.planner.types import ParameterConstraints
from torchrec.distributed.types import ShardingPlan, ShardingType

from cliper_dist.errors import UserError

USER_TABLE, ITEM_TABLE = "user_id", "item_id"
USER_FEATURE, ITEM_FEATURE = "user", "item"

# Fused (in-backward) optimizers fbgemm implements per device type.
FUSED_OPTIMIZERS = {
    "sgd": EmbOptimType.EXACT_SGD,
    "adagrad": EmbOptimType.EXACT_ADAGRAD,
    "rowwise_adagrad": EmbOptimType.EXACT_ROWWISE_ADAGRAD,
    "adam": EmbOptimType.ADAM,
}
CPU_FUSED_OPTIMIZERS = ("sgd", "adagrad", "rowwise_adagrad")


# What a sharded EmbeddingCollection runs with on CPU/gloo (data_parallel fails inside torchrec).
CPU_SHARDING_TYPES = (ShardingType.TABLE_WISE.value, ShardingType.ROW_WISE.value, ShardingType.COLUMN_WISE.value)


class CpuEmbeddingCollectionSharder(EmbeddingCollectionSharder):
    """An EmbeddingCollection sharder that offers exactly the sharding types that work on CPU.

    torchrec's stock sharders decide by device type; for EmbeddingBagCollection they offer
    row_wise only on CUDA. This one states the CPU set explicitly (table_wise, row_wise,
    column_wise, all verified on gloo), so the planner can neither pick data_parallel (which
    fails for EC inside torchrec) nor be refused row_wise.
    """

    def sharding_types(self, compute_device_type: str) -> list[str]:
        if compute_device_type == "cpu":
            return list(CPU_SHARDING_TYPES)
        return super().sharding_types(compute_device_type)


@dataclass
class ShardingConfig:
    sharding_type: str = "table_wise"  # table_wise | row_wise | column_wise (planner constraint)
    optimizer: str = "adagrad"  # fused table optimizer: sgd | adagrad | rowwise_adagrad | adam (CUDA only)
    lr: float = 0.05
    eps: float = 1e-8
    extra_constraints: dict[str, str] = field(default_factory=dict)  # table -> sharding type override


def xavier_uniform(num_embeddings: int, dim: int) -> functools.partial:
    """Xavier-uniform init from the *full* table shape, so every shard of it draws alike."""
    bound = math.sqrt(6.0 / (num_embeddings + dim))
    return functools.partial(torch.nn.init.uniform_, a=-bound, b=bound)


def id_table_configs(num_users: int, num_items: int, dim: int) -> list[EmbeddingConfig]:
    return [
        EmbeddingConfig(name=USER_TABLE, num_embeddings=num_users, embedding_dim=dim, feature_names=[USER_FEATURE],
                        init_fn=xavier_uniform(num_users, dim)),
        EmbeddingConfig(name=ITEM_TABLE, num_embeddings=num_items, embedding_dim=dim, feature_names=[ITEM_FEATURE],
                        init_fn=xavier_uniform(num_items, dim)),
    ]


def fused_params(cfg: ShardingConfig, device: torch.device) -> dict:
    if cfg.optimizer not in FUSED_OPTIMIZERS:
        raise UserError(f"sharding.optimizer must be one of {sorted(FUSED_OPTIMIZERS)}; got '{cfg.optimizer}'")
    if device.type == "cpu" and cfg.optimizer not in CPU_FUSED_OPTIMIZERS:
        raise UserError(f"sharding.optimizer={cfg.optimizer} has no fused CPU kernel in fbgemm; "
                        f"use one of {', '.join(CPU_FUSED_OPTIMIZERS)} on CPU")
    return {"optimizer": FUSED_OPTIMIZERS[cfg.optimizer], "learning_rate": cfg.lr, "eps": cfg.eps}


def plan_tables(module: EmbeddingCollection, cfg: ShardingConfig, world_size: int, device: torch.device,
                sharder: EmbeddingCollectionSharder) -> ShardingPlan:
    types = {USER_TABLE: cfg.sharding_type, ITEM_TABLE: cfg.sharding_type, **cfg.extra_constraints}
    unknown = sorted(set(types) - {USER_TABLE, ITEM_TABLE})
    if unknown:
        raise UserError(f"sharding.extra_constraints names unknown table(s) {unknown}; tables are "
                        f"{USER_TABLE}, {ITEM_TABLE}")
    allowed = sharder.sharding_types(device.type)
    for table, kind in types.items():
        if kind not in allowed:
            raise UserError(f"sharding type '{kind}' for table {table} is not available on {device.type}; "
                            f"choose one of {', '.join(allowed)}")
    constraints = {t: ParameterConstraints(sharding_types=[s]) for t, s in types.items()}
    planner = EmbeddingShardingPlanner(topology=Topology(world_size=world_size, compute_device=device.type),
                                       constraints=constraints, debug=False)
    try:
        if dist.is_initialized():
            plan = planner.collective_plan(module, [sharder], dist.GroupMember.WORLD)
        else:
            plan = planner.plan(module, [sharder])
    except Exception as e:  # the planner's own message lists what did not fit
        raise UserError(f"no sharding plan for {types} on {world_size} {device.type} rank(s): "
                        f"{str(e).splitlines()[0]}") from None
    planned = {name for shardings in plan.plan.values() for name in shardings}  # type: ignore[union-attr]
    if planned != {USER_TABLE, ITEM_TABLE}:
        raise RuntimeError(f"sharding plan covers {sorted(planned)}, expected both ID tables")
    return plan


def shard_id_tables(num_users: int, num_items: int, dim: int, cfg: ShardingConfig, world_size: int,
                    device: torch.device) -> tuple[DistributedModelParallel, ShardingPlan]:
    """A DMP-wrapped EmbeddingCollection holding the user and item tables, and its plan.

    torchrec divides table gradients by the world size in the backward all-to-all (DDP's
    averaging convention) unless told otherwise. The train job divides each rank's loss by
    the *global* batch size, so the rank contributions must be summed: gradient division is
    switched off (a process-wide torchrec setting).
    """
    comm_ops.set_gradient_division(False)
    tables = EmbeddingCollection(tables=id_table_configs(num_users, num_items, dim), device=torch.device("meta"))
    sharder = CpuEmbeddingCollectionSharder(fused_params=fused_params(cfg, device))
    plan = plan_tables(tables, cfg, world_size, device, sharder)
    dmp = DistributedModelParallel(tables, device=device, plan=plan, sharders=[sharder], init_data_parallel=False)
    return dmp, plan


def full_lookup_kjt(num_users: int, num_items: int, device: torch.device) -> KeyedJaggedTensor:
    """One bag per table holding every id in order: the lookup returns both tables whole.

    Full-graph propagation needs every row each step; the rows arrive as activations through
    torchrec's all-to-all, so gradients flow back to the owning shards' fused optimizer.
    """
    return KeyedJaggedTensor(
        keys=[USER_FEATURE, ITEM_FEATURE],
        values=torch.cat([torch.arange(num_users), torch.arange(num_items)]).to(device),
        lengths=torch.tensor([num_users, num_items], dtype=torch.int32).to(device),
    )
