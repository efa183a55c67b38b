"""The sharded SASRec (torchrec row-wise table, vocabulary-parallel softmax, summed dense gradients)
against its dense single-process equations (``seq/reference.py``), at 1 and 2 real ranks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cliper_dist import dist
from cliper_dist.data.interactions import split_per_user
from cliper_dist.seq.data import Sequences, train_batches
from cliper_dist.parallel.optim import OptimConfig
from cliper_dist.seq.model import SASRecConfig, SeqModel, evaluate
from cliper_dist.seq.reference import ReferenceSeqModel

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


def config(loss: str, table: str, item_input: str) -> SASRecConfig:
    return SASRecConfig(name="sasrec", embedding_dim=8, loss=loss, item_input=item_input, max_len=6, blocks=2,
                        heads=2, dropout=0.0, table_optimizer=table, table_lr=0.1, softmax_block=7)


def item_features(item_input: str) -> torch.Tensor | None:
    return torch.randn(ITEMS, 5, generator=torch.Generator().manual_seed(1)) if item_input != "id" else None


def train_sharded(loss: str, table: str, item_input: str) -> dict:
    info = dist.init(device="cpu")
    seqs = synthetic_sequences()
    model = SeqModel(config(loss, table, item_input), OptimConfig(lr=0.01), ITEMS, SEED, info.rank, info.world_size,
                     info.device, item_features(item_input))
    losses = []
    for epoch in range(2):
        for batch in train_batches(seqs, 6, 16, epoch, SEED, info.rank, info.world_size):
            losses.append(float(model.step(batch)))
    rows = [None] * info.world_size
    torch.distributed.all_gather_object(rows, (model.lo, model.own_rows().clone()))
    items = torch.cat([r for _, r in sorted(rows, key=lambda x: x[0])])
    loss_sums = torch.tensor(losses)
    torch.distributed.all_reduce(loss_sums)
    return {"loss": loss_sums.tolist(), "items": items, "encoder": {k: v.clone() for k, v in
                                                                     model.encoder.state_dict().items()},
            "valid": evaluate(model, seqs, "valid", info.rank, info.world_size, batch_users=5),
            "test": evaluate(model, seqs, "test", info.rank, info.world_size, batch_users=5)}


def train_reference(loss: str, table: str, item_input: str) -> dict:
    seqs = synthetic_sequences()
    model = ReferenceSeqModel(config(loss, table, item_input), 0.01, ITEMS, SEED, item_features(item_input))
    losses = [model.step(b) for epoch in range(2) for b in train_batches(seqs, 6, 16, epoch, SEED, 0, 1)]
    return {"loss": losses, "items": model.items().detach(), "encoder": model.encoder.state_dict(),
            "valid": model.evaluate(seqs, "valid"), "test": model.evaluate(seqs, "test")}


# SGD shows any scale error of the gradients (row-wise Adagrad divides it out); BCE+SGD adds the
# sampled path's scale, which the same all-to-all carries (slow). With features, an item's vector is
# its projected features (plus its ID row): the projection's gradient reaches it from every rank.
@pytest.mark.parametrize("loss,table,item_input", [
    ("ce", "sgd", "id"), ("bce", "rowwise_adagrad", "id+features"),
    pytest.param("ce", "rowwise_adagrad", "features", marks=pytest.mark.slow),
    pytest.param("bce", "sgd", "id", marks=pytest.mark.slow)])
def test_two_ranks_match_the_dense_equations(ranks, loss, table, item_input):
    expected = train_reference(loss, table, item_input)
    for got in ranks.run(train_sharded, loss, table, item_input):
        np.testing.assert_allclose(got["loss"], expected["loss"], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(got["items"], expected["items"], rtol=1e-4, atol=1e-5)
        for name, value in expected["encoder"].items():
            torch.testing.assert_close(got["encoder"][name], value, rtol=1e-4, atol=1e-5, msg=name)
        for split in ("valid", "test"):
            assert got[split] == pytest.approx(expected[split], abs=1e-6)
