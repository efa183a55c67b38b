"""The vocabulary-parallel softmax (``seq/softmax.py``) against autograd on its dense equations, at
2 real ranks with unequal position counts and row shares: the loss, each rank's positions'
gradients and its rows' gradients, when the ranks scale their losses alike (the training step)
and when they do not (the backward's all-reduce tells each rank the others' scales)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from cliper_dist import dist
from cliper_dist.seq.softmax import sharded_cross_entropy

COUNTS, ITEMS, DIM, LO_1 = (7, 4), 9, 5, 4  # rank 0: positions 0-6, rows 0-3; rank 1: positions 7-10, rows 4-8
SCALES = ((2.0, 2.0), (1.0, 3.0))


def inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return (torch.randn(sum(COUNTS), DIM, generator=g), torch.randn(ITEMS, DIM, generator=g),
            torch.randint(0, ITEMS, (sum(COUNTS),), generator=g))


def sharded() -> list[dict]:
    rank = dist.init(device="cpu").rank
    h_all, rows_all, targets = inputs()
    own = slice(sum(COUNTS[:rank]), sum(COUNTS[:rank + 1]))
    lo, hi = (0, LO_1) if rank == 0 else (LO_1, ITEMS)
    out = []
    for scales in SCALES:
        h, rows = h_all[own].clone().requires_grad_(), rows_all[lo:hi].clone().requires_grad_()
        loss = sharded_cross_entropy(h, rows, targets[own], COUNTS, lo, block=3)
        (loss * scales[rank]).backward()
        out.append({"loss": float(loss), "d_h": h.grad, "d_rows": rows.grad, "own": own, "rows": (lo, hi)})
    return out


def test_gradients_match_the_dense_equations_with_equal_and_unequal_loss_scales(ranks):
    got = ranks.run(sharded)
    for k, scales in enumerate(SCALES):
        h, rows, targets = (x.requires_grad_() if x.is_floating_point() else x for x in inputs())
        losses = F.cross_entropy(h @ rows.T, targets, reduction="none")
        weights = torch.repeat_interleave(torch.tensor(scales), torch.tensor(COUNTS))
        (losses * weights).mean().backward()
        torch.testing.assert_close(torch.tensor(sum(r[k]["loss"] for r in got)), losses.mean().detach())
        for r in got:
            torch.testing.assert_close(r[k]["d_h"], h.grad[r[k]["own"]])
            torch.testing.assert_close(r[k]["d_rows"], rows.grad[slice(*r[k]["rows"])])
