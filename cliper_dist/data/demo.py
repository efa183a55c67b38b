"""A small synthetic catalog whose images, text and interactions share latent attributes.

Each item has a colour, a motif shape, a category and a brand. The colour and shape are
drawn into the item's image and named in its title and description; the category is in the
text and, faintly, in the image's background stripes; the brand is in the text only. Each
user prefers one colour and one shape, the two attributes that both modalities show;
interactions are sampled from a softmax over those matches plus item popularity.

The default catalog has more items (1000) than its 500 users' 6-18 interactions can teach
ID embeddings well: most items have a handful of training interactions, so whether content
features carry the attributes decides the ranking of the long tail. A random-init CLIP's
features do not (its text features cluster items by shared tokens, brand and category as
much as colour); a CLIP trained on the catalog's own pairs does. That is what the demo
measures.

Interactions also carry order, for sequential recommendation: each user walks through the
categories along one fixed cycle (Bottles -> Bibs -> Rattles -> Blankets -> Strollers ->
Pacifiers -> Bottles ...), one item per category per lap, starting at the category of its first
drawn item. The timestamps (strictly increasing per user) follow that walk; the rows, and so
each user's item set and the seeded random split of the CF demo, are as drawn. The next item's
category is the walk's next one far more often than chance (1 in 6): a next-item model can learn
it, and content features, whose text names the category, can help it.

The output is a *raw* catalog in the generic JSONL format that ``tools/convert.py jsonl``
reads, so the demo exercises the same conversion path as a user's data.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

COLORS = {
    "red": (220, 40, 40), "orange": (245, 140, 20), "yellow": (240, 210, 30), "green": (40, 170, 70),
    "blue": (40, 90, 220), "purple": (140, 60, 190), "pink": (240, 120, 180), "black": (30, 30, 30),
}
SHAPES = ("circle", "square", "triangle", "star", "heart", "diamond")
CATEGORIES = (
    ("Baby Products", "Feeding", "Bottles"), ("Baby Products", "Feeding", "Bibs"),
    ("Baby Products", "Toys", "Rattles"), ("Baby Products", "Nursery", "Blankets"),
    ("Baby Products", "Gear", "Strollers"), ("Baby Products", "Health", "Pacifiers"),
)
BRANDS = ("Lullaby", "Tiny Steps", "Moonbeam", "Cuddle Co", "Little Owl", "Sprout", "Bramble", "Nestling")


@dataclass(frozen=True)
class DemoSpec:
    num_items: int = 1000
    num_users: int = 500
    min_per_user: int = 6
    max_per_user: int = 18
    image_size: int = 96
    seed: int = 0


def _shape_points(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    if shape == "square":
        return [(cx - r, cy - r), (cx + r, cy - r), (cx + r, cy + r), (cx - r, cy + r)]
    if shape == "triangle":
        return [(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)]
    if shape == "diamond":
        return [(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)]
    if shape == "star":
        angles = np.linspace(-np.pi / 2, 1.5 * np.pi, 11)[:-1]
        radii = np.where(np.arange(10) % 2 == 0, r, r * 0.45)
        return [(cx + q * np.cos(a), cy + q * np.sin(a)) for q, a in zip(radii, angles)]
    if shape == "heart":
        t = np.linspace(0, 2 * np.pi, 40)
        x = 16 * np.sin(t) ** 3
        y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
        return [(cx + r * xi / 17, cy + r * yi / 17) for xi, yi in zip(x, y)]
    raise ValueError(shape)


def render_item_image(color: str, shape: str, category_index: int, size: int, rng: np.random.Generator) -> Image.Image:
    """The item's colour and shape on a category-specific background stripe pattern."""
    background = tuple(int(235 - 12 * category_index + v) for v in rng.integers(-8, 8, size=3))
    img = Image.new("RGB", (size, size), background)
    draw = ImageDraw.Draw(img)
    step = 6 + 3 * category_index
    for x in range(0, size, step):
        draw.line([(x, 0), (x, size)], fill=tuple(c - 25 for c in background), width=1)
    cx, cy = size / 2 + rng.uniform(-8, 8), size / 2 + rng.uniform(-8, 8)
    r = size * rng.uniform(0.22, 0.32)
    if shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=COLORS[color], outline=(0, 0, 0))
    else:
        draw.polygon(_shape_points(shape, cx, cy, r), fill=COLORS[color], outline=(0, 0, 0))
    return img


def _interactions(rng: np.random.Generator, spec: DemoSpec, color: np.ndarray, shape: np.ndarray,
                  category: np.ndarray, popularity: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(user, item, timestamp) rows, each user's items as drawn, timestamped along its walk."""
    fav_color = rng.integers(len(COLORS), size=spec.num_users)
    fav_shape = rng.integers(len(SHAPES), size=spec.num_users)
    users, items, times = [], [], []
    for u in range(spec.num_users):
        score = (2.5 * (color == fav_color[u]) + 2.0 * (shape == fav_shape[u]) + popularity)
        p = np.exp(score - score.max())
        p /= p.sum()
        n = int(rng.integers(spec.min_per_user, spec.max_per_user + 1))
        picked = rng.choice(spec.num_items, size=n, replace=False, p=p)
        users.append(np.full(n, u, dtype=np.int64))
        items.append(picked.astype(np.int64))
        times.append(1_600_000_000 + 3600 * category_walk(category[picked]))
    return np.concatenate(users), np.concatenate(items), np.concatenate(times)


def sequential_interactions(spec: DemoSpec = DemoSpec()) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The demo's users at any size, without a catalog: (user, item, timestamp) rows and each
    item's category. The same attributes, preferences and category walk as ``make_demo_catalog``
    (not the same draws: no images are rendered), for benchmarks of sequential models."""
    rng = np.random.default_rng(spec.seed)
    color = rng.integers(len(COLORS), size=spec.num_items)
    shape = rng.integers(len(SHAPES), size=spec.num_items)
    category = rng.integers(len(CATEGORIES), size=spec.num_items)
    rng.integers(len(BRANDS), size=spec.num_items)
    popularity = rng.normal(0.0, 0.7, size=spec.num_items)
    return (*_interactions(rng, spec, color, shape, category, popularity), category)


def category_walk(category: np.ndarray) -> np.ndarray:
    """Each item's step in its user's walk through the categories: lap k visits the k-th item (in
    the given order) of every category the user has, along the cycle 0 -> 1 -> ... -> 0, starting
    at the first item's category. Draws no random numbers, so the items drawn after it are as
    before."""
    k = len(CATEGORIES)
    lap = np.zeros(len(category), dtype=np.int64)
    for c in np.unique(category):
        lap[category == c] = np.arange(int((category == c).sum()))
    offset = (category - category[0]) % k if len(category) else category
    steps = np.empty(len(category), dtype=np.int64)
    steps[np.argsort(lap * k + offset, kind="stable")] = np.arange(len(category))
    return steps


def make_demo_catalog(out_dir: str | Path, spec: DemoSpec = DemoSpec()) -> dict[str, str]:
    """Write ``catalog.jsonl``, ``images/*.png`` and ``interactions.csv`` under ``out_dir``."""
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(spec.seed)
    color_names = list(COLORS)

    color = rng.integers(len(color_names), size=spec.num_items)
    shape = rng.integers(len(SHAPES), size=spec.num_items)
    category = rng.integers(len(CATEGORIES), size=spec.num_items)
    brand = rng.integers(len(BRANDS), size=spec.num_items)
    popularity = rng.normal(0.0, 0.7, size=spec.num_items)

    with open(out / "catalog.jsonl", "w") as f:
        for i in range(spec.num_items):
            c, s, leaf = color_names[color[i]], SHAPES[shape[i]], CATEGORIES[category[i]][-1]
            image_name = f"{i:05d}.png"
            render_item_image(c, s, int(category[i]), spec.image_size, rng).save(out / "images" / image_name)
            item = {
                "item_id": f"DEMO{i:05d}",
                "title": f"{BRANDS[brand[i]]} {c} {s} {leaf.lower()[:-1]}",
                "categories": [list(CATEGORIES[category[i]])],
                "image": image_name,
            }
            if rng.random() > 0.15:  # some items have no brand field, as in real catalogs
                item["brand"] = BRANDS[brand[i]]
            if rng.random() > 0.25:
                item["description"] = (
                    f"A {c} {leaf.lower()[:-1]} decorated with a {s} motif. "
                    f"Made by {BRANDS[brand[i]]} for everyday use; gentle on little hands."
                )
            f.write(json.dumps(item) + "\n")

    with open(out / "interactions.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["user_id", "item_id", "timestamp"])
        for u, i, t in zip(*_interactions(rng, spec, color, shape, category, popularity)):
            writer.writerow([f"U{u:05d}", f"DEMO{i:05d}", int(t)])
    return {"catalog": str(out / "catalog.jsonl"), "images": str(out / "images"),
            "interactions": str(out / "interactions.csv")}
