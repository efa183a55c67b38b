"""Linear layers of the column-parallel layout, by where their input and output columns live.

- ``ColumnProjection``: input split over ranks by feature column, output in this rank's
  embedding columns (one reduce-scatter): a feature table's projection. ``ConcatProjection``
  is one over several such inputs side by side (MMGCN's layers).
- ``PartialLinear``: input split over ranks by column, output whole but as this rank's
  partial sum (Megatron's row-parallel linear before its all-reduce). The model returns it
  among its ``partials`` and the engine's all-reduce completes it; ``sum_to_local_columns``
  completes it into embedding columns (evaluation).
- ``ReplicatedLinear``: input whole and the same on every rank (a completed sum), so the
  layer is too: its gradient is the same on every rank and never crosses the network.

Every weight starts the same at any world size (``seeded_columns``). ``weight_init`` is
PyTorch's Xavier-normal or Xavier-uniform of the whole (out, in) weight, or nn.Linear's
default; biases use nn.Linear's U(+-1/sqrt(in)) unless ``bias_bound`` says otherwise.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from cliper_dist.parallel.columns import ColumnParameter, ColumnSplit, Sampler, normal, seeded_columns, uniform
from cliper_dist.parallel.comm import sum_gradients, sum_partials, sum_to_local_columns

WeightInit = Literal["xavier_normal", "xavier_uniform", "default"]


def weight_sampler(in_width: int, out_width: int, kind: WeightInit) -> Sampler:
    """The sampler of an (out, in) weight; "default" is nn.Linear's, U(+-1/sqrt(in))."""
    if kind == "xavier_normal":
        return normal(math.sqrt(2.0 / (in_width + out_width)))
    if kind == "default":
        return uniform(1.0 / math.sqrt(in_width))
    return uniform(math.sqrt(6.0 / (in_width + out_width)))


def row_norms(squares: torch.Tensor, split: ColumnSplit) -> torch.Tensor:
    """Row norms of a column-split tensor from this rank's per-row sums of squares (one
    all-reduce), floored at 1e-12 as F.normalize does. Each rank divides its own columns by
    them, so their gradient is summed back over ranks."""
    return sum_gradients(sum_partials(squares, split), split).sqrt().clamp_min(1e-12)


def _bias_bound(in_width: int, bias_bound: float | None) -> float:
    return 1.0 / math.sqrt(in_width) if bias_bound is None else bias_bound


class ColumnProjection(nn.Module):
    """y = W x + b from D feature columns to d embedding columns (nn.Linear(D, d)): W split
    over D, b over d. ``forward`` takes this rank's feature columns of x and returns its
    embedding columns of y; ``bias_scale`` (n,) multiplies b per row (a propagated bias).
    ``fan_in``: W is a block of a wider layer's weight, initialised as that layer's;
    ``bias=False``: no b."""

    def __init__(self, in_width: int, out_width: int, split: ColumnSplit, seed: int, name: str,
                 bias_bound: float | None = None, weight_init: WeightInit = "xavier_normal",
                 fan_in: int | None = None, bias: bool = True):
        super().__init__()
        split.check(in_width, f"{name} input")
        self.split = split
        fan_in = fan_in or in_width
        self.weight = ColumnParameter(seeded_columns(out_width, in_width, split, seed, f"{name}.weight",
                                                     weight_sampler(fan_in, out_width, weight_init)), in_width)
        self.bias = ColumnParameter(seeded_columns(1, out_width, split, seed, f"{name}.bias",
                                                   uniform(_bias_bound(fan_in, bias_bound)))[0],
                                    out_width) if bias else None

    def partial(self, x: torch.Tensor) -> torch.Tensor:
        """This rank's partial sum of W x (whole output width), from its feature columns of x."""
        return x @ self.weight.T

    def forward(self, x: torch.Tensor, bias_scale: torch.Tensor | None = None) -> torch.Tensor:
        y = sum_to_local_columns(self.partial(x), self.split)
        if self.bias is None:
            return y
        return y + (self.bias if bias_scale is None else bias_scale[:, None] * self.bias)


class ConcatProjection(nn.Module):
    """nn.Linear on column-split inputs side by side, y = W [x_1, ..., x_k] + b, into this
    rank's output columns: W is held as one ``ColumnProjection`` block per input, initialised
    as the whole layer's, and the partial products meet in one reduce-scatter."""

    def __init__(self, in_widths: tuple[int, ...], out_width: int, split: ColumnSplit, seed: int, name: str,
                 weight_init: WeightInit = "xavier_normal"):
        super().__init__()
        fan_in = sum(in_widths)
        self.split = split
        self.parts = nn.ModuleList(ColumnProjection(w, out_width, split, seed, f"{name}.{j}", weight_init=weight_init,
                                                    fan_in=fan_in, bias=False) for j, w in enumerate(in_widths))
        self.bias = ColumnParameter(seeded_columns(1, out_width, split, seed, f"{name}.bias",
                                                   uniform(_bias_bound(fan_in, None)))[0], out_width)

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        partial = sum(part.partial(x) for part, x in zip(self.parts, xs, strict=True))
        return sum_to_local_columns(partial, self.split) + self.bias


class PartialLinear(nn.Module):
    """y = W [x_1 ; ... ; x_k] + b over k column-split inputs of ``in_width`` columns each, as
    this rank's partial sum of the whole (n, out) output. W (out, k * in) is held as its k
    blocks, each split over its input columns; b is split over the output columns, each rank
    adding its own, so that the ranks' partials sum to W x + b."""

    def __init__(self, blocks: int, in_width: int, out_width: int, split: ColumnSplit, seed: int, name: str,
                 weight_init: WeightInit = "xavier_uniform"):
        super().__init__()
        split.check(in_width, f"{name} input")
        split.check(out_width, f"{name} output")
        fan_in = blocks * in_width
        weight = seeded_columns(blocks * out_width, in_width, split, seed, f"{name}.weight",
                                weight_sampler(fan_in, out_width, weight_init))
        self.weight = ColumnParameter(weight.view(blocks, out_width, -1), in_width)
        self.bias = ColumnParameter(seeded_columns(1, out_width, split, seed, f"{name}.bias",
                                                   uniform(_bias_bound(fan_in, None)))[0], out_width)
        lo, hi = split.bounds(out_width)
        self._pad = (lo, out_width - hi)

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        y = sum(x @ w.T for x, w in zip(xs, self.weight, strict=True))
        return y + F.pad(self.bias, self._pad)


class ReplicatedLinear(nn.Module):
    """nn.Linear held whole on every rank, initialised from (seed, name) alone."""

    def __init__(self, in_width: int, out_width: int, seed: int, name: str,
                 weight_init: WeightInit = "xavier_uniform"):
        super().__init__()
        whole = ColumnSplit()
        self.weight = nn.Parameter(seeded_columns(out_width, in_width, whole, seed, f"{name}.weight",
                                                  weight_sampler(in_width, out_width, weight_init)))
        self.bias = nn.Parameter(seeded_columns(1, out_width, whole, seed, f"{name}.bias",
                                                uniform(_bias_bound(in_width, None)))[0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)
