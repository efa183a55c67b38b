"""The demo catalog carries real, attribute-driven signal in images, text and interactions."""

import csv
import json

import numpy as np
from PIL import Image

from cliper_dist.data.demo import COLORS, SHAPES, DemoSpec, make_demo_catalog


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
