"""Small synthetic recommendation data for the train tests (MMRec folders, encode outputs)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from cliper_dist.data.interactions import split_per_user, write_inter


def make_interactions(num_users: int = 40, num_items: int = 30, per_user: int = 7, seed: int = 0):
    """(user, item) pairs with item popularity skew; every user and item appears in train."""
    rng = np.random.default_rng(seed)
    pop = 1.0 / np.arange(1, num_items + 1) ** 0.7
    users, items = [], []
    for u in range(num_users):
        chosen = rng.choice(num_items, size=per_user, replace=False, p=pop / pop.sum())
        users += [u] * per_user
        items += chosen.tolist()
    inter = split_per_user(np.array(users), np.array(items), seed)
    # make sure every item has a training edge (so no item is isolated in the graph)
    missing = np.setdiff1d(np.arange(num_items), inter.item[inter.split == 0])
    for k, i in enumerate(missing):
        inter.user = np.append(inter.user, k % num_users)
        inter.item = np.append(inter.item, i)
        inter.split = np.append(inter.split, 0)
    return inter


def make_mmrec_folder(path: Path, num_users: int = 40, num_items: int = 30, dim: int = 16, seed: int = 0,
                      image: bool = True, text: bool = True, name: str = "tiny") -> Path:
    path.mkdir(parents=True, exist_ok=True)
    inter = make_interactions(num_users, num_items, seed=seed)
    write_inter(path / f"{name}.inter", inter)
    rng = np.random.default_rng(seed + 1)
    if image:
        np.save(path / "image_feat.npy", rng.normal(size=(num_items, dim)).astype(np.float32))
    if text:
        np.save(path / "text_feat.npy", rng.normal(size=(num_items, dim + 8)).astype(np.float32))
    return path


def make_encode_dir(path: Path, num_items: int = 30, views: int = 3, dim: int = 16, seed: int = 2) -> Path:
    """A feature directory shaped like the encode job's output (image.npy, text_views.npy)."""
    path.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    np.save(path / "image.npy", rng.normal(size=(num_items, dim)).astype(np.float32))
    np.save(path / "text_views.npy", rng.normal(size=(views, num_items, dim)).astype(np.float32))
    (path / "manifest.json").write_text(json.dumps({"num_items": num_items, "views": views}))
    return path
