"""The sharded DLRM/DCN (torchrec EBC under DMP, fbgemm's fused table optimizer, Adam, the train
pipeline) against its dense single-process equations (``ctr/reference.py``), at 1 and 2 real ranks.

What holds: the same global batches give the same steps at any world size (the loss of a rank is
its share's mean; DDP averages the dense gradients, torchrec divides the table gradients by the
world size), so losses, tables, dense layers and AUC agree with the reference to float rounding."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cliper_dist import dist
from cliper_dist.ctr.catalog import build_field
from cliper_dist.ctr.config import DCNConfig, DLRMConfig
from cliper_dist.ctr.data import CtrData, LabelConfig, rank_batches, standardise
from cliper_dist.ctr.model import TableSpec, build_dlrm
from cliper_dist.ctr.reference import ReferenceCtr
from cliper_dist.ctr.synthetic import synthetic_ctr
from cliper_dist.ctr.trainer import CtrTrainer, ctr_metrics, gathered_tables, tables_of
from cliper_dist.parallel.optim import OptimConfig

SEED, BATCH, EPOCHS = 5, 64, 2


def small_data(labels: str) -> CtrData:
    s = synthetic_ctr(num_users=60, num_items=80, per_user=10, seed=1, feature_dim=6)
    fields = [build_field(s.items, "brand", 2), build_field(s.items, "categories", 2)]
    return CtrData.build(s.inter, s.num_users, s.num_items, LabelConfig(kind=labels, negatives=2), SEED, fields,
                         standardise(torch.from_numpy(s.features)), "synthetic")


def setup(name: str, table: str, sharding: str = "auto") -> tuple[DLRMConfig, OptimConfig]:
    """``sharding``: a type, or ``TYPE+row_wise>=N`` (``model.row_wise_min_rows=N``)."""
    sharding, _, min_rows = sharding.partition("+row_wise>=")
    keys = dict(embedding_dim=4, bottom_mlp=[8], top_mlp=[8, 4], table_optimizer=table, table_lr=0.1,
                sharding=sharding, row_wise_min_rows=int(min_rows or 0), eval_batch=50)
    arch = DCNConfig(dcn_layers=2, dcn_rank=3, **keys) if name == "dcn" else DLRMConfig(**keys)
    return arch, OptimConfig(lr=0.01)


def train_sharded(name: str, table: str, labels: str, sharding: str) -> dict:
    info = dist.init(device="cpu")
    data = small_data(labels)
    arch, optim = setup(name, table, sharding)
    trainer = CtrTrainer(data, arch, optim, BATCH, SEED, info)
    losses = [trainer.train_epoch(epoch) for epoch in range(EPOCHS)]
    dense = {k: v.detach().clone() for k, v in trainer.model.dmp.state_dict().items() if "sparse_arch" not in k}
    return {"loss": losses, "tables": gathered_tables(trainer.model, info.world_size), "dense": dense,
            "metrics": trainer.evaluate(), "plan": trainer.model.plan_rows()}


def train_reference(name: str, table: str, labels: str) -> dict:
    data = small_data(labels)
    arch, optim = setup(name, table)
    ref = ReferenceCtr(arch, optim, tables_of(data), data.dense_dim, SEED)
    losses = []
    for epoch in range(EPOCHS):
        steps = [ref.step(data.batch(b)) for b in rank_batches(data.train_samples(epoch), BATCH, 0, 1)]
        losses.append(float(np.mean(steps)))
    metrics = {}
    for split in ("valid", "test"):
        batch = data.batch(data.eval_samples(split))
        metrics[split] = ctr_metrics(ref.logits(batch), batch.labels)
    tables = {k: bag.weight.detach() for k, bag in zip(ref.keys, ref.bags)}
    return {"loss": losses, "tables": tables, "metrics": metrics,
            "dense": {k: v for k, v in ref.state_dict().items() if not k.startswith("bags.")}}


def check(got: dict, expected: dict) -> None:
    np.testing.assert_allclose(got["loss"], expected["loss"], rtol=1e-5)
    for name, table in expected["tables"].items():
        torch.testing.assert_close(got["tables"][name], table, rtol=1e-4, atol=1e-5, msg=name)
    dense = {k.removeprefix("model."): v for k, v in got["dense"].items()}
    for name, value in expected["dense"].items():
        torch.testing.assert_close(dense[name], value, rtol=1e-4, atol=1e-5, msg=name)
    for split in ("valid", "test"):
        assert got["metrics"][split]["samples"] == expected["metrics"][split]["samples"]
        assert got["metrics"][split]["auc"] == pytest.approx(expected["metrics"][split]["auc"], abs=1e-4)
        assert got["metrics"][split]["logloss"] == pytest.approx(expected["metrics"][split]["logloss"], rel=1e-4)


# SGD shows any scale error of the table gradients (row-wise Adagrad divides a constant scale out)
@pytest.mark.parametrize("name,table,labels,sharding,nproc", [
    ("dlrm", "sgd", "implicit", "row_wise", 2),
    ("dcn", "rowwise_adagrad", "explicit", "auto", 2),
    ("dlrm", "sgd", "explicit", "table_wise+row_wise>=60", 2),  # user (60) and item (80) row_wise, fields table_wise
    pytest.param("dlrm", "sgd", "implicit", "row_wise", 1, marks=pytest.mark.slow),
    pytest.param("dlrm", "adagrad", "implicit", "table_wise", 2, marks=pytest.mark.slow),
    pytest.param("dlrm", "rowwise_adagrad", "implicit", "column_wise", 2, marks=pytest.mark.slow),
])
def test_ranks_match_the_dense_equations(ranks, name, table, labels, sharding, nproc):
    expected = train_reference(name, table, labels)
    for got in ranks.run(train_sharded, name, table, labels, sharding, nproc=nproc):
        check(got, expected)
        plan = {r["table"]: r["sharding"] for r in got["plan"]}
        assert set(plan.values()) <= {"table_wise", "row_wise", "column_wise"}
        if "+" in sharding:
            assert plan == {"user_id": "row_wise", "item_id": "row_wise", "brand": "table_wise",
                            "categories": "table_wise"}
        elif sharding != "auto":
            assert set(plan.values()) == {sharding}


@pytest.mark.parametrize("config_class", [DLRMConfig, DCNConfig])
@pytest.mark.parametrize("bottom_out", ["linear", "relu"])
@pytest.mark.parametrize("bottom_mlp", [[], [8]])  # [] (the default): one layer, the output's
def test_bottom_out_is_the_bottom_mlps_last_activation(config_class, bottom_out, bottom_mlp):
    """(The parity cases cannot see it: the reference is built by the same ``build_dlrm``.)"""
    arch = config_class(embedding_dim=4, bottom_mlp=bottom_mlp, bottom_out=bottom_out)
    dense = build_dlrm(arch, [TableSpec("t", 5)], 3, seed=0).model.dense_arch
    out = dense(torch.randn(64, 3, generator=torch.Generator().manual_seed(0)))
    assert (out.min() < 0) == (bottom_out == "linear") and out.shape == (64, 4)
