"""The demo catalog carries real, attribute-driven signal in images, text and interactions."""

import csv
import json

import numpy as np
from PIL import Image

from cliper_dist.data.demo import CATEGORIES, COLORS, SHAPES, DemoSpec, make_demo_catalog, sequential_interactions


def test_demo_catalog_is_consistent_and_informative(tmp_path):
    paths = make_demo_catalog(tmp_path, DemoSpec(num_items=60, num_users=80, seed=3))
    items = [json.loads(line) for line in open(paths["catalog"])]
    assert len(items) == 60 and len({i["item_id"] for i in items}) == 60
    assert any("brand" not in i for i in items) and any("description" not in i for i in items)
    # The colour named in the title is the colour drawn in the image.
    for item in items[:10]:
        color = next(c for c in COLORS if f" {c} " in item["title"])
        pixels = np.asarray(Image.open(tmp_path / "images" / item["image"]).convert("RGB")).reshape(-1, 3)
        assert (np.abs(pixels - np.array(COLORS[color])).sum(1) < 10).mean() > 0.05
    rows = list(csv.DictReader(open(paths["interactions"])))
    per_user = {}
    for r in rows:
        per_user.setdefault(r["user_id"], []).append(r["item_id"])
    assert len(per_user) == 80 and all(6 <= len(v) <= 18 for v in per_user.values())
    # Users concentrate on their favourite colour and shape far above chance (1 in 8, 1 in 6),
    # not on the category, which the image barely shows.
    def top_share(attribute: dict) -> float:
        return float(np.mean([max(np.unique([attribute[i] for i in v], return_counts=True)[1]) / len(v)
                              for v in per_user.values()]))

    color_of = {i["item_id"]: next(c for c in COLORS if f" {c} " in i["title"]) for i in items}
    shape_of = {i["item_id"]: next(s for s in SHAPES if f" {s} " in i["title"]) for i in items}
    category_of = {i["item_id"]: str(i["categories"]) for i in items}
    assert top_share(color_of) > 0.4 and top_share(shape_of) > 0.35
    assert top_share(category_of) < top_share(shape_of) - 0.05  # both have 6 values


def _walk_share(user, item, timestamp, category) -> float:
    """How often a user's next item (by time) is in the category after its last one's."""
    order = np.lexsort((timestamp, user))
    same_user = user[order][1:] == user[order][:-1]
    nxt = category[item[order][1:]] == (category[item[order][:-1]] + 1) % len(CATEGORIES)
    return float(nxt[same_user].mean())


def test_demo_users_walk_the_categories_in_time(tmp_path):
    """Order is planted: the next item's category follows the cycle far above chance (1 in 6), the
    timestamps never tie within a user, and the sizeable synthetic users walk the same way."""
    paths = make_demo_catalog(tmp_path, DemoSpec(num_items=60, num_users=80, image_size=16, seed=3))
    items = [json.loads(line) for line in open(paths["catalog"])]
    category = np.array([[list(c) for c in CATEGORIES].index(i["categories"][0]) for i in items])
    rows = list(csv.DictReader(open(paths["interactions"])))
    user = np.array([int(r["user_id"][1:]) for r in rows])
    item = np.array([int(r["item_id"][4:]) for r in rows])
    timestamp = np.array([int(r["timestamp"]) for r in rows])
    assert len(np.unique(user * 10**10 + timestamp)) == len(rows)
    assert _walk_share(user, item, timestamp, category) > 0.5
    user, item, timestamp, category = sequential_interactions(DemoSpec(num_items=200, num_users=300, seed=1))
    assert len(np.unique(user * 10**10 + timestamp)) == len(user) and category.shape == (200,)
    assert _walk_share(user, item, timestamp, category) > 0.5
