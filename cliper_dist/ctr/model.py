"""DLRM and DCN-v2 on a sharded torchrec ``EmbeddingBagCollection``, as torchrec's DLRM example wires them.

The modules are torchrec's own (``torchrec.models.dlrm``): a bottom MLP on the dense features, one
embedding bag per sparse feature, then the pairwise dot interaction (``dlrm``) or a low-rank
DCN-v2 cross network (``dcn``), and the top MLP; ``DLRMTrain`` adds the BCE loss and the
``(loss, (loss, logits, labels))`` contract of the train pipeline. Built in the example's order:
the collection on ``meta``, torchrec's ``EmbeddingShardingPlanner`` (plan agreed on rank 0 and
broadcast, ``collective_plan``), ``DistributedModelParallel``, the fused table optimizer and
Adam for the dense part combined in one ``CombinedOptimizer``.

Tables: one per sparse feature, all ``embedding_dim`` wide (DLRM's dot interaction needs one
width), compute kernel ``fused`` (fbgemm applies the optimizer inside the backward). Sharding:
the planner chooses among table_wise, row_wise and column_wise from its cost model, or
``model.sharding`` forces one for every table; ``model.row_wise_min_rows`` makes the large tables
row_wise whatever the rest get. torchrec 1.8's stock sharder offers row_wise only
on CUDA; it runs on CPU (``_CpuRowWiseSharder`` admits it: DESIGN.md section 4).

Gradient semantics: each rank's loss is the mean over its share of the global batch (equal shares),
DDP averages the dense gradients over ranks and torchrec divides the table gradients its
all-to-alls return by the world size (its default, set explicitly here): every parameter gets the
gradient of the global batch's mean loss, so 1 and N ranks take the same steps.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from fbgemm_gpu.split_embedding_configs import EmbOptimType
from torch import nn
from torchrec import EmbeddingBagCollection, EmbeddingBagConfig
from torchrec.distributed.comm_ops import set_gradient_division
from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder
from torchrec.distributed.model_parallel import DistributedModelParallel
from torchrec.distributed.planner import EmbeddingShardingPlanner, ParameterConstraints, Topology
from torchrec.distributed.types import ShardingPlan
from torchrec.models.dlrm import DLRM, DLRM_DCN, DLRMTrain
from torchrec.optim.keyed import CombinedOptimizer, KeyedOptimizerWrapper
from torchrec.optim.optimizers import in_backward_optimizer_filter

from cliper_dist.ctr.config import DCNConfig, DLRMConfig
from cliper_dist.parallel.optim import OptimConfig
from cliper_dist.seq.table import init_rows

FBGEMM = {"sgd": EmbOptimType.EXACT_SGD, "rowwise_adagrad": EmbOptimType.EXACT_ROWWISE_ADAGRAD,
          "adagrad": EmbOptimType.EXACT_ADAGRAD}
PLANNABLE = ["table_wise", "row_wise", "column_wise"]
INIT_CHUNK = 1 << 20  # rows initialised at once (a 10M-row table is never copied whole)


@dataclass(frozen=True)
class TableSpec:
    name: str  # also the feature's key
    num_rows: int


def table_seed(seed: int, index: int) -> int:
    return seed * 7919 + index + 1


def build_dlrm(arch: DLRMConfig, tables: list[TableSpec], dense_dim: int, seed: int) -> DLRMTrain:
    """The unsharded model: its collection on ``meta``, the dense layers seeded by ``seed`` (the
    same values at any world size and in the reference)."""
    configs = [EmbeddingBagConfig(name=t.name, embedding_dim=arch.embedding_dim, num_embeddings=t.num_rows,
                                  feature_names=[t.name]) for t in tables]
    ebc = EmbeddingBagCollection(tables=configs, device=torch.device("meta"))
    torch.manual_seed(seed)
    bottom, top = [*arch.bottom_mlp, arch.embedding_dim], [*arch.top_mlp, 1]
    if isinstance(arch, DCNConfig):
        model = DLRM_DCN(ebc, dense_dim, bottom, top, dcn_num_layers=arch.dcn_layers, dcn_low_rank_dim=arch.dcn_rank)
    else:
        model = DLRM(ebc, dense_dim, bottom, top)
    if arch.bottom_out == "linear":  # torchrec's MLP applies ReLU after every layer, its output layer's too
        model.dense_arch.model._mlp[-1]._activation_fn = nn.Identity()
    return DLRMTrain(model)


def init_table(spec: TableSpec, index: int, dim: int, seed: int, lo: int, hi: int) -> torch.Tensor:
    """Rows [lo, hi) of table ``index``'s initial values (``seq.table.init_rows``, Xavier-uniform:
    independent of the world size)."""
    return init_rows(lo, hi, spec.num_rows, dim, table_seed(seed, index), xavier=True)


def sharding_types(arch: DLRMConfig, spec: TableSpec) -> list[str]:
    """The types the planner may choose for one table: ``row_wise`` for a table of at least
    ``model.row_wise_min_rows`` rows (its memory and lookups split evenly), else ``model.sharding``'s."""
    if arch.row_wise_min_rows and spec.num_rows >= arch.row_wise_min_rows:
        return ["row_wise"]
    return list(PLANNABLE) if arch.sharding == "auto" else [arch.sharding]


class _CpuRowWiseSharder(EmbeddingBagCollectionSharder):
    """The stock sharder, with row_wise admitted on CPU and the ``fused`` kernel only."""

    def sharding_types(self, compute_device_type: str) -> list[str]:
        return list(PLANNABLE)

    def compute_kernels(self, sharding_type: str, compute_device_type: str) -> list[str]:
        return ["fused"]


def dense_adam(params: dict[str, nn.Parameter], optim: OptimConfig) -> torch.optim.Adam:
    """Adam with its state created up front (step 0, zero moments): a checkpoint loads into it in
    place, and the first step is torch's first step."""
    adam = torch.optim.Adam(list(params.values()), lr=optim.lr, betas=(optim.beta1, optim.beta2), eps=optim.eps,
                            weight_decay=optim.weight_decay)
    for p in params.values():
        adam.state[p] = {"step": torch.tensor(0.0), "exp_avg": torch.zeros_like(p),
                         "exp_avg_sq": torch.zeros_like(p)}
    return adam


class ShardedCtr:
    """The DLRM/DCN model under DMP on this rank, its plan and its optimizers."""

    config_class = DLRMConfig  # model.name=dlrm (model/registry.py)
    task = "ctr"

    def __init__(self, arch: DLRMConfig, optim: OptimConfig, tables: list[TableSpec], dense_dim: int,
                 batch_per_rank: int, seed: int, world_size: int, device: torch.device):
        set_gradient_division(True)  # torchrec's default, relied on (module docstring); seq/ turns it off
        self.tables, self.arch = tables, arch
        model = build_dlrm(arch, tables, dense_dim, seed)
        fused = {"optimizer": FBGEMM[arch.table_optimizer], "learning_rate": arch.table_lr, "eps": arch.table_eps}
        sharder = _CpuRowWiseSharder(fused_params=fused)
        constraints = {t.name: ParameterConstraints(sharding_types=sharding_types(arch, t), compute_kernels=["fused"])
                       for t in tables}
        local = int(os.environ.get("LOCAL_WORLD_SIZE", world_size))
        planner = EmbeddingShardingPlanner(topology=Topology(world_size=world_size, local_world_size=local,
                                                             compute_device=device.type),
                                           batch_size=batch_per_rank, constraints=constraints)
        self.plan: ShardingPlan = planner.collective_plan(model, [sharder], torch.distributed.GroupMember.WORLD)
        self.dmp = DistributedModelParallel(model, device=device, plan=self.plan, sharders=[sharder])
        self._init_tables(seed)
        dense = dict(in_backward_optimizer_filter(self.dmp.named_parameters()))
        self.dense_optimizer = KeyedOptimizerWrapper(dense, lambda params: dense_adam(dict(dense), optim))
        self.optimizer = CombinedOptimizer([self.dmp.fused_optimizer, self.dense_optimizer])

    def table_shards(self) -> dict[str, tuple[torch.Tensor, list[int]]]:
        """Per table: this rank's shard (fbgemm's weights, in place) and its (row, column) offsets;
        tables this rank holds nothing of are absent."""
        out = {}
        for key, value in self.dmp.state_dict().items():
            if key.endswith(".weight") and hasattr(value, "local_shards"):
                for shard in value.local_shards():
                    out[key.split(".")[-2]] = (shard.tensor, list(shard.metadata.shard_offsets))
        return out

    def _init_tables(self, seed: int) -> None:
        shards = self.table_shards()
        with torch.no_grad():
            for index, spec in enumerate(self.tables):
                if spec.name not in shards:
                    continue
                local, (r0, c0) = shards[spec.name]
                for lo in range(0, local.shape[0], INIT_CHUNK):
                    hi = min(local.shape[0], lo + INIT_CHUNK)
                    rows = init_table(spec, index, self.arch.embedding_dim, seed, r0 + lo, r0 + hi)
                    local[lo:hi].copy_(rows[:, c0:c0 + local.shape[1]])

    def plan_rows(self) -> list[dict]:
        """The plan per table: sharding type and every shard's rank, offsets and sizes."""
        rows = []
        for module_plan in self.plan.plan.values():
            for name, p in module_plan.items():  # type: ignore[union-attr]
                shards = [{"rank": s.placement.rank(), "offsets": s.shard_offsets, "sizes": s.shard_sizes}
                          for s in p.sharding_spec.shards] if p.sharding_spec is not None else []
                rows.append({"table": name, "sharding": p.sharding_type, "kernel": p.compute_kernel,
                             "shards": shards})
        return rows

    def table_bytes(self) -> int:
        """Bytes of this rank's table shards (weights only)."""
        return sum(t.numel() * t.element_size() for t, _ in self.table_shards().values())



class ShardedDCN(ShardedCtr):
    """``model.name=dcn``: the same, with DCN-v2's cross network (``build_dlrm``)."""

    config_class = DCNConfig
