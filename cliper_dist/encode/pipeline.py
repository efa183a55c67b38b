"""Shards -> model-ready batches, decoded and tokenized in DataLoader worker processes.

Each worker takes whole shards (round-robin by worker id) and yields batches that never
span two shards; the last batch of a shard carries ``last=True`` (an empty shard yields one
empty batch). So the job can write a shard's features the moment its last batch is
encoded, which is what makes resuming per shard exact.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from typing import Callable, Iterator

import torch
from PIL import Image
from torch.utils.data import IterableDataset, get_worker_info

from cliper_dist.data.schema import TEXT_FIELDS, key_index
from cliper_dist.data.shards import iter_shard
from cliper_dist.encode.views import ViewsConfig, item_prompts

IMAGE_OK, IMAGE_MISSING, IMAGE_CORRUPT = 0, 1, 2


@dataclass
class EncodeBatch:
    shard: str
    last: bool
    index: torch.Tensor  # (B,) item indices
    image: torch.Tensor  # (B, 3, H, W) preprocessed
    tokens: torch.Tensor  # (B, C, L)
    image_status: torch.Tensor  # (B,) IMAGE_OK / IMAGE_MISSING / IMAGE_CORRUPT
    empty_fields: torch.Tensor  # (B, F) bool, F = len(TEXT_FIELDS)


class ShardBatches(IterableDataset):
    def __init__(self, shards: list[tuple[str, str]], preprocess: Callable, tokenizer: Callable,
                 views: ViewsConfig, batch_size: int, default_image: Image.Image):
        self.shards = shards  # (name, path)
        self.preprocess = preprocess
        self.tokenizer = tokenizer
        self.views = views
        self.batch_size = batch_size
        self.default_image = default_image

    def __iter__(self) -> Iterator[EncodeBatch]:
        info = get_worker_info()
        mine = self.shards if info is None else self.shards[info.id::info.num_workers]
        for name, path in mine:
            pending: list[tuple] = []
            for sample in iter_shard(path):
                pending.append(self._prepare(sample))
                if len(pending) == self.batch_size:
                    yield self._collate(name, pending, last=False)
                    pending = []
            yield self._collate(name, pending, last=True)

    def _prepare(self, sample: dict) -> tuple:
        fields = json.loads(sample["json"])
        status, image = IMAGE_MISSING, self.default_image
        if "jpg" in sample:
            try:
                with Image.open(io.BytesIO(sample["jpg"])) as img:
                    image = img.convert("RGB")
                status = IMAGE_OK
            except (OSError, ValueError, Image.DecompressionBombError):
                status = IMAGE_CORRUPT
        prompts = item_prompts(fields, self.views)
        empty = [not (fields.get(f) or "").strip() for f in TEXT_FIELDS]
        return key_index(sample["__key__"]), self.preprocess(image), self.tokenizer(prompts), status, empty

    def _collate(self, shard: str, rows: list[tuple], last: bool) -> EncodeBatch:
        if not rows:
            return EncodeBatch(shard, last, torch.empty(0, dtype=torch.long), torch.empty(0), torch.empty(0),
                               torch.empty(0, dtype=torch.long), torch.empty(0, len(TEXT_FIELDS), dtype=torch.bool))
        index, images, tokens, status, empty = zip(*rows)
        return EncodeBatch(shard, last, torch.tensor(index), torch.stack(images), torch.stack(tokens),
                           torch.tensor(status), torch.tensor(empty))


def default_image(path: str, size: int = 224) -> Image.Image:
    """The stand-in for items without a usable image: a file, or mid-grey."""
    if path:
        with Image.open(path) as img:
            return img.convert("RGB")
    return Image.new("RGB", (size, size), (128, 128, 128))
