"""The item features a job reads: the encode job's CLIPER views, or one ready feature per modality.

Two layouts are read, memory-mapped (nothing is copied until the model reads its blocks):

- an encode output directory (``manifest.json``): ``image.npy`` (I, D) and
  ``text_views.npy`` (C, I, D), the raw view embeddings; they are fused on reading
  (``modalities``: the model's ``fusion`` and ``tau``);
- an MMRec data folder, or the adapt job's output (same file names): ``image_feat.npy``
  (I, Dv) and/or ``text_feat.npy`` (I, Dt), one ready feature per modality (the text is a
  single view: fusion is bypassed).

Every array is checked before training starts: row count = number of items, all finite.
Every read goes through ``read_block``, so that the pages of a memory-mapped array it reads
do not stay in the process's RSS.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cliper_dist import dirs
from cliper_dist.data import schema
from cliper_dist.data.features import FeatureStore, ItemVectors, read_block
from cliper_dist.data.fusion import Fusion, get_fusion
from cliper_dist.errors import UserError


@dataclass
class Features:
    image: np.ndarray | None  # (I, Dv)
    text_views: np.ndarray | None  # (C, I, D): raw CLIPER views, fused by the model
    text: np.ndarray | None  # (I, Dt): one ready text feature (MMRec), fusion bypassed
    source: str
    num_items: int

    def describe(self) -> str:
        parts = [f"{name} {tuple(a.shape)}" for name, a in
                 (("image N x D", self.image), ("text_views C x N x D", self.text_views), ("text N x D", self.text))
                 if a is not None]
        return f"{self.source}: " + ", ".join(parts)

    def views_of(self, items: slice | np.ndarray) -> torch.Tensor:
        """Raw view embeddings of ``items``, (n, C, D)."""
        views = read_block(self.text_views, (slice(None), items), np.float32)
        return torch.from_numpy(np.ascontiguousarray(views.transpose(1, 0, 2)))

    def image_vectors(self) -> ItemVectors | None:
        return None if self.image is None else ItemVectors.of(self.image)

    def text_vectors(self, fusion: Fusion, tau: float) -> ItemVectors | None:
        """The ready text feature, or the views fused by ``fusion.fixed``, a block of items at a
        time; None without text."""
        if self.text is not None:
            return ItemVectors.of(self.text)
        if self.text_views is None:
            return None

        def fused(items: slice | np.ndarray) -> torch.Tensor:
            image = None if self.image is None else torch.from_numpy(read_block(self.image, items, np.float32))
            return fusion.fixed(self.views_of(items), image, tau)

        return ItemVectors(self.num_items, fused(slice(0, 1)).shape[1], fused)

    def modalities(self, fusion_name: str, tau: float) -> tuple[ItemVectors | None, ItemVectors | None]:
        """(text, image), read a block of items at a time: the views fused by the named
        fusion's ``fixed`` (or the ready text feature), the image."""
        fusion = get_fusion(fusion_name)
        if fusion.needs_image and self.text_views is not None and self.image is None:
            raise UserError(f"fusion {fusion_name} weighs the text views by their similarity to the image: "
                            "it needs image features")
        return self.text_vectors(fusion, tau), self.image_vectors()


def has_mmrec_features(path: str | Path) -> bool:
    return any((Path(path) / name).is_file() for name in (schema.MMREC_IMAGE, schema.MMREC_TEXT))


def check_array(arr: np.ndarray, name: str, num_items: int, item_axis: int = 0, block: int = 16384) -> None:
    """Row count and finiteness, checked a block of items at a time (arrays may be memory-mapped)."""
    if arr.ndim < 2:
        raise UserError(f"{name}: expected a 2-D (items x dim) array, got shape {arr.shape}")
    rows = arr.shape[item_axis]
    if rows != num_items:
        raise UserError(f"{name} has {rows} item rows, but the dataset has {num_items} items "
                        f"(features must be aligned by item index)")
    for lo in range(0, rows, block):
        part = read_block(arr, (slice(None),) * item_axis + (slice(lo, min(rows, lo + block)),))
        bad = ~np.isfinite(part)
        if bad.any():
            item = lo + int(np.argwhere(bad)[0][item_axis])
            raise UserError(f"{name} contains NaN or infinite values ({int(bad.sum())} entries in items "
                            f"{lo}..{lo + part.shape[item_axis] - 1}, first at item {item})")


def load_features(path: str | Path, num_items: int) -> Features:
    path = Path(path)
    found = dirs.expect(path, (dirs.FEATURES, dirs.ADAPTED, dirs.MMREC), "--features")
    if found == dirs.ADAPTED and not (path / schema.MANIFEST).is_file():
        raise UserError(f"{path}: the adapt job has not finished (no {schema.MANIFEST}); rerun it to resume")
    if found == dirs.FEATURES:
        store = FeatureStore.open(path)
        image, views = store.array(schema.IMAGE), store.array(schema.TEXT_VIEWS)
        check_array(image, str(path / f"{schema.IMAGE}.npy"), num_items)
        check_array(views, str(path / f"{schema.TEXT_VIEWS}.npy"), num_items, item_axis=1)
        if image.shape[1] != views.shape[2]:
            raise UserError(f"{path}: image dim {image.shape[1]} != text-view dim {views.shape[2]}")
        return Features(image, views, None, str(path), num_items)
    # an MMRec folder or adapted features: one ready feature per modality, either may be absent
    arrays = {name: FeatureStore(path).array(Path(name).stem) for name in (schema.MMREC_IMAGE, schema.MMREC_TEXT)
              if (path / name).is_file()}
    if not arrays:
        raise UserError(f"{path}: no features found (expected an encode output directory with {schema.MANIFEST}, "
                        f"or {schema.MMREC_IMAGE} / {schema.MMREC_TEXT})")
    for name, array in arrays.items():
        check_array(array, str(path / name), num_items)
    return Features(arrays.get(schema.MMREC_IMAGE), None, arrays.get(schema.MMREC_TEXT), str(path), num_items)


def load_job_features(data: str, features: str, num_items: int, who: str) -> Features:
    """A job's item features: ``features``, or else the ``data`` folder when it is an MMRec folder
    holding them. ``who`` names the job or model in the error when there are none."""
    feat_dir = features or (data if has_mmrec_features(data) else "")
    if not feat_dir:
        raise UserError(f"{who} needs features=FEATURES_DIR (the encode job's output, or an MMRec folder with "
                        "image_feat.npy/text_feat.npy)")
    return load_features(feat_dir, num_items)
