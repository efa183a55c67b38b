"""Image bytes from a catalog -> bounded-size JPEG bytes, or a reason why not; where image files are."""

from __future__ import annotations

import io
import os
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from cliper_dist.errors import UserError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff")


class ImageRejected(Exception):
    """An image that cannot be used; the message is the reason recorded in the rejects file."""


def reencode_jpeg(data: bytes, max_side: int = 512, quality: int = 90) -> bytes:
    """Decode fully (catching truncated files), convert to RGB, shrink to ``max_side``, JPEG."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.draft("RGB", (max_side, max_side))  # JPEG: decode at a reduced scale, much faster
            img.load()
            img = img.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as e:
        raise ImageRejected(f"undecodable image ({e.__class__.__name__})") from None
    if max(img.size) > max_side:
        img.thumbnail((max_side, max_side), Image.Resampling.BICUBIC)
    out = io.BytesIO()
    img.save(out, format="JPEG", quality=quality)
    return out.getvalue()


def local_path(ref: str, image_dir: str | Path | None) -> Path:
    """A catalog's image path: absolute as is, relative to ``image_dir`` otherwise."""
    path = Path(ref)
    return path if path.is_absolute() or image_dir is None else Path(image_dir) / path


def index_image_dir(image_dir: str | Path) -> dict[str, str]:
    """File name stem -> file name for the images directly in ``image_dir`` (e.g. B00ABC.jpg).

    Amazon and MMRec image folders name files by item id; one listing lets each item find
    its file without a stat per candidate name. Two files with one stem: the first by name wins.
    """
    image_dir = Path(image_dir)
    if not image_dir.is_dir():
        raise UserError(f"image directory not found: {image_dir}")
    index: dict[str, str] = {}
    for name in sorted(os.listdir(image_dir)):
        stem, suffix = os.path.splitext(name)
        if suffix.lower() in IMAGE_SUFFIXES:
            index.setdefault(stem, name)
    return index
