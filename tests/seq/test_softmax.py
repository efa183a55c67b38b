"""The sharded full softmax (``seq/softmax.py``) against autograd on its dense equations, at 2 real
ranks with unequal position counts and row shares, both ways it runs: gathering the positions
(more items than positions) and gathering the rows (at most as many). The loss, each rank's
positions' gradients and its rows' gradients, when the ranks scale their losses alike (the
training step) and when they do not."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from cliper_dist import dist
from cliper_dist.seq.softmax import SoftmaxRows

ITEMS, DIM, ROW_COUNTS = 9, 5, (4, 5)  # rank 0: rows 0-3; rank 1: rows 4-8
SCALES = ((2.0, 2.0), (1.0, 3.0))
GATHERS = {"positions": (3, 2), "rows": (7, 4)}  # each rank's positions: 5 < 9 items; 11 >= 9


def inputs(counts: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return (torch.randn(sum(counts), DIM, generator=g), torch.randn(ITEMS, DIM, generator=g),
            torch.randint(0, ITEMS, (sum(counts),), generator=g))


def sharded(counts: tuple[int, int]) -> list[dict]:
    rank = dist.init(device="cpu").rank
    h_all, rows_all, targets = inputs(counts)
    own = slice(sum(counts[:rank]), sum(counts[:rank + 1]))
    rows_own = slice(sum(ROW_COUNTS[:rank]), sum(ROW_COUNTS[:rank + 1]))
    out = []
    for scales in SCALES:
        h, rows = h_all[own].clone().requires_grad_(), rows_all[rows_own].clone().requires_grad_()
        loss = SoftmaxRows(rows, counts, ROW_COUNTS).cross_entropy(h, targets[own], block=3)
        (loss * scales[rank]).backward()
        out.append({"loss": float(loss), "d_h": h.grad, "d_rows": rows.grad, "own": own, "rows": rows_own})
    return out


@pytest.mark.parametrize("gather", GATHERS)
def test_gradients_match_the_dense_equations_with_equal_and_unequal_loss_scales(ranks, gather):
    counts = GATHERS[gather]
    got = ranks.run(sharded, counts)
    for k, scales in enumerate(SCALES):
        h, rows, targets = (x.requires_grad_() if x.is_floating_point() else x for x in inputs(counts))
        losses = F.cross_entropy(h @ rows.T, targets, reduction="none")
        weights = torch.repeat_interleave(torch.tensor(scales), torch.tensor(counts))
        (losses * weights).mean().backward()
        torch.testing.assert_close(torch.tensor(sum(r[k]["loss"] for r in got)), losses.mean().detach())
        for r in got:
            torch.testing.assert_close(r[k]["d_h"], h.grad[r[k]["own"]])
            torch.testing.assert_close(r[k]["d_rows"], rows.grad[r[k]["rows"]])


def test_one_loss_per_rows_in_a_world_of_one():
    """The rows form alone (9 items, 11 positions) equals the dense loss, and a second loss on the
    same rows is refused (its reduce-scatter would replace the first one's)."""
    h, rows, targets = inputs(GATHERS["rows"])
    output = SoftmaxRows(rows, (h.shape[0],), (ITEMS,))
    torch.testing.assert_close(output.cross_entropy(h, targets), F.cross_entropy(h @ rows.T, targets))
    with pytest.raises(RuntimeError, match="called twice"):
        output.cross_entropy(h, targets)
