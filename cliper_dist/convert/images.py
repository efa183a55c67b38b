"""Image bytes from a catalog -> bounded-size JPEG bytes, or a reason why not."""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image, UnidentifiedImageError


class ImageRejected(Exception):
    """An image that cannot be used; the message is the reason recorded in the rejects file."""


def reencode_jpeg(data: bytes, max_side: int = 512, quality: int = 90) -> bytes:
    """Decode fully (catching truncated files), convert to RGB, shrink to ``max_side``, JPEG."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            img = img.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as e:
        raise ImageRejected(f"undecodable image ({e.__class__.__name__})") from None
    if max(img.size) > max_side:
        img.thumbnail((max_side, max_side), Image.Resampling.BICUBIC)
    out = io.BytesIO()
    img.save(out, format="JPEG", quality=quality)
    return out.getvalue()


def read_local_image(ref: str, image_dir: str | Path | None) -> bytes:
    path = Path(ref) if Path(ref).is_absolute() or image_dir is None else Path(image_dir) / ref
    try:
        return path.read_bytes()
    except OSError as e:
        raise ImageRejected(f"image file unreadable: {path} ({e.strerror or e.__class__.__name__})") from None
