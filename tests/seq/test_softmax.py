"""The sharded full softmax (``seq/softmax.py``) against autograd on its dense equations, at 2 real
ranks with unequal position counts and row shares, both ways it runs: gathering the positions
(more items than positions) and every rank holding every row (at most as many; torchrec's lookup
brings them, and its backward sums their gradients at the owners: here, the test sums them). The
loss, each rank's positions' gradients and the rows' gradients, when the ranks scale their losses
alike (the training step) and when they do not."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from cliper_dist import dist
from cliper_dist.seq.softmax import cross_entropy, rows_travel

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
    held = slice(0, ITEMS) if rows_travel(ITEMS, counts) else slice(sum(ROW_COUNTS[:rank]), sum(ROW_COUNTS[:rank + 1]))
    out = []
    for scales in SCALES:
        h, rows = h_all[own].clone().requires_grad_(), rows_all[held].clone().requires_grad_()
        loss = cross_entropy(h, targets[own], rows, counts, ROW_COUNTS, block=3)
        (loss * scales[rank]).backward()
        out.append({"loss": float(loss), "d_h": h.grad, "d_rows": rows.grad, "own": own, "rows": held})
    return out


@pytest.mark.parametrize("gather", GATHERS)
def test_gradients_match_the_dense_equations_with_equal_and_unequal_loss_scales(ranks, gather):
    counts = GATHERS[gather]
    assert rows_travel(ITEMS, counts) == (gather == "rows")
    got = ranks.run(sharded, counts)
    for k, scales in enumerate(SCALES):
        h, rows, targets = (x.requires_grad_() if x.is_floating_point() else x for x in inputs(counts))
        losses = F.cross_entropy(h @ rows.T, targets, reduction="none")
        weights = torch.repeat_interleave(torch.tensor(scales), torch.tensor(counts))
        (losses * weights).mean().backward()
        torch.testing.assert_close(torch.tensor(sum(r[k]["loss"] for r in got)), losses.mean().detach())
        for r in got:
            torch.testing.assert_close(r[k]["d_h"], h.grad[r[k]["own"]])
        if gather == "rows":  # every rank's gradient of every row, summed at the owners
            torch.testing.assert_close(sum(r[k]["d_rows"] for r in got), rows.grad)
        else:
            for r in got:
                torch.testing.assert_close(r[k]["d_rows"], rows.grad[r[k]["rows"]])


def test_a_world_of_one_scores_every_row():
    """One rank holds every row whichever way the sizes fall (9 items; 5 and 11 positions)."""
    for counts in GATHERS.values():
        h, rows, targets = (x.requires_grad_() if x.is_floating_point() else x for x in inputs((sum(counts),)))
        loss = cross_entropy(h, targets, rows, (h.shape[0],), (ITEMS,), block=2)
        loss.backward()
        got = (h.grad.clone(), rows.grad.clone())
        h.grad = rows.grad = None
        expected = F.cross_entropy(h @ rows.T, targets)
        expected.backward()
        torch.testing.assert_close(loss, expected)
        torch.testing.assert_close(got, (h.grad, rows.grad))
