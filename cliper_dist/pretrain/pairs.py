"""Image-text pairs of a dataset's items, in a fixed order that any world size and any resume share.

Training needs random access to items (a new permutation every epoch), which streaming a
tar cannot give. So ``ItemSource`` indexes the shards once (tar headers only: where each
item's ``json`` and ``jpg`` members lie) and reads an item with two seeks. The DataLoader
workers decode and preprocess; the schedule is a pure function of (seed, step):

- epoch e is a permutation of the training items drawn from ``(seed, e)``, cut into
  full global batches (the remainder is left out of that epoch, a different remainder
  every epoch);
- each item of epoch e is paired with one of its C view prompts, drawn from ``(seed, e)``
  too: over epochs the model sees every view of every item;
- rank r of P takes rows ``[r B/P, (r+1) B/P)`` of every global batch.

So step s holds the same global batch at any P, and a resumed run continues at its step
with nothing to restore but the step count.
"""

from __future__ import annotations

import json
import tarfile
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, Sampler

from cliper_dist.data.dataset import DatasetDir
from cliper_dist.data.schema import key_index
from cliper_dist.encode.pipeline import decode_image
from cliper_dist.encode.views import ViewsConfig, item_views
from cliper_dist.errors import UserError


@dataclass(frozen=True)
class Member:
    shard: int  # index into ItemSource.paths
    offset: int  # of the member's data in the tar
    size: int


class ItemSource:
    """Random access to every item's fields and image bytes in a dataset's shards."""

    def __init__(self, dataset: DatasetDir):
        self.paths = [str(dataset.shard_path(n)) for n in dataset.shard_names]
        self.fields: dict[int, Member] = {}
        self.images: dict[int, Member] = {}
        for s, path in enumerate(self.paths):
            with tarfile.open(path, mode="r:") as tar:  # headers only: member data is skipped
                for m in tar.getmembers():
                    key, _, ext = m.name.partition(".")
                    table = {"json": self.fields, "jpg": self.images}.get(ext)
                    if m.isfile() and table is not None:
                        table[_index(key, path)] = Member(s, m.offset_data, m.size)
        missing = dataset.num_items - len(self.fields)
        if missing:
            raise UserError(f"{dataset.path}: {missing} of {dataset.num_items} items have no json record "
                            "in the shards (is the dataset complete? tools/inspect_dataset.py --verify checks it)")

    @property
    def with_image(self) -> np.ndarray:
        """Sorted indices of the items that have an image."""
        return np.array(sorted(self.images), dtype=np.int64)

    def read(self, member: Member) -> bytes:
        """One member's bytes (a file opened per read: nothing to share across forked workers)."""
        with open(self.paths[member.shard], "rb") as f:
            f.seek(member.offset)
            return f.read(member.size)

    def item(self, index: int) -> tuple[dict, bytes | None]:
        image = self.images.get(index)
        return json.loads(self.read(self.fields[index])), None if image is None else self.read(image)


def _index(key: str, shard: str) -> int:
    try:
        return key_index(key)
    except ValueError:
        raise UserError(f"{shard}: member key '{key}' is not an item index (not a dataset shard?)") from None


class ItemPairs(Dataset):
    """Item index -> (uint8 image, its C view prompts, image status): what workers prepare."""

    def __init__(self, source: ItemSource, views: ViewsConfig, image_stage: Callable[[Image.Image], torch.Tensor],
                 fallback: Image.Image):
        self.source, self.views, self.image_stage, self.fallback = source, views, image_stage, fallback

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, list[str], int]:
        """``key`` = (item, view): the prompt of that view, or all C of them for view -1."""
        index, view = key
        fields, image_bytes = self.source.item(index)
        image, status = decode_image(image_bytes, self.fallback)  # a corrupt one: counted by the job
        prompts = [v.prompt for v in item_views(fields, self.views)]
        return self.image_stage(image), prompts if view < 0 else [prompts[view]], status


def collate(tokenizer: Callable) -> Callable:
    """Rows -> (images (B, 3, H, W) uint8, tokens (B * k, L), statuses (B,)), k prompts per row."""
    def fn(rows: list[tuple[torch.Tensor, list[str], int]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        images, prompts, status = zip(*rows)
        return torch.stack(images), tokenizer([p for ps in prompts for p in ps]), torch.tensor(status)
    return fn


class PairSchedule:
    """Which (item, view) pairs make global step s, for every s: see the module docstring."""

    def __init__(self, items: np.ndarray, num_views: int, batch_size: int, seed: int):
        if batch_size > len(items):
            raise UserError(f"pretrain: batch_size={batch_size} is larger than the {len(items)} training items "
                            "(lower batch_size or eval_items)")
        self.items, self.num_views, self.batch_size, self.seed = items, num_views, batch_size, seed
        self._epoch: tuple[int, np.ndarray, np.ndarray] | None = None  # the last epoch drawn

    @property
    def steps_per_epoch(self) -> int:
        return len(self.items) // self.batch_size

    def epoch(self, e: int) -> tuple[np.ndarray, np.ndarray]:
        """(items in epoch e's order, the view each is paired with)."""
        if self._epoch is None or self._epoch[0] != e:
            rng = np.random.default_rng([self.seed, e])
            order = self.items[rng.permutation(len(self.items))]
            self._epoch = (e, order, rng.integers(self.num_views, size=len(self.items)))
        return self._epoch[1], self._epoch[2]

    def global_batch(self, step: int) -> list[tuple[int, int]]:
        order, views = self.epoch(step // self.steps_per_epoch)
        lo = (step % self.steps_per_epoch) * self.batch_size
        return list(zip(order[lo:lo + self.batch_size].tolist(), views[lo:lo + self.batch_size].tolist()))


class RankBatches(Sampler):
    """This rank's rows of global steps ``start..stop-1``: a DataLoader ``batch_sampler``."""

    def __init__(self, schedule: PairSchedule, start: int, stop: int, rank: int, world_size: int):
        self.schedule, self.start, self.stop = schedule, start, stop
        self.rows = slice(rank * schedule.batch_size // world_size, (rank + 1) * schedule.batch_size // world_size)

    def __len__(self) -> int:
        return self.stop - self.start

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for step in range(self.start, self.stop):
            yield self.schedule.global_batch(step)[self.rows]
