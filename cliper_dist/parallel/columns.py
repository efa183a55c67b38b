"""Which columns a rank owns, P-independent initialisation, and DCP views of column blocks.

Every sharded tensor is split along its last dimension into P contiguous blocks, the
first ``width % P`` ranks taking one column more. Initial values are drawn column by
column from (seed, name, column), so a table starts the same at any world size and a
1-rank run is the same computation as a P-rank run.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import nn
from torch.distributed._shard.sharded_tensor import Shard, ShardedTensor, init_from_local_shards

from cliper_dist.errors import UserError


@dataclass(frozen=True)
class ColumnSplit:
    """Rank ``rank`` of ``world_size`` owns one contiguous block of every last dimension."""

    rank: int = 0
    world_size: int = 1

    def bounds(self, width: int, rank: int | None = None) -> tuple[int, int]:
        """[lo, hi) of the ``width`` columns that ``rank`` (default: this rank) owns."""
        r = self.rank if rank is None else rank
        base, extra = divmod(width, self.world_size)
        lo = r * base + min(r, extra)
        return lo, lo + base + (1 if r < extra else 0)

    def sizes(self, width: int) -> list[int]:
        return [hi - lo for lo, hi in (self.bounds(width, r) for r in range(self.world_size))]

    def check(self, width: int, what: str) -> None:
        """Every rank must own at least one column of every sharded tensor."""
        if width < self.world_size:
            raise UserError(f"{what} has {width} columns, fewer than the {self.world_size} ranks that split "
                            f"them; use at most {width} ranks or a wider {what}")

    def local(self, full: torch.Tensor | np.ndarray) -> torch.Tensor:
        """This rank's block of ``full``'s last dimension, as a contiguous float tensor."""
        lo, hi = self.bounds(full.shape[-1])
        block = full[..., lo:hi]
        if isinstance(block, np.ndarray):
            return torch.from_numpy(np.ascontiguousarray(block, dtype=np.float32))
        return block.contiguous()


class ColumnParameter(nn.Parameter):
    """A trainable column block of a (..., width) tensor; ``width`` is the full last dimension.

    The block shares storage with the tensor it is made from (a torchrec shard stays
    torchrec's), so in-place optimizer steps update that storage.
    ``requires_grad=False``: a frozen block (no optimizer state), checkpointed all the same.
    """

    def __new__(cls, block: torch.Tensor, width: int, requires_grad: bool = True):
        param = super().__new__(cls, block, requires_grad=requires_grad)
        param.width = width
        return param


Sampler = Callable[[torch.Generator, int], torch.Tensor]


def seeded_columns(rows: int, width: int, split: ColumnSplit, seed: int, name: str, sample: Sampler) -> torch.Tensor:
    """This rank's (rows, its columns) block of a (rows, width) tensor drawn column by column:
    column c comes from a generator seeded by (seed, name, c), whatever the world size."""
    lo, hi = split.bounds(width)
    out = torch.empty(rows, hi - lo)
    tag = zlib.crc32(name.encode())
    for c in range(lo, hi):
        gen = torch.Generator().manual_seed(int(np.random.SeedSequence([seed, tag, c]).generate_state(1)[0]))
        out[:, c - lo] = sample(gen, rows)
    return out


def uniform(bound: float) -> Sampler:
    return lambda gen, n: torch.rand(n, generator=gen) * (2 * bound) - bound


def normal(std: float) -> Sampler:
    return lambda gen, n: torch.randn(n, generator=gen) * std


def sharded_view(local: torch.Tensor, width: int, split: ColumnSplit) -> ShardedTensor:
    """``local`` as this rank's shard of a (..., width) ShardedTensor sharing its storage.

    torch.distributed.checkpoint writes each rank's block and, on load, copies the
    overlapping parts of the saved blocks into ``local`` in place, whatever the world size
    of the run that saved them. A collective: every rank calls it in the same order.
    """
    lo, hi = split.bounds(width)
    if local.shape[-1] != hi - lo:
        raise ValueError(f"local block has {local.shape[-1]} columns; rank {split.rank} owns {hi - lo} of {width}")
    offsets = [0] * (local.dim() - 1) + [lo]
    shard = Shard.from_tensor_and_offsets(local, offsets, split.rank)
    return init_from_local_shards([shard], *local.shape[:-1], width)
