"""Shards -> model-ready batches, decoded and tokenized in DataLoader worker processes.

Each worker takes whole shards (round-robin by worker id) and yields batches that never
span two shards; the last batch of a shard carries ``last=True`` (an empty shard yields one
empty batch). So the job can write a shard's features the moment its last batch is
encoded, which is what makes resuming per shard exact, and a shard's batches are the same
whatever the number of ranks or workers.

Images cross the process boundary as uint8 (a quarter of float32's bytes); the final
``ToTensor`` + ``Normalize`` of open_clip's preprocessing run on the model's device
(``ImageNormalizer``), with the same operations in the same order, so the values equal the
stock transform's.
"""

from __future__ import annotations

import dataclasses
import io
import json
from typing import Callable, Iterator

import numpy as np
import torch
from PIL import Image
from torch.utils.data import IterableDataset, get_worker_info

from cliper_dist.compat import ensure_torchvision_importable
from cliper_dist.data.schema import TEXT_FIELDS, key_index
from cliper_dist.data.shards import read_shard
from cliper_dist.encode.views import TextConfig, ViewsConfig, ViewTokenizer, field_value, item_views
from cliper_dist.errors import UserError

ensure_torchvision_importable()
from torchvision.transforms import Compose, Normalize, ToTensor  # noqa: E402  (needs the fix first)

IMAGE_OK, IMAGE_MISSING, IMAGE_CORRUPT = 0, 1, 2


@dataclasses.dataclass
class EncodeBatch:
    shard: str
    last: bool
    index: torch.Tensor  # (B,) item indices
    image: torch.Tensor  # (B, 3, H, W) uint8, resized and cropped; normalised on the device
    tokens: torch.Tensor  # (T, L) one row per text chunk, T >= B * C
    owner: torch.Tensor  # (T,) the (item, view) slot b * C + c each chunk is summed into
    image_status: torch.Tensor  # (B,) IMAGE_OK / IMAGE_MISSING / IMAGE_CORRUPT
    empty_fields: torch.Tensor  # (B, F) bool, F = len(TEXT_FIELDS)

    def pin_memory(self) -> "EncodeBatch":
        """Called by the DataLoader's pinning thread (``pin_memory=True``, GPU runs)."""
        return dataclasses.replace(self, image=self.image.pin_memory(), tokens=self.tokens.pin_memory())


class ImageNormalizer:
    """The device half of open_clip's eval transform: uint8 (B, 3, H, W) -> normalised float."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor):
        self.mean = mean.view(-1, 1, 1)
        self.std = std.view(-1, 1, 1)

    def __call__(self, images: torch.Tensor, device: torch.device) -> torch.Tensor:
        x = images.to(device, non_blocking=True).float().div_(255)  # what ToTensor does
        return x.sub_(self.mean.to(device)).div_(self.std.to(device))  # what Normalize does


def split_preprocess(preprocess: Callable) -> tuple[Callable[[Image.Image], torch.Tensor], ImageNormalizer]:
    """open_clip's ``Compose([..., ToTensor, Normalize])`` -> (PIL -> uint8 stage, device stage)."""
    steps = getattr(preprocess, "transforms", None)
    if not (steps and len(steps) >= 2 and isinstance(steps[-2], ToTensor) and isinstance(steps[-1], Normalize)):
        raise UserError(f"unexpected image preprocessing (want Compose ending in ToTensor, Normalize): {preprocess}")
    pil_steps = Compose(list(steps[:-2]))
    norm = steps[-1]

    def to_uint8(image: Image.Image) -> torch.Tensor:
        array = np.array(pil_steps(image), dtype=np.uint8)  # (H, W, 3), or (H, W) for mode L
        return torch.from_numpy(array.reshape(*array.shape[:2], -1)).permute(2, 0, 1).contiguous()

    return to_uint8, ImageNormalizer(torch.as_tensor(norm.mean, dtype=torch.float32),
                                     torch.as_tensor(norm.std, dtype=torch.float32))


class ShardBatches(IterableDataset):
    def __init__(self, shards: list[tuple[str, str]], image_stage: Callable[[Image.Image], torch.Tensor],
                 tokenizer: Callable, context_length: int, views: ViewsConfig, text: TextConfig,
                 batch_size: int, default_image: Image.Image):
        self.shards = shards  # (name, path)
        self.image_stage = image_stage
        self.tokens = ViewTokenizer(tokenizer, context_length, text)
        self.views = views
        self.batch_size = batch_size
        self.default_image = default_image

    def __iter__(self) -> Iterator[EncodeBatch]:
        info = get_worker_info()
        mine = self.shards if info is None else self.shards[info.id::info.num_workers]
        for name, path in mine:
            pending: list[tuple] = []
            for sample in read_shard(path):
                if len(pending) == self.batch_size:  # more follows: this full batch is not the last
                    yield self._collate(name, pending, last=False)
                    pending = []
                pending.append(self._prepare(sample))
            yield self._collate(name, pending, last=True)

    def _prepare(self, sample: dict) -> tuple:
        fields = json.loads(sample["json"])
        image, status = decode_image(sample.get("jpg"), self.default_image)
        chunks = [self.tokens.view_ids(v) for v in item_views(fields, self.views)]
        empty = [not field_value(fields, f, self.views) for f in TEXT_FIELDS]
        return key_index(sample["__key__"]), self.image_stage(image), chunks, status, empty

    def _collate(self, shard: str, rows: list[tuple], last: bool) -> EncodeBatch:
        if not rows:
            return EncodeBatch(shard, last, torch.empty(0, dtype=torch.long), torch.empty(0, dtype=torch.uint8),
                               torch.empty(0, dtype=torch.long), torch.empty(0, dtype=torch.long),
                               torch.empty(0, dtype=torch.long), torch.empty(0, len(TEXT_FIELDS), dtype=torch.bool))
        index, images, chunks, status, empty = zip(*rows)
        texts, owner = [], []
        for b, views in enumerate(chunks):
            for c, pieces in enumerate(views):
                texts.extend(pieces)
                owner.extend([b * len(views) + c] * len(pieces))
        return EncodeBatch(shard, last, torch.tensor(index), torch.stack(images), self.tokens.rows(texts),
                           torch.tensor(owner), torch.tensor(status), torch.tensor(empty))


def decode_image(data: bytes | None, fallback: Image.Image) -> tuple[Image.Image, int]:
    """(RGB image, IMAGE_OK), or ``fallback`` with IMAGE_MISSING (no bytes) / IMAGE_CORRUPT."""
    if data is None:
        return fallback, IMAGE_MISSING
    try:
        with Image.open(io.BytesIO(data)) as img:
            return img.convert("RGB"), IMAGE_OK
    except (OSError, ValueError, Image.DecompressionBombError):
        return fallback, IMAGE_CORRUPT


def default_image(path: str, size: int = 224) -> Image.Image:
    """The stand-in for items without a usable image: a file, or mid-grey."""
    if path:
        try:
            with Image.open(path) as img:
                return img.convert("RGB")
        except OSError as e:
            raise UserError(f"default_image {path}: {e}") from None
    return Image.new("RGB", (size, size), (128, 128, 128))
