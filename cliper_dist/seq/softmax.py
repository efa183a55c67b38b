"""The full softmax over a row-sharded item table, and full-ranking evaluation on it.

Every rank holds its positions' outputs h (its examples') and its rows E_r of the item table.
Either side can travel; the loss moves whichever is smaller, so its bytes never exceed
min(positions, items) x d each way:

- **positions** (more items than positions in the global batch; a large catalog): the output
  layer is vocabulary-parallel, as Megatron-LM's cross-entropy. The positions are all-gathered
  with their targets, each rank scores them against its own rows only, and one all-gather of
  each rank's partial log-sum-exp and target logit gives each position's exact log-sum-exp. Two
  collectives forward, one backward (the all-reduce of the positions' gradients).
- **rows** (at most as many items as positions; a small catalog): the rows are all-gathered,
  each rank scores its own positions against every item, and the backward reduce-scatters the
  table's gradient to the rows' owners. One collective each way, and none carries positions.

Every rank knows each rank's position and row counts (from the batch and the plan), so both
choose alike and no collective asks for a size; on a shared CPU each collective's latency, not
only its bytes, is what costs. No rank holds more than ``block`` x (its rows or all rows)
logits at once: the backward recomputes them block by block from the saved log-sum-exp.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.distributed as dist


def _world() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def _rank() -> int:
    return dist.get_rank() if _world() > 1 else 0


def gather_rows(x: torch.Tensor, counts: list[int] | None = None) -> tuple[torch.Tensor, list[int]]:
    """Every rank's rows of ``x`` (n_r, ...) concatenated in rank order, and the n_r (gathered
    first unless ``counts`` gives them)."""
    if _world() == 1:
        return x, [x.shape[0]]
    if counts is None:
        gathered = [torch.zeros(1, dtype=torch.long) for _ in range(_world())]
        dist.all_gather(gathered, torch.tensor([x.shape[0]]))
        counts = [int(c) for c in gathered]
    buffer, _ = _start_gather(x, list(counts), async_op=False)
    return _from_slots(buffer, list(counts)), list(counts)


# Ranks exchange uneven row counts in slots of max(counts) rows each, rank r's rows first in slot r.

def _slot_index(counts: list[int], device: torch.device) -> torch.Tensor:
    """Where each rank's rows (in rank order) lie in the slots."""
    width = max(counts)
    return torch.cat([torch.arange(r * width, r * width + n, device=device) for r, n in enumerate(counts)])


def _start_gather(x: torch.Tensor, counts: list[int], async_op: bool):
    """Every rank's ``x`` (counts[rank], ...) in the slots (``_from_slots`` takes them out), and the
    all-gather's work (None unless ``async_op``)."""
    padded = x.new_zeros(max(counts), *x.shape[1:])
    padded[:x.shape[0]] = x
    buffer = x.new_empty(len(counts) * max(counts), *x.shape[1:])
    return buffer, dist.all_gather_single(buffer, padded, async_op=async_op)


def _from_slots(buffer: torch.Tensor, counts: list[int]) -> torch.Tensor:
    return buffer if len(set(counts)) == 1 else buffer[_slot_index(counts, buffer.device)]


def _gather_positions(h: torch.Tensor, targets: torch.Tensor, counts: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Every rank's positions and their targets in one all-gather: the int64 targets ride along as
    the bit patterns of extra float columns (copied, never computed on)."""
    n, d = h.shape
    bits = torch.empty(n, dtype=torch.int64).copy_(targets).view(h.dtype).view(n, 8 // h.element_size())
    packed, _ = gather_rows(torch.cat([h, bits], 1), counts)
    return packed[:, :d], packed[:, d:].contiguous().view(torch.int64).view(-1)


def _gather_equal(x: torch.Tensor) -> torch.Tensor:
    """(world, *x.shape): every rank's ``x`` (the same shape on every rank)."""
    if _world() == 1:
        return x.unsqueeze(0)
    parts = [torch.empty_like(x) for _ in range(_world())]
    dist.all_gather(parts, x)
    return torch.stack(parts)


def _reduce(x: torch.Tensor) -> torch.Tensor:
    if _world() > 1:
        dist.all_reduce(x)
    return x


def _own(counts: list[int]) -> slice:
    start = sum(counts[:_rank()])
    return slice(start, start + counts[_rank()])


class _GatheredPositionsCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h, rows, targets, counts, lo, block):
        hs, ts = _gather_positions(h.detach(), targets, counts)
        n, local = hs.shape[0], rows.shape[0]
        local_lse, target_logit = hs.new_full((n,), -torch.inf), hs.new_zeros(n)
        mine = (ts >= lo) & (ts < lo + local)
        for s in range(0, n, block):
            z = hs[s:s + block] @ rows.T
            if local:
                local_lse[s:s + block] = torch.logsumexp(z, 1)
            m = mine[s:s + block]
            target_logit[s:s + block][m] = z[m.nonzero().squeeze(1), ts[s:s + block][m] - lo]
        parts = _gather_equal(torch.stack([local_lse, target_logit]))  # (world, 2, n)
        lse, target_logit = torch.logsumexp(parts[:, 0], 0), parts[:, 1].sum(0)
        own, total = _own(counts), sum(counts)
        ctx.save_for_backward(hs, rows, ts, lse)
        ctx.own, ctx.total, ctx.lo, ctx.block, ctx.counts = own, total, lo, block, counts
        return (lse[own] - target_logit[own]).sum() / total

    @staticmethod
    def backward(ctx, grad):
        hs, rows, ts, lse = ctx.saved_tensors
        world = _world()
        # A position's gradient scale is its owner's loss scale (``grad``; the same on every rank
        # when each rank back-propagates its loss alone). The one all-reduce of the positions'
        # gradients also carries each rank's scale in its slot; only if they differ is the table's
        # gradient computed again, each position weighted by its owner's scale.
        d_rows, d_h = _softmax_grads(hs, rows, ts, lse, ctx.lo, ctx.block, None)
        slots = hs.new_zeros(world)
        slots[_rank()] = grad
        flat = _reduce(torch.cat([d_h.reshape(-1), slots]))
        d_h, scales = flat[:-world].view_as(d_h), flat[-world:]
        if bool((scales == scales[0]).all()):
            d_rows *= scales[0] / ctx.total
        else:
            weights = torch.repeat_interleave(scales, torch.tensor(ctx.counts)) / ctx.total
            d_rows, _ = _softmax_grads(hs, rows, ts, lse, ctx.lo, ctx.block, weights)
        return d_h[ctx.own] * (grad / ctx.total), d_rows, None, None, None, None


def _softmax_grads(hs: torch.Tensor, rows: torch.Tensor, ts: torch.Tensor, lse: torch.Tensor, lo: int, block: int,
                   weights: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """This rank's rows' share of d(sum of the positions' losses, each times its ``weights``, 1 if
    None) / d rows, and / d hs (to be summed over ranks), block by block from the saved lse."""
    d_rows, d_h = torch.zeros_like(rows), torch.zeros_like(hs)
    mine = (ts >= lo) & (ts < lo + rows.shape[0])
    for s in range(0, hs.shape[0], block):
        hb = hs[s:s + block]
        dz = (hb @ rows.T - lse[s:s + block, None]).exp()
        m = mine[s:s + block]
        dz[m.nonzero().squeeze(1), ts[s:s + block][m] - lo] -= 1.0
        if weights is not None:
            dz *= weights[s:s + block, None]
        d_rows += dz.T @ hb
        d_h[s:s + block] = dz @ rows
    return d_rows, d_h


class _RowExchange:
    """The rows' two collectives of one step, each started as early as its data exists and awaited
    as late as it is needed: the all-gather as soon as the rows are looked up (it runs while the
    encoder does), the reduce-scatter of the table's gradient as soon as the loss's backward has it
    (it runs while the encoder's backward does). A collective then waits only for the slower rank,
    not for a rank's compute between two blocking calls."""

    def __init__(self, row_counts: list[int]):
        self.row_counts = row_counts
        self.work = self.gathered = self.reduced = None

    def _wait(self) -> None:
        if self.work is not None:
            self.work.wait()
            self.work = None

    def start_gather(self, rows: torch.Tensor) -> None:
        if _world() == 1:
            self.gathered = rows
            return
        self.gathered, self.work = _start_gather(rows, self.row_counts, async_op=True)

    def table(self) -> torch.Tensor:
        """Every rank's rows in rank order (I, d); once a step (the loss keeps it for its backward)."""
        self._wait()
        gathered, self.gathered = self.gathered, None
        return gathered if _world() == 1 else _from_slots(gathered, self.row_counts)

    def start_reduce_scatter(self, d_table: torch.Tensor) -> None:
        """Sum ``d_table`` (I, d) over ranks, each rank to keep its own rows' share."""
        if _world() == 1:
            self.reduced = d_table
            return
        width = max(self.row_counts)
        padded = d_table.new_zeros(len(self.row_counts) * width, d_table.shape[1])
        padded[_slot_index(self.row_counts, d_table.device)] = d_table
        self.reduced = d_table.new_empty(width, d_table.shape[1])
        self.work = dist.reduce_scatter_single(self.reduced, padded, async_op=True)

    def own_gradient(self) -> torch.Tensor:
        self._wait()
        reduced, self.reduced = self.reduced, None
        return reduced[:self.row_counts[_rank()]]


class _StartGather(torch.autograd.Function):
    """The rows as they are (forward: their all-gather starts); backward: this rank's rows' gradient
    summed over ranks, from the reduce-scatter the loss's backward started. Made before the encoder
    runs, this node's backward runs after the encoder's (autograd runs later-made nodes first)."""

    @staticmethod
    def forward(ctx, rows, exchange):
        exchange.start_gather(rows.detach())
        ctx.exchange = exchange
        return rows.view_as(rows)

    @staticmethod
    def backward(ctx, _):
        return ctx.exchange.own_gradient(), None


class _GatheredRowsCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h, rows, targets, total, exchange, block):
        table = exchange.table()
        lse, target_logit = h.new_empty(h.shape[0]), h.new_empty(h.shape[0])
        for s in range(0, h.shape[0], block):
            z = h[s:s + block].detach() @ table.T
            lse[s:s + block] = torch.logsumexp(z, 1)
            target_logit[s:s + block] = z.gather(1, targets[s:s + block, None]).squeeze(1)
        ctx.save_for_backward(h.detach(), table, targets, lse)
        ctx.total, ctx.exchange, ctx.block, ctx.rows_shape = total, exchange, block, rows.shape
        return (lse - target_logit).sum() / total

    @staticmethod
    def backward(ctx, grad):
        h, table, targets, lse = ctx.saved_tensors
        d_table, d_h = torch.zeros_like(table), torch.empty_like(h)
        scale = grad / ctx.total  # this rank's own loss scale: its share of the table's gradient carries it
        for s in range(0, h.shape[0], ctx.block):
            hb = h[s:s + ctx.block]
            dz = (hb @ table.T - lse[s:s + ctx.block, None]).exp()
            dz[torch.arange(hb.shape[0], device=dz.device), targets[s:s + ctx.block]] -= 1.0
            dz *= scale
            d_table += dz.T @ hb
            d_h[s:s + ctx.block] = dz @ table
        ctx.exchange.start_reduce_scatter(d_table)
        # the rows' real gradient arrives through _StartGather's backward, once the reduce-scatter is done
        return d_h, grad.new_zeros(()).expand(ctx.rows_shape), None, None, None, None


class SoftmaxRows:
    """This rank's rows of the output layer in one step, moved the way the step's sizes favour.
    Made as soon as the rows are looked up, so that their all-gather (when the rows travel)
    overlaps the encoder; ``cross_entropy`` then scores the step's positions."""

    def __init__(self, rows: torch.Tensor, counts: tuple[int, ...], row_counts: tuple[int, ...]):
        """``rows`` (I_r, d) this rank's rows of the table, ``row_counts`` every rank's I_r (rank r's
        rows follow rank r-1's), ``counts`` every rank's positions in the step."""
        self.counts, self.row_counts = list(counts), list(row_counts)
        self.exchange = _RowExchange(self.row_counts) if sum(row_counts) <= sum(counts) else None
        self.rows = rows if self.exchange is None else _StartGather.apply(rows, self.exchange)

    def cross_entropy(self, h: torch.Tensor, targets: torch.Tensor, block: int = 4096) -> torch.Tensor:
        """This rank's share of the mean full-softmax cross-entropy over the global batch's positions
        (the sum over ranks is the loss): ``h`` (n_r, d) this rank's positions, ``targets`` (n_r,)
        their items; ``block`` positions scored at once. Once per instance: a step's rows serve one loss."""
        if self.exchange is not None:
            if self.exchange.gathered is None:
                raise RuntimeError("SoftmaxRows.cross_entropy called twice: make one SoftmaxRows per loss")
            return _GatheredRowsCrossEntropy.apply(h, self.rows, targets, sum(self.counts), self.exchange, block)
        lo = sum(self.row_counts[:_rank()])
        return _GatheredPositionsCrossEntropy.apply(h, self.rows, targets, self.counts, lo, block)


@torch.no_grad()
def target_ranks(h: torch.Tensor, users: torch.Tensor, targets: torch.Tensor, rows: torch.Tensor, lo: int,
                 history: tuple[np.ndarray, np.ndarray], block: int = 256) -> torch.Tensor:
    """Each of this rank's users' 0-based rank of its target among all items, its history
    (``history`` = (indptr, items) over all users, on every rank) excluded, the target kept;
    an item ranks above the target only with a strictly higher score."""
    hs, counts = gather_rows(h)
    us, _ = gather_rows(users, counts)
    ts, _ = gather_rows(targets, counts)
    indptr, items = history
    local = rows.shape[0]
    ranks = torch.zeros(hs.shape[0], dtype=torch.long)
    for s in range(0, hs.shape[0], block):
        scores = hs[s:s + block] @ rows.T
        t = ts[s:s + block]
        m = (t >= lo) & (t < lo + local)
        target_score = torch.zeros(t.shape[0], dtype=scores.dtype)
        target_score[m] = scores[m.nonzero().squeeze(1), t[m] - lo]
        target_score = _reduce(target_score)
        u = us[s:s + block].numpy()
        starts, ends = indptr[u], indptr[u + 1]
        lengths = ends - starts
        row_of = np.repeat(np.arange(len(u)), lengths)
        seen = items[np.arange(lengths.sum()) + np.repeat(starts - np.cumsum(lengths) + lengths, lengths)]
        keep = (seen >= lo) & (seen < lo + local) & (seen != t.numpy()[row_of])
        scores[torch.from_numpy(row_of[keep]), torch.from_numpy(seen[keep] - lo)] = -torch.inf
        ranks[s:s + block] = (scores > target_score[:, None]).sum(1)
    return _reduce(ranks)[_own(counts)]
