"""Adam on column blocks, with the two row semantics written out.

Adam is elementwise, so running it on each rank's columns is the same update as running
it on the whole tensor. What differs between implementations is which *rows* of a table
step when the gradient reaches only some of them:

- ``rows="all"`` (exact parity with MMRec): every row of every table steps every step, as
  torch's Adam does on a dense gradient. Rows the batch did not reach still move: their
  momentum decays and keeps pushing them.
- ``rows="touched"`` (scalable): a table row steps only in steps whose gradient reaches
  it; its value and moments stay put otherwise (torch.optim.SparseAdam's and TF
  LazyAdam's semantics). Bias correction uses the parameter's step count. For FREEDOM's
  fine-tuned feature tables this replaces a pass over I x D per step by one over the
  batch's items.

A parameter without a gradient in a step (LATTICE's feature tables, trained on one batch
per epoch) does not step, and its step count stays, as in torch.optim.Adam: bias
correction counts each parameter's own steps.

Both use torch's fused Adam kernel; the touched rows are gathered, stepped and written
back, so on those rows the arithmetic is the same as the dense step's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch.optim.adam import adam

from cliper_dist.parallel.columns import ColumnParameter, ColumnSplit, sharded_view


@dataclass
class OptimConfig:
    lr: float = 1e-3  # Adam learning rate, every parameter
    beta1: float = 0.9  # Adam first-moment decay
    beta2: float = 0.999  # Adam second-moment decay
    eps: float = 1e-8  # Adam denominator epsilon
    weight_decay: float = 0.0  # L2 added to the gradient, as torch.optim.Adam(weight_decay=...)
    lr_decay: float = 1.0  # epoch e trains at lr * lr_decay ** (e / lr_decay_epochs) (MMRec's learning_rate_scheduler)
    lr_decay_epochs: int = 50
    rows: Literal["all", "touched"] = "all"  # see cliper_dist/parallel/optim.py


class ColumnAdam:
    """Adam over named parameters. ``tables`` names the row-indexed ones (first dimension =
    rows), to which ``rows="touched"`` applies; the others always step whole.

    Gradients may be dense or sparse COO (a feature-table lookup with ``sparse=True``).
    """

    def __init__(self, params: dict[str, torch.nn.Parameter], tables: set[str], cfg: OptimConfig):
        unknown = tables - set(params)
        if unknown:
            raise ValueError(f"tables {sorted(unknown)} are not parameters")
        self.params, self.tables, self.cfg, self.lr = params, tables, cfg, cfg.lr
        self.exp_avg = {n: torch.zeros_like(p) for n, p in params.items()}
        self.exp_avg_sq = {n: torch.zeros_like(p) for n, p in params.items()}
        # per parameter, as torch.optim.Adam; the fused kernel increments it
        self.steps = {n: torch.zeros((), dtype=torch.float32, device=p.device) for n, p in params.items()}
        # name -> (dense gradient buffer, the rows the last sparse gradient wrote into it)
        self._dense: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def _adam(self, p: torch.Tensor, g: torch.Tensor, m: torch.Tensor, v: torch.Tensor, step: torch.Tensor) -> None:
        c = self.cfg
        adam([p], [g], [m], [v], [], [step], fused=True, amsgrad=False, beta1=c.beta1, beta2=c.beta2, lr=self.lr,
             weight_decay=c.weight_decay, eps=c.eps, maximize=False)

    def _rows(self, name: str, grad: torch.Tensor, touched: dict[str, torch.Tensor]):
        """(rows, their gradient) for a row-sparse step of ``name``; (None, dense gradient)
        for a step of the whole tensor."""
        row_sparse = self.cfg.rows == "touched" and name in self.tables
        if grad.is_sparse:
            # autograd drops the coalesced flag when it stores a sparse gradient; distinct,
            # sorted rows (a lookup of torch.unique'd items) need no sort and no copy
            rows, values = grad._indices()[0], grad._values()
            if not bool((rows[1:] > rows[:-1]).all()):
                grad = grad.coalesce()
                rows, values = grad.indices()[0], grad.values()
            if row_sparse:
                return rows, values
            return None, self._densify(name, rows, values, grad.shape)
        if row_sparse:
            return touched[name], grad.index_select(0, touched[name])
        return None, grad

    def _densify(self, name: str, rows: torch.Tensor, values: torch.Tensor, shape: torch.Size) -> torch.Tensor:
        """The dense gradient of distinct ``rows``, in a buffer kept across steps: only the
        previous step's rows that this step does not overwrite are zeroed, instead of the
        whole table (I x 4096 for FREEDOM's image table)."""
        if name in self._dense:
            buf, last = self._dense[name]
            buf.index_fill_(0, last[~torch.isin(last, rows)], 0.0)
        else:
            buf = torch.zeros(shape, dtype=values.dtype, device=values.device)
        self._dense[name] = (buf, rows)
        return buf.index_copy_(0, rows, values)

    @torch.no_grad()
    def step(self, touched: dict[str, torch.Tensor] | None = None) -> None:
        """One Adam step. ``touched[name]``: the rows of table ``name`` that this step's
        gradient reaches, for ``rows="touched"`` tables with a dense gradient (a sparse
        gradient names its rows itself)."""
        for name, p in self.params.items():
            if p.grad is None:
                continue
            m, v = self.exp_avg[name], self.exp_avg_sq[name]
            rows, grad = self._rows(name, p.grad, touched or {})
            if rows is None:
                self._adam(p, grad, m, v, self.steps[name])
                continue
            p_rows, m_rows, v_rows = p.index_select(0, rows), m.index_select(0, rows), v.index_select(0, rows)
            self._adam(p_rows, grad, m_rows, v_rows, self.steps[name])
            p.index_copy_(0, rows, p_rows)
            m.index_copy_(0, rows, m_rows)
            v.index_copy_(0, rows, v_rows)

    def set_epoch(self, epoch: int) -> None:
        """The epoch's learning rate under ``lr_decay``."""
        self.lr = self.cfg.lr * self.cfg.lr_decay ** (epoch / self.cfg.lr_decay_epochs)

    def zero_grad(self) -> None:
        for p in self.params.values():
            p.grad = None


def checkpoint_views(params: dict[str, torch.nn.Parameter], optimizer: ColumnAdam, split: ColumnSplit,
                     skip: tuple[str, ...] = ()) -> dict:
    """DCP views of the parameters (but ``skip``, held elsewhere: torchrec's tables) and of
    every trained parameter's Adam moments: ShardedTensors of column blocks, replicated tensors as
    they are. Loading writes into the live tensors. A collective: build it once, on every rank."""
    def view(name: str, t: torch.Tensor):
        p = params[name]
        return sharded_view(t, p.width, split) if isinstance(p, ColumnParameter) else t

    return {"params": {n: view(n, p) for n, p in params.items() if n not in skip},
            "optim": {n: {"exp_avg": view(n, optimizer.exp_avg[n]), "exp_avg_sq": view(n, optimizer.exp_avg_sq[n])}
                      for n in optimizer.params}}
