"""A synthetic catalog with a planted click signal, for tests and benchmarks.

Each item has a latent content vector c_i (``latent`` dims), a brand and a category path; its
feature vector is a fixed random projection of c_i plus noise (what CLIPER features would carry).
Each user has a preference p_u and a bias. A user is shown random items; a shown item is clicked
with probability sigmoid(b_u + b_i + brand_b + 2 p_u . c_i - 0.5): the p_u . c_i term is the
content-dependent part, which item ids learn only from an item's own impressions and features
carry for every item. Ratings: 4-5 for a click, 1-3 otherwise (explicit labels at threshold 4
recover the clicks). Splits: 80 / 10 / 10 per impression, seeded.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cliper_dist import files
from cliper_dist.data import schema
from cliper_dist.data.interactions import Interactions, write_inter


@dataclass
class SyntheticCtr:
    inter: Interactions
    items: list[dict]  # items.jsonl records (index, brand, categories)
    features: np.ndarray  # (I, dim) float32
    num_users: int
    num_items: int


def synthetic_ctr(num_users: int, num_items: int, per_user: int, seed: int = 0, latent: int = 8,
                  feature_dim: int = 32, brands: int = 20, categories: int = 12) -> SyntheticCtr:
    g = np.random.default_rng(seed)
    content = g.normal(size=(num_items, latent)) / np.sqrt(latent)
    pref = g.normal(size=(num_users, latent))
    user_bias, item_bias = g.normal(0, 0.5, num_users), g.normal(0, 0.5, num_items)
    brand = g.integers(brands, size=num_items)
    brand_bias = g.normal(0, 0.5, brands)
    category = g.integers(categories, size=num_items)
    user = np.repeat(np.arange(num_users), per_user)
    item = np.concatenate([g.choice(num_items, per_user, replace=False) for _ in range(num_users)])
    logit = user_bias[user] + item_bias[item] + brand_bias[brand[item]] + 2.0 * (pref[user] * content[item]).sum(1) - 0.5
    click = g.random(len(user)) < 1 / (1 + np.exp(-logit))
    rating = np.where(click, g.integers(4, 6, len(user)), g.integers(1, 4, len(user))).astype(np.float64)
    split = np.searchsorted([0.8, 0.9], g.random(len(user)), side="right").astype(np.int64)
    projection = g.normal(size=(latent, feature_dim))
    features = (content @ projection + 0.1 * g.normal(size=(num_items, feature_dim))).astype(np.float32)
    items = [{"index": i, "item_id": f"S{i}", "brand": f"brand{brand[i]}" if g.random() > 0.1 else None,
              "categories": [["Root", f"cat{category[i] // 4}", f"cat{category[i]}"]]} for i in range(num_items)]
    inter = Interactions(user=user.astype(np.int64), item=item.astype(np.int64), split=split, rating=rating)
    return SyntheticCtr(inter, items, features, num_users, num_items)


def write_dataset(s: SyntheticCtr, out: str | Path, with_rating: bool = True) -> Path:
    """A minimal dataset directory (manifest counts, items.jsonl, interactions.inter) of ``s``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files.write_jsonl(out / schema.ITEMS, s.items)
    inter = s.inter if with_rating else Interactions(s.inter.user, s.inter.item, s.inter.split)
    write_inter(out / schema.INTERACTIONS, inter)
    files.write_json(out / schema.MANIFEST, {"counts": {"users": s.num_users, "items": s.num_items}, "shards": []})
    return out


def write_features(features: np.ndarray, out: str | Path) -> Path:
    """``features`` as an MMRec feature folder (``text_feat.npy``): a ``--features`` directory."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / schema.MMREC_TEXT, features)
    return out
