"""The collectives of the column-parallel layout, with the backward each one needs.

Two situations arise when per-rank partial results (sums over a rank's own columns) are
added up across ranks:

- ``sum_partials``: every rank then uses the sum whole and identically (the batch's
  scores feed the same loss on every rank). The loss gradient is then already complete on
  every rank, so the backward is the identity.
- ``sum_to_local_columns``: every rank then uses only its own columns of the sum (a
  projection whose output columns meet the rank's embedding columns). Each rank's
  gradient covers only its columns, so the backward gathers the full gradient. Both
  directions are one all-to-all of column blocks (a reduce-scatter, an all-gather).

Megatron-LM calls the same pair "reduce from" and "copy to" the tensor-parallel region.
The third, ``sum_gradients``, is its "copy to" alone: a tensor already the same on every
rank (LATTICE's learned item graph) that each rank applies to its own columns, so that
each rank's gradient of it is a partial sum.
Collectives run on the tensors' own device (gloo on CPU, nccl on CUDA). With one rank
every function returns its input. ``STATS`` counts what each rank sends and how long it
waits in these collectives (benchmarks and tools/plan.py's calibration read it).
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import torch
import torch.distributed as dist

from cliper_dist.parallel.columns import ColumnSplit


@dataclass
class CommStats:
    """This rank's collectives since the last ``reset``: calls, bytes it sent (as the standard
    algorithms send them: ring all-reduce 2 (P-1)/P of the tensor, all-to-all what goes to
    the other ranks, broadcast (P-1) copies from the root), and seconds spent in them
    (waiting for the slowest rank included)."""

    calls: int = 0
    bytes_sent: int = 0
    seconds: float = 0.0

    def reset(self) -> None:
        self.calls, self.bytes_sent, self.seconds = 0, 0, 0.0


STATS = CommStats()


@contextmanager
def _counted(bytes_sent: float) -> Iterator[None]:
    start = time.perf_counter()
    yield
    STATS.seconds += time.perf_counter() - start
    STATS.calls += 1
    STATS.bytes_sent += int(bytes_sent)


def _nbytes(x: torch.Tensor) -> int:
    return x.numel() * x.element_size()


def _all_reduce(x: torch.Tensor) -> torch.Tensor:
    x = x.contiguous().clone()
    world = dist.get_world_size()
    with _counted(2 * (world - 1) / world * _nbytes(x)):
        dist.all_reduce(x)
    return x


class _SumPartials(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        return _all_reduce(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return grad


def sum_partials(x: torch.Tensor, split: ColumnSplit) -> torch.Tensor:
    """sum over ranks of ``x``; its consumers run identically on every rank (backward: identity)."""
    return x if split.world_size == 1 else _SumPartials.apply(x)


def _reduce_scatter_columns(x: torch.Tensor, split: ColumnSplit) -> torch.Tensor:
    """This rank's columns of the sum over ranks of ``x`` (..., width): one all-to-all that
    sends each rank its columns of every rank's ``x``, then a local sum. Half the traffic
    of an all-reduce, and column blocks may differ in width (no reduce_scatter does that)."""
    width, world = x.shape[-1], split.world_size
    flat = x.reshape(-1, width)
    n, sizes = flat.shape[0], split.sizes(width)
    send = torch.cat([flat[:, lo:hi].reshape(-1) for lo, hi in (split.bounds(width, q) for q in range(world))])
    mine = sizes[split.rank]
    recv = x.new_empty(world * n * mine)
    with _counted((n * width - n * mine) * x.element_size()):
        dist.all_to_all_single(recv, send, output_split_sizes=[n * mine] * world,
                               input_split_sizes=[n * s for s in sizes])
    return recv.view(world, n, mine).sum(0).view(*x.shape[:-1], mine)


def _all_columns(local: torch.Tensor, width: int, split: ColumnSplit) -> torch.Tensor:
    """The whole (..., width) tensor from every rank's column block: one all-to-all."""
    world, n = split.world_size, local.numel() // max(local.shape[-1], 1)
    sizes = split.sizes(width)
    recv = local.new_empty(n * width)
    with _counted((world - 1) * _nbytes(local)):
        dist.all_to_all_single(recv, local.reshape(-1).repeat(world), output_split_sizes=[n * s for s in sizes],
                               input_split_sizes=[local.numel()] * world)
    blocks = recv.split([n * s for s in sizes])
    return torch.cat([b.view(n, s) for b, s in zip(blocks, sizes)], dim=1).view(*local.shape[:-1], width)


class _SumToLocalColumns(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, split: ColumnSplit) -> torch.Tensor:
        ctx.split, ctx.width = split, x.shape[-1]
        return _reduce_scatter_columns(x.contiguous(), split)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return _all_columns(grad.contiguous(), ctx.width, ctx.split), None


def sum_to_local_columns(x: torch.Tensor, split: ColumnSplit) -> torch.Tensor:
    """This rank's columns of the sum over ranks of ``x`` (backward: the full gradient,
    gathered from every rank's columns)."""
    if split.world_size == 1:
        return x
    return _SumToLocalColumns.apply(x, split)


class _SumGradients(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return _all_reduce(grad)


def sum_gradients(x: torch.Tensor, split: ColumnSplit) -> torch.Tensor:
    """``x`` (the same on every rank) unchanged; backward: its gradient summed over ranks."""
    return x if split.world_size == 1 else _SumGradients.apply(x)


@torch.no_grad()
def gather_columns(local: torch.Tensor, width: int, split: ColumnSplit) -> torch.Tensor:
    """The whole (..., width) tensor on every rank, from each rank's column block, as a view
    of a (width, ...) buffer: there each rank's block is a contiguous row block, which its
    owner writes in place and broadcasts. Nothing but the result is allocated, where an
    all-to-all would hold a send copy and a receive buffer beside it (evaluation gathers the
    I x d item matrix)."""
    if split.world_size == 1:
        return local
    out = local.new_empty(width, *local.shape[:-1])
    for q in range(split.world_size):
        lo, hi = split.bounds(width, q)
        if q == split.rank:
            out[lo:hi].copy_(local.movedim(-1, 0))
        with _counted((split.world_size - 1) * _nbytes(out[lo:hi]) if q == split.rank else 0):
            dist.broadcast(out[lo:hi], src=q)
    return out.movedim(0, -1)


@torch.no_grad()
def rows_to_owners(local: torch.Tensor, width: int, rows_of: list[torch.Tensor], split: ColumnSplit) -> torch.Tensor:
    """Full-width rows, delivered to the rank that asked for them.

    ``local`` is this rank's (N, columns) block; ``rows_of[q]`` are the rows rank q needs
    (the same lists on every rank). Returns (len(rows_of[rank]), width): one all-to-all
    that moves each rank's columns of the others' rows, never a whole table.
    """
    mine = rows_of[split.rank]
    if split.world_size == 1:
        return local[mine]
    send = local.index_select(0, torch.cat(rows_of)).reshape(-1)
    sizes = split.sizes(width)
    recv = local.new_empty(len(mine) * width)
    with _counted((send.numel() - len(mine) * local.shape[1]) * send.element_size()):
        dist.all_to_all_single(recv, send, output_split_sizes=[len(mine) * s for s in sizes],
                               input_split_sizes=[len(rows) * local.shape[1] for rows in rows_of])
    blocks = recv.split([len(mine) * s for s in sizes])
    return torch.cat([b.view(len(mine), s) for b, s in zip(blocks, sizes)], dim=1)
