"""Item text: raw catalog metadata normalised into the four text fields (convert), and cleaned
again where the views read it (encode)."""

from __future__ import annotations

import html
import re
from typing import Any

from cliper_dist.data.schema import TEXT_FIELDS

_TAG = re.compile(r"<[^>]+>")
_SPACE = re.compile(r"\s+")


def clean_text(value: Any) -> str:
    """HTML entities decoded, tags dropped, whitespace folded; lists joined with spaces."""
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return " ".join(t for t in (clean_text(v) for v in value) if t)
    text = html.unescape(html.unescape(str(value)))  # catalogs often double-escape (&amp;reg;)
    return _SPACE.sub(" ", _TAG.sub(" ", text)).strip()


def category_paths(value: Any) -> list[list[str]]:
    """The distinct category paths of a raw value, names cleaned, in order: a list of lists is one
    path each (Amazon 2014), a flat list one path (Amazon 2023), a string one path of its
    ", "-separated names."""
    if not value:
        return []
    if isinstance(value, str):
        entries = [clean_text(value).split(", ")]
    elif any(isinstance(e, (list, tuple)) for e in value):
        entries = [e if isinstance(e, (list, tuple)) else [e] for e in value]
    else:
        entries = [value]
    paths: list[list[str]] = []
    for entry in entries:
        path = [name for name in map(clean_text, entry) if name]
        if path and path not in paths:
            paths.append(path)
    return paths


def clean_categories(value: Any) -> str:
    """A string, a list of names, or a list of category paths -> unique names joined by ', '."""
    if isinstance(value, str):
        return clean_text(value)
    return ", ".join(dict.fromkeys(name for path in category_paths(value) for name in path))


def text_fields(raw: dict[str, Any]) -> dict[str, str]:
    """The cleaned title/brand/categories/description of a raw record ('' when absent)."""
    out = {f: clean_text(raw.get(f)) for f in TEXT_FIELDS if f != "categories"}
    out["categories"] = clean_categories(raw.get("categories"))
    return {f: out[f] for f in TEXT_FIELDS}
