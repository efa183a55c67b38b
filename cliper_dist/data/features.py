"""Read access to a feature store (see ``schema``): its typed manifest and memory-mapped arrays.

The encode job writes the store (``encode/store.py``); training, the reports and the tools
read it through here only, so the directory contract lives beside the dataset's.
"""

from __future__ import annotations

import dataclasses
import mmap
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch

from cliper_dist import dirs, files
from cliper_dist.data import schema
from cliper_dist.errors import UserError


def release_pages(array: np.ndarray) -> None:
    """Unmap the pages that reading a memory-mapped ``array`` brought into this process. They
    stay in the page cache, but a blockwise pass over a file-backed array would otherwise
    leave the whole file in the process's RSS (5.5 GB of features at 300k items). No-op for
    an array in memory."""
    mapped = getattr(array, "_mmap", None)
    if mapped is not None:
        mapped.madvise(mmap.MADV_DONTNEED)


def read_block(array: np.ndarray, key, dtype: np.dtype | None = None) -> np.ndarray:
    """A copy of ``array[key]`` (as ``dtype``), its mapped pages then released (``release_pages``)."""
    block = np.array(array[key], dtype=dtype)
    release_pages(array)
    return block


@dataclass(frozen=True)
class ItemVectors:
    """One modality's item vectors, (num_items, width) float32, read a block of items at a time.

    The features of 300k items are gigabytes: a rank that needs some of their rows (an item
    block for its kNN index) or some columns (its block of a fine-tuned table) reads them
    through this, and never holds them whole.
    """

    num_items: int
    width: int
    read: Callable[[slice | np.ndarray], torch.Tensor]  # the rows of some items, (n, width) float32
    block: int = 8192  # items per read: 5 views x 768 floats of 8192 items, and the fusion's temporaries: ~0.5 GB

    @classmethod
    def of(cls, table: np.ndarray | torch.Tensor) -> "ItemVectors":
        """A table's rows: a tensor's as they are, an array's (memory-mapped or not) as float32 copies."""
        if isinstance(table, torch.Tensor):
            return cls(table.shape[0], table.shape[1], lambda key: table[key])
        return cls(table.shape[0], table.shape[1], lambda key: torch.from_numpy(read_block(table, key, np.float32)))

    def blocks(self, lo: int = 0, hi: int | None = None) -> Iterator[tuple[int, torch.Tensor]]:
        """(first item, rows) of consecutive blocks of at most ``block`` items in [lo, hi)."""
        hi = self.num_items if hi is None else hi
        for start in range(lo, hi, self.block):
            yield start, self.read(slice(start, min(hi, start + self.block)))

    def whole(self) -> torch.Tensor:
        return torch.cat([rows for _, rows in self.blocks()]) if self.num_items else self.read(slice(0, 0))

    def columns(self, lo: int, hi: int) -> torch.Tensor:
        """Columns [lo, hi) of every item, (num_items, hi - lo), contiguous."""
        out = torch.empty(self.num_items, hi - lo)
        for start, rows in self.blocks():
            out[start:start + len(rows)] = rows[:, lo:hi]
        return out


@dataclass(frozen=True)
class FeatureCounts:
    items: int
    missing_image: int  # items encoded with the default image
    corrupt_image: int
    empty_text_fields: dict[str, int]  # items with the field empty, per text field
    chunked_views: dict[str, int]  # items whose view was longer than the context, per view


@dataclass(frozen=True)
class FeatureManifest:
    """``manifest.json`` of a feature store: what made the features, and what they hold."""

    model: str  # open_clip model name
    model_arg: str  # --model as given (a name or a config .json)
    checkpoint: str | None
    checkpoint_sha256: str | None
    embed_dim: int
    context_length: int
    views: list[str]  # text views, in text_views.npy order
    templates: dict[str, str]
    missing_text: str
    text: dict[str, Any]  # the encode job's TextConfig
    tau: float  # of similarity.npy and the stored fusions
    dtype: str
    compute_dtype: str
    precision: str
    dataset: str  # absolute path of the encoded dataset
    counts: FeatureCounts
    arrays: list[str]
    derived: dict[str, str]  # views of the arrays that are not stored
    timing: dict[str, float]

    def write(self, directory: str | Path) -> None:
        files.write_json(Path(directory) / schema.MANIFEST, dataclasses.asdict(self))

    @classmethod
    def read(cls, directory: str | Path) -> "FeatureManifest":
        path = Path(directory) / schema.MANIFEST
        try:
            tree = files.read_json(path)
            return cls(**{**tree, "counts": FeatureCounts(**tree["counts"])})
        except (ValueError, TypeError, KeyError) as e:
            raise UserError(f"{path}: not a feature-store manifest of this version ({e}); re-run the encode "
                            "job into a new directory") from None


@dataclass(frozen=True)
class FeatureStore:
    """Memory-mapped arrays of a finished encode run."""

    path: Path

    @classmethod
    def open(cls, path: str | Path, flag: str = "--features") -> "FeatureStore":
        path = Path(path)
        dirs.expect(path, (dirs.FEATURES,), flag)
        if not (path / schema.MANIFEST).is_file():
            raise UserError(f"not a feature directory (no {schema.MANIFEST}; did the encode job finish?): {path}")
        return cls(path)

    @cached_property
    def manifest(self) -> FeatureManifest:
        return FeatureManifest.read(self.path)

    def array(self, name: str) -> np.ndarray:
        path = self.path / f"{name}.npy"
        if not path.is_file():
            raise UserError(f"feature array missing: {path}")
        try:
            return np.load(path, mmap_mode="r")
        except (OSError, ValueError) as e:
            raise UserError(f"{path}: not a readable .npy array ({e})") from None

    def fused_concat(self) -> np.ndarray:
        """Concat fusion (N, C * D), built from ``text_views`` (not stored: it would duplicate them)."""
        views = self.array(schema.TEXT_VIEWS)
        return np.ascontiguousarray(views.transpose(1, 0, 2)).reshape(views.shape[1], -1)
