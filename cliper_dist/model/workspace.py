"""Full-size blocks that every training step reuses, by the name of what they hold.

On CPU a fresh block above glibc's mmap threshold is page-faulted in anew on every step;
a block is reallocated only when its shape changes. One forward and its backward use the
workspace at a time: the backward takes the forward's blocks, which are free again by then.

A name is a role; each is a pair of blocks, ``NAME.users`` and ``NAME.items``
(``Workspace.pair``):

- ``HORNER``: the alternating results of a propagation, layer l written into
  ``HORNER[l % 2]`` while layer l - 1's is read from the other;
- ``SEED``: a backward's row gradients scattered to full size, into which its last layer
  accumulates: the block that is handed over as the tables' gradient;
- ``SOURCE_SEEDS``: the two seeds of the backward by source (even and odd layers);
- ``ITEM_GRAPH_SEED``: the item-graph rows' gradient at full size, the operand of S^T G.
"""

from __future__ import annotations

from typing import Iterable

import torch

HORNER = ("horner_even", "horner_odd")
SEED = "seed"
SOURCE_SEEDS = ("seed_even", "seed_odd")
ITEM_GRAPH_SEED = "item_graph_seed"


class Workspace:
    def __init__(self):
        self._blocks: dict[str, torch.Tensor] = {}
        self._lent: dict[int, str] = {}  # data_ptr -> name of a block handed over as a gradient

    def block(self, name: str, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
        buf = self._blocks.get(name)
        if buf is None or buf.shape != shape or buf.device != like.device:
            buf = self._blocks[name] = like.new_empty(shape)
        return buf

    def pair(self, name: str, user_shape: tuple[int, ...], item_shape: tuple[int, ...],
             like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The (users, items) blocks of role ``name``, of ``like``'s dtype and device."""
        return self.block(f"{name}.users", user_shape, like), self.block(f"{name}.items", item_shape, like)

    def release(self, tensor: torch.Tensor) -> None:
        """Hand ``tensor``'s block over to its new holder (a gradient; autograd takes a tensor
        nobody else holds without copying it) until ``take_back``."""
        for name, buf in list(self._blocks.items()):
            if buf is tensor:
                del self._blocks[name]
                self._lent[tensor.data_ptr()] = name

    def take_back(self, tensors: Iterable[torch.Tensor]) -> None:
        """Reclaim the lent blocks among ``tensors`` (the gradients, once the optimizer has
        used them), so the next step reuses their memory instead of allocating: on CPU a
        freed block's memory is split up by small allocations and the heap grows."""
        for t in tensors:
            name = self._lent.get(t.data_ptr())
            if name is not None:
                self._blocks[name] = t
        self._lent = {}

    def clear(self) -> None:
        """Free every block (evaluation needs the memory; the next step allocates them again)."""
        self._blocks, self._lent = {}, {}
