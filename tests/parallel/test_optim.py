"""ColumnAdam's two row semantics and its schedule, on one process."""

from __future__ import annotations

import pytest
import torch

from cliper_dist.parallel.optim import ColumnAdam, OptimConfig


def _params():
    g = torch.Generator().manual_seed(0)
    return {"table": torch.nn.Parameter(torch.randn(6, 3, generator=g)),
            "dense": torch.nn.Parameter(torch.randn(2, 3, generator=g))}


def _grads(step: int):
    g = torch.Generator().manual_seed(100 + step)
    table = torch.zeros(6, 3)
    table[[1, 4] if step % 2 else [0, 1]] = torch.randn(2, 3, generator=g)
    return {"table": table, "dense": torch.randn(2, 3, generator=g)}


@pytest.mark.parametrize("sparse", [False, True])
def test_rows_all_is_torch_adam(sparse):
    """Dense semantics; a sparse gradient (other rows each step) is the dense one with zeros."""
    ours, ref = _params(), _params()
    opt = ColumnAdam(ours, {"table"}, OptimConfig(lr=0.1, rows="all"))
    torch_opt = torch.optim.Adam(ref.values(), lr=0.1)
    for step in range(4):
        rows = torch.tensor([[0, 2, 5], [1, 2], [3, 4, 5], [0]][step])
        for params in (ours, ref):
            for n, g in _grads(step).items():
                if n == "table":  # only ``rows`` have a gradient
                    g = torch.zeros_like(g).index_copy_(0, rows, g[rows])
                params[n].grad = g.clone()
        if sparse:
            g = ours["table"].grad
            ours["table"].grad = torch.sparse_coo_tensor(rows[None], g[rows], g.shape, check_invariants=True)
        opt.step()
        opt.zero_grad()
        torch_opt.step()
    for n in ours:
        torch.testing.assert_close(ours[n], ref[n])


@pytest.mark.parametrize("sparse", [False, True])
def test_rows_touched_steps_only_the_touched_rows(sparse):
    ours, ref = _params(), _params()
    opt = ColumnAdam(ours, {"table"}, OptimConfig(lr=0.1, rows="touched"))
    m = {n: torch.zeros_like(p) for n, p in ref.items()}
    v = {n: torch.zeros_like(p) for n, p in ref.items()}
    for step in range(1, 5):
        grads = _grads(step)
        rows = grads["table"].ne(0).any(1).nonzero()[:, 0]
        ours["dense"].grad = grads["dense"].clone()
        ours["table"].grad = (torch.sparse_coo_tensor(rows[None], grads["table"][rows], (6, 3), check_invariants=True)
                              if sparse
                              else grads["table"].clone())
        opt.step(None if sparse else {"table": rows})
        opt.zero_grad()
        with torch.no_grad():  # Adam on the touched rows only, bias-corrected by the table's step count
            for n, p in ref.items():
                keep = rows if n == "table" else torch.arange(len(p))
                g = grads[n][keep]
                m[n][keep] = 0.9 * m[n][keep] + 0.1 * g
                v[n][keep] = 0.999 * v[n][keep] + 0.001 * g * g
                p[keep] -= 0.1 * (m[n][keep] / (1 - 0.9 ** step)) / ((v[n][keep] / (1 - 0.999 ** step)).sqrt() + 1e-8)
    for n in ours:
        torch.testing.assert_close(ours[n], ref[n])
    assert torch.equal(ours["table"][[2, 3, 5]], _params()["table"][[2, 3, 5]])  # never touched: never moved


def test_a_parameter_without_gradient_does_not_step_and_keeps_its_own_count():
    """torch.optim.Adam's semantics, which LATTICE's once-per-epoch feature tables rely on: a
    parameter whose gradient is None neither steps nor advances its bias-correction count."""
    ours, ref = _params(), _params()
    opt = ColumnAdam(ours, set(), OptimConfig(lr=0.1))
    torch_opt = torch.optim.Adam(ref.values(), lr=0.1)
    for step in range(5):
        for params in (ours, ref):
            for n, g in _grads(step).items():
                params[n].grad = g.clone() if n == "dense" or step % 3 == 0 else None
        opt.step()
        opt.zero_grad()
        torch_opt.step()
        torch_opt.zero_grad()
    for n in ours:
        torch.testing.assert_close(ours[n], ref[n])
    assert int(opt.steps["table"]) == 2 and int(opt.steps["dense"]) == 5


def test_lr_decays_per_epoch_as_mmrecs_scheduler():
    opt = ColumnAdam(_params(), set(), OptimConfig(lr=1e-3, lr_decay=0.96, lr_decay_epochs=50))
    for epoch, factor in ((0, 1.0), (50, 0.96), (100, 0.96 ** 2), (25, 0.96 ** 0.5)):
        opt.set_epoch(epoch)
        assert opt.lr == pytest.approx(1e-3 * factor)
