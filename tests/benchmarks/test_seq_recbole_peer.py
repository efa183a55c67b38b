"""seq_recbole's changes to RecBole's SASRec: our encoder swapped in gets RecBole's right-padded
sequences left-padded as ours, every item in order, at every length from 1 to L; and the item table
trained as ours is (``--peer-table rowwise_adagrad``) takes fbgemm's row-wise Adagrad steps."""

from __future__ import annotations

import importlib.util

import torch
from fbgemm_gpu.split_embedding_configs import EmbOptimType
from fbgemm_gpu.split_table_batched_embeddings_ops_common import EmbeddingLocation, PoolingMode
from fbgemm_gpu.split_table_batched_embeddings_ops_training import ComputeDevice, SplitTableBatchedEmbeddingBagsCodegen
from torch import nn

from tests.conftest import REPO


def seq_recbole():
    spec = importlib.util.spec_from_file_location("seq_recbole", REPO / "benchmarks/seq_recbole.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


def test_right_padded_rows_become_left_padded():
    L = 5
    lengths = torch.arange(1, L + 1)
    right = torch.zeros(L, L, dtype=torch.long)
    for row, n in enumerate(lengths.tolist()):
        right[row, :n] = torch.arange(10 * row + 1, 10 * row + 1 + n)
    left = seq_recbole().right_to_left(right, lengths)
    for row, n in enumerate(lengths.tolist()):
        assert left[row].tolist() == [0] * (L - n) + right[row, :n].tolist()


def test_peer_table_takes_fbgemms_rowwise_adagrad_steps_and_adam_the_rest():
    rows, dim, lr, table_lr = 6, 4, 1e-3, 0.05
    g = torch.Generator().manual_seed(0)
    model = nn.Module()
    model.item_embedding, model.proj = nn.Embedding(rows, dim), nn.Linear(dim, dim)
    fbgemm = SplitTableBatchedEmbeddingBagsCodegen([(rows, dim, EmbeddingLocation.HOST, ComputeDevice.CPU)],
                                                   optimizer=EmbOptimType.EXACT_ROWWISE_ADAGRAD,
                                                   learning_rate=table_lr, eps=1e-8, pooling_mode=PoolingMode.SUM)
    with torch.no_grad():
        fbgemm.split_embedding_weights()[0].copy_(model.item_embedding.weight)
    proj = nn.Linear(dim, dim)
    proj.load_state_dict(model.proj.state_dict())
    adam = torch.optim.Adam(proj.parameters(), lr=lr)
    optimizer = seq_recbole()._TableApart(model, lr, table_lr)
    touched = torch.tensor([0, 2, 2, 5])  # row 2 twice, rows 1, 3, 4 not at all
    for _ in range(3):
        grad = torch.randn(len(touched), dim, generator=g)
        optimizer.zero_grad()
        (model.item_embedding(touched) * grad).sum().backward()
        (model.proj.weight.sum() * grad.sum()).backward()
        optimizer.step()
        # fbgemm: one bag per id, the gradient of each, the update fused into the backward
        (fbgemm(touched, torch.arange(len(touched) + 1)) * grad).sum().backward()
        adam.zero_grad()
        (proj.weight.sum() * grad.sum()).backward()
        adam.step()
    torch.testing.assert_close(model.item_embedding.weight.detach(), fbgemm.split_embedding_weights()[0])
    torch.testing.assert_close(model.proj.weight.detach(), proj.weight.detach())
