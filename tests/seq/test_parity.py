"""The sharded SASRec (torchrec row-wise table, vocabulary-parallel softmax, summed dense gradients)
against its dense single-process equations (``seq/reference.py``), at 1 and 2 real ranks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cliper_dist import dist
from cliper_dist.seq.data import Sequences, train_batches
from cliper_dist.parallel.optim import OptimConfig
from cliper_dist.seq.model import SASRecConfig
from cliper_dist.seq.reference import ReferenceSeqModel
from cliper_dist.seq.trainer import SeqTrainer
from tests.seq._data import stride_walks

ITEMS, USERS, SEED, STEPS = 53, 40, 3, 3


def synthetic_sequences() -> Sequences:
    inter = stride_walks(USERS, ITEMS, (2, 14), np.random.default_rng(0))
    return Sequences.from_interactions(inter, USERS, ITEMS, "synthetic")


def config(loss: str, table: str, item_input: str, examples: str, norm: str) -> SASRecConfig:
    return SASRecConfig(name="sasrec", embedding_dim=8, loss=loss, item_input=item_input, max_len=6, blocks=2,
                        heads=2, dropout=0.0, table_optimizer=table, table_lr=0.1, softmax_block=7,
                        train_examples=examples, norm=norm)


def item_features(item_input: str) -> torch.Tensor | None:
    return torch.randn(ITEMS, 5, generator=torch.Generator().manual_seed(1)) if item_input != "id" else None


def train_sharded(loss: str, table: str, item_input: str, examples: str, norm: str, pipelined: bool) -> dict:
    """Two epochs at this world size, through torchrec's pipeline as the job trains (``pipelined``)
    or step by step."""
    info = dist.init(device="cpu")
    seqs = synthetic_sequences()
    trainer = SeqTrainer(config(loss, table, item_input, examples, norm), OptimConfig(lr=0.01), seqs,
                         item_features(item_input), info, SEED, 16, 5, None)
    model = trainer.model
    losses = []
    for epoch in range(2):
        batches = train_batches(seqs, 6, 16, epoch, SEED, info.rank, info.world_size, examples=examples)
        losses += map(float, trainer.steps(batches) if pipelined else map(model.step, batches))
    metrics = trainer.evaluate()
    rows = [None] * info.world_size
    torch.distributed.all_gather_object(rows, (model.lo, model.own_rows().clone()))
    items = torch.cat([r for _, r in sorted(rows, key=lambda x: x[0])])
    loss_sums = torch.tensor(losses)
    torch.distributed.all_reduce(loss_sums)
    return {"loss": loss_sums.tolist(), "items": items, "encoder": {k: v.clone() for k, v in
                                                                     model.encoder.state_dict().items()},
            **metrics}


def train_reference(loss: str, table: str, item_input: str, examples: str, norm: str) -> dict:
    seqs = synthetic_sequences()
    cfg = config(loss, table, item_input, examples, norm)
    model = ReferenceSeqModel(cfg, 0.01, ITEMS, SEED, item_features(item_input))
    losses = [model.step(b) for epoch in range(2)
              for b in train_batches(seqs, 6, 16, epoch, SEED, 0, 1, examples=examples)]
    return {"loss": losses, "items": model.items().detach(), "encoder": model.encoder.state_dict(),
            "valid": model.evaluate(seqs, "valid"), "test": model.evaluate(seqs, "test")}


# SGD shows any scale error of the gradients (row-wise Adagrad divides it out); BCE+SGD adds the
# sampled path's scale, which the same all-to-all carries (slow). With features, an item's vector is
# its projected features (plus its ID row): the projection's gradient reaches it from every rank.
# The job trains through torchrec's pipeline; step by step is the same arithmetic (slow). Prefix
# examples score one position each, their last. Post-LN blocks reach the job as the reference's
# (their equations: test_encoder.py).
@pytest.mark.parametrize("loss,table,item_input,examples,norm,pipelined", [
    ("ce", "sgd", "id", "window", "pre", True), ("bce", "rowwise_adagrad", "id+features", "window", "pre", True),
    ("bce", "sgd", "id", "prefix", "post", True),
    pytest.param("ce", "sgd", "id+features", "prefix", "pre", True, marks=pytest.mark.slow),
    pytest.param("ce", "rowwise_adagrad", "features", "prefix", "pre", False, marks=pytest.mark.slow),
    pytest.param("ce", "rowwise_adagrad", "features", "window", "pre", False, marks=pytest.mark.slow),
    pytest.param("bce", "sgd", "id", "window", "pre", False, marks=pytest.mark.slow),
    pytest.param("ce", "rowwise_adagrad", "id+features", "window", "pre", False, marks=pytest.mark.slow)])
def test_two_ranks_match_the_dense_equations(ranks, loss, table, item_input, examples, norm, pipelined):
    expected = train_reference(loss, table, item_input, examples, norm)
    for got in ranks.run(train_sharded, loss, table, item_input, examples, norm, pipelined):
        np.testing.assert_allclose(got["loss"], expected["loss"], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(got["items"], expected["items"], rtol=1e-4, atol=1e-5)
        for name, value in expected["encoder"].items():
            torch.testing.assert_close(got["encoder"][name], value, rtol=1e-4, atol=1e-5, msg=name)
        for split in ("valid", "test"):
            assert got[split] == pytest.approx(expected[split], abs=1e-6)
