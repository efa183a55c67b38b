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


def clean_categories(value: Any) -> str:
    """A string, a list of names, or a list of category paths -> unique names joined by ', '."""
    if value is None:
        return ""
    if isinstance(value, str):
        return clean_text(value)
    names: list[str] = []
    for entry in value:
        for name in (entry if isinstance(entry, (list, tuple)) else [entry]):
            name = clean_text(name)
            if name and name not in names:
                names.append(name)
    return ", ".join(names)


def text_fields(raw: dict[str, Any]) -> dict[str, str]:
    """The cleaned title/brand/categories/description of a raw record ('' when absent)."""
    out = {f: clean_text(raw.get(f)) for f in TEXT_FIELDS if f != "categories"}
    out["categories"] = clean_categories(raw.get("categories"))
    return {f: out[f] for f in TEXT_FIELDS}
