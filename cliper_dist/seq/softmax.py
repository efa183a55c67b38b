"""The full softmax over a row-sharded item table, and full-ranking evaluation on it.

Every rank holds its positions' outputs h (its examples') and its rows E_r of the item table.
Either side can travel; the loss moves whichever is smaller, so its bytes never exceed
min(positions, items) x d each way:

- **positions** (more items than positions in the global batch; a large catalog): the output
  layer is vocabulary-parallel, as Megatron-LM's cross-entropy. The positions are all-gathered
  with their targets, each rank scores them against its own rows only, and one all-gather of
  each rank's partial log-sum-exp and target logit gives each position's exact log-sum-exp. Two
  collectives forward, one backward (the all-reduce of the positions' gradients).
- **rows** (at most as many items as positions; a small catalog): every rank looks up every row
  (``rows_travel``; the step's ``rows`` key), so torchrec's own all-to-alls carry them, beside the
  inputs' rows, and carry their gradients back to the owners, where fbgemm sums them. Each rank
  scores its own positions against every item: the loss itself makes no collective.

Every rank knows each rank's position and row counts (from the batch and the plan), so both
choose alike and no collective asks for a size; on a shared CPU each collective's latency, not
only its bytes, is what costs (``benchmarks/sync_cost.py``). No rank holds more than ``block`` x
(its rows or all rows) logits at once: the backward recomputes them block by block from the saved
log-sum-exp.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.distributed as dist


def _world() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def _rank() -> int:
    return dist.get_rank() if _world() > 1 else 0


def rows_travel(num_items: int, counts: tuple[int, ...]) -> bool:
    """Whether a step's rows travel (every rank looks up every row) rather than its positions: at
    most as many items as the global batch has positions (``counts``: every rank's)."""
    return num_items <= sum(counts)


def gather_rows(x: torch.Tensor, counts: list[int] | None = None) -> tuple[torch.Tensor, list[int]]:
    """Every rank's rows of ``x`` (n_r, ...) concatenated in rank order, and the n_r (gathered
    first unless ``counts`` gives them). Uneven counts travel in slots of max(counts) rows."""
    if _world() == 1:
        return x, [x.shape[0]]
    if counts is None:
        gathered = [torch.zeros(1, dtype=torch.long) for _ in range(_world())]
        dist.all_gather(gathered, torch.tensor([x.shape[0]]))
        counts = [int(c) for c in gathered]
    width = max(counts)
    padded = x.new_zeros(width, *x.shape[1:])
    padded[:x.shape[0]] = x
    slots = x.new_empty(len(counts) * width, *x.shape[1:])
    dist.all_gather_single(slots, padded)
    if len(set(counts)) == 1:
        return slots, list(counts)
    return torch.cat([slots[r * width:r * width + n] for r, n in enumerate(counts)]), list(counts)


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


class _LocalCrossEntropy(torch.autograd.Function):
    """This rank's positions against every row: the rows' gradient goes back through the lookup."""

    @staticmethod
    def forward(ctx, h, rows, targets, total, block):
        h, rows = h.detach(), rows.detach()
        lse, target_logit = h.new_empty(h.shape[0]), h.new_empty(h.shape[0])
        for s in range(0, h.shape[0], block):
            z = h[s:s + block] @ rows.T
            lse[s:s + block] = torch.logsumexp(z, 1)
            target_logit[s:s + block] = z.gather(1, targets[s:s + block, None]).squeeze(1)
        ctx.save_for_backward(h, rows, targets, lse)
        ctx.total, ctx.block = total, block
        return (lse - target_logit).sum() / total

    @staticmethod
    def backward(ctx, grad):
        h, rows, targets, lse = ctx.saved_tensors
        d_rows, d_h = _softmax_grads(h, rows, targets, lse, 0, ctx.block, None)
        scale = grad / ctx.total
        return d_h * scale, d_rows * scale, None, None, None


def cross_entropy(h: torch.Tensor, targets: torch.Tensor, rows: torch.Tensor, counts: tuple[int, ...],
                  row_counts: tuple[int, ...], block: int = 256) -> torch.Tensor:
    """This rank's share of the mean full-softmax cross-entropy over the global batch's positions
    (the sum over ranks is the loss): ``h`` (n_r, d) this rank's positions, ``targets`` (n_r,) their
    items, ``counts`` every rank's n_r; ``rows`` every row of the table (I, d) when they travel
    (``rows_travel``), else this rank's (I_r, d), ``row_counts`` every rank's I_r (rank r's rows
    follow rank r-1's); ``block`` positions scored at once."""
    if rows_travel(sum(row_counts), counts):
        if rows.shape[0] != sum(row_counts):
            raise ValueError(f"the rows travel this step: every rank passes all {sum(row_counts)}; got {rows.shape[0]}")
        return _LocalCrossEntropy.apply(h, rows, targets, sum(counts), block)
    return _GatheredPositionsCrossEntropy.apply(h, rows, targets, list(counts), sum(row_counts[:_rank()]), block)


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
