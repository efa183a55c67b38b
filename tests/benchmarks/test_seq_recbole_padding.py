"""seq_recbole's swap of our encoder into RecBole's SASRec: RecBole's right-padded sequences reach
it left-padded as ours, every item in order, at every length from 1 to L."""

from __future__ import annotations

import importlib.util

import torch

from tests.conftest import REPO


def test_right_padded_rows_become_left_padded():
    spec = importlib.util.spec_from_file_location("seq_recbole", REPO / "benchmarks/seq_recbole.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    L = 5
    lengths = torch.arange(1, L + 1)
    right = torch.zeros(L, L, dtype=torch.long)
    for row, n in enumerate(lengths.tolist()):
        right[row, :n] = torch.arange(10 * row + 1, 10 * row + 1 + n)
    left = bench.right_to_left(right, lengths)
    for row, n in enumerate(lengths.tolist()):
        assert left[row].tolist() == [0] * (L - n) + right[row, :n].tolist()
