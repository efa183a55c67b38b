"""Column splits and P-independent initialisation (one process; the collectives run at 2-4 real
ranks in tests/model/test_parity.py)."""

from __future__ import annotations

import pytest
import torch

from cliper_dist.errors import UserError
from cliper_dist.parallel.columns import ColumnSplit, normal, seeded_columns


@pytest.mark.parametrize("width,world", [(8, 1), (8, 3), (64, 8), (5, 5)])
def test_column_blocks_tile_the_width(width, world):
    bounds = [ColumnSplit(r, world).bounds(width) for r in range(world)]
    assert bounds[0][0] == 0 and bounds[-1][1] == width
    assert all(hi == lo2 for (_, hi), (lo2, _) in zip(bounds, bounds[1:]))
    assert max(hi - lo for lo, hi in bounds) - min(hi - lo for lo, hi in bounds) <= 1
    assert ColumnSplit(0, world).sizes(width) == [hi - lo for lo, hi in bounds]


def test_a_rank_without_columns_is_refused():
    with pytest.raises(UserError, match="has 4 columns, fewer than the 8 ranks"):
        ColumnSplit(0, 8).check(4, "model.embedding_dim")


def test_initial_values_do_not_depend_on_the_world_size():
    whole = seeded_columns(6, 10, ColumnSplit(), 3, "t", normal(1.0))
    for world in (2, 3, 4):
        blocks = [seeded_columns(6, 10, ColumnSplit(r, world), 3, "t", normal(1.0)) for r in range(world)]
        assert torch.equal(torch.cat(blocks, dim=1), whole)
    assert not torch.equal(seeded_columns(6, 10, ColumnSplit(), 3, "u", normal(1.0)), whole)
