"""The sharded SASRec (torchrec row-wise table, vocabulary-parallel softmax, summed dense gradients)
against its dense single-process equations (``seq/reference.py``), at 1 and 2 real ranks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cliper_dist import dist
from cliper_dist.data.interactions import split_per_user
from cliper_dist.seq.data import Sequences, train_batches
from cliper_dist.seq.model import SeqConfig, SeqModel, evaluate
from cliper_dist.seq.reference import ReferenceSeqModel
from cliper_dist.seq.sasrec import SASRecConfig
from cliper_dist.seq.table import TableOptim

ITEMS, USERS, SEED, STEPS = 53, 40, 3, 3


def synthetic_sequences() -> Sequences:
    """Users walk through items in strides: an order a sequential model can learn."""
    g = np.random.default_rng(0)
    user, item = [], []
    for u in range(USERS):
        n = int(g.integers(2, 14))
        start, stride = int(g.integers(ITEMS)), int(g.integers(1, 4))
        user += [u] * n
        item += [(start + stride * j) % ITEMS for j in range(n)]
    inter = split_per_user(np.array(user), np.array(item), 0, timestamp=np.arange(len(user)), leave_one_out=True)
    return Sequences.from_interactions(inter, USERS, ITEMS, "synthetic")


def config(loss: str, table: str) -> SeqConfig:
    return SeqConfig(embedding_dim=8, loss=loss, sasrec=SASRecConfig(max_len=6, blocks=2, heads=2, dropout=0.0),
                     table=TableOptim(name=table, lr=0.1), lr=0.01, softmax_block=7)


def train_sharded(loss: str, table: str) -> dict:
    info = dist.init(device="cpu")
    seqs = synthetic_sequences()
    model = SeqModel(config(loss, table), ITEMS, SEED, info.world_size, info.device)
    losses = []
    for epoch in range(2):
        for batch in train_batches(seqs, 6, 16, epoch, SEED, info.rank, info.world_size):
            losses.append(model.step(batch))
    rows = [None] * info.world_size
    torch.distributed.all_gather_object(rows, (model.table.lo, model.own_rows().clone()))
    table = torch.cat([r for _, r in sorted(rows, key=lambda x: x[0])])
    loss_sums = torch.tensor(losses)
    torch.distributed.all_reduce(loss_sums)
    return {"loss": loss_sums.tolist(), "table": table, "encoder": {k: v.clone() for k, v in
                                                                     model.encoder.state_dict().items()},
            "valid": evaluate(model, seqs, "valid", info.rank, info.world_size, batch_users=5),
            "test": evaluate(model, seqs, "test", info.rank, info.world_size, batch_users=5)}


def train_reference(loss: str, table: str) -> dict:
    seqs = synthetic_sequences()
    model = ReferenceSeqModel(config(loss, table), ITEMS, SEED)
    losses = [model.step(b) for epoch in range(2) for b in train_batches(seqs, 6, 16, epoch, SEED, 0, 1)]
    return {"loss": losses, "table": model.table.detach(), "encoder": model.encoder.state_dict(),
            "valid": model.evaluate(seqs, "valid"), "test": model.evaluate(seqs, "test")}


# SGD shows any scale error of the gradients (row-wise Adagrad divides it out); BCE+SGD adds the
# sampled path's scale, which the same all-to-all carries (slow)
@pytest.mark.parametrize("loss,table", [("ce", "sgd"), ("bce", "rowwise_adagrad"),
                                        pytest.param("bce", "sgd", marks=pytest.mark.slow)])
def test_two_ranks_match_the_dense_equations(ranks, loss, table):
    expected = train_reference(loss, table)
    for got in ranks.run(train_sharded, loss, table):
        np.testing.assert_allclose(got["loss"], expected["loss"], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(got["table"], expected["table"], rtol=1e-4, atol=1e-5)
        for name, value in expected["encoder"].items():
            torch.testing.assert_close(got["encoder"][name], value, rtol=1e-4, atol=1e-5, msg=name)
        for split in ("valid", "test"):
            assert got[split] == pytest.approx(expected[split], abs=1e-9)
