"""CLIPER's multi-view prompts: one prompt per metadata field plus a global view, and long text.

A view fills its field's template (``The product title is {}.``); a missing or empty field
fills it with ``Missing``. The global view joins all field prompts into one text. (The
reference implementation formats only the categories into its global prompt; here it is
built from every field, as the paper describes.)

Text longer than the text encoder's context is handled in one of two ways (``text.mode``):

- ``chunk`` (CLIPER's reference code): a prompt that does not fit is cut into
  ``chunk_chars``-character pieces of its field value, each piece is re-prefixed with the
  view's template, and the piece embeddings are summed. The global view has no template of
  its own, so its pieces are plain slices of the joined prompts.
- ``truncate``: the tokenizer cuts the prompt at the context length. Together with a longer
  ``text.context_length`` (Long-CLIP: 248 positions, see ``encoder``) this is the
  long-context way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch

from cliper_dist.data.text import clean_text
from cliper_dist.data.schema import TEXT_FIELDS
from cliper_dist.errors import UserError

GLOBAL_VIEW = "global"


def _default_templates() -> dict[str, str]:
    return {
        "title": "The product title is {}.",
        "brand": "The product brand is {}.",
        "categories": "The product categories are {}.",
        "description": "The product description is {}",
    }


@dataclass
class ViewsConfig:
    fields: list[str] = field(default_factory=lambda: list(TEXT_FIELDS))  # one view per field, in this order
    templates: dict[str, str] = field(default_factory=_default_templates)  # field -> prompt with one {}
    missing: str = "Missing"  # fills the template of an absent or empty field
    include_global: bool = True  # add CLIPER's global view (all fields in one prompt)
    clean: bool = True  # decode HTML entities, drop tags, fold whitespace before templating

    @property
    def names(self) -> list[str]:
        return list(self.fields) + ([GLOBAL_VIEW] if self.include_global else [])

    def validate(self) -> None:
        for f in self.fields:
            if f not in TEXT_FIELDS:
                raise UserError(f"views.fields: unknown field '{f}' (known: {', '.join(TEXT_FIELDS)})")
            if f not in self.templates or self.templates[f].count("{}") != 1:
                raise UserError(f"views.templates.{f} must be a template containing '{{}}' once")
        if not self.names:
            raise UserError("views: no views configured")


@dataclass
class TextConfig:
    mode: Literal["chunk", "truncate"] = "chunk"  # what happens to a prompt longer than the context
    chunk_chars: int = 230  # piece length of chunk mode (CLIPER's reference value)
    context_length: int = 0  # token positions; 0 = the checkpoint's own (248 for Long-CLIP), larger = stretch
    keep_positions: int = 20  # positions kept as they are when stretching (Long-CLIP)

    def validate(self) -> None:
        if self.chunk_chars < 1:
            raise UserError("text.chunk_chars must be >= 1")
        if self.context_length < 0 or self.keep_positions < 0:
            raise UserError("text.context_length and text.keep_positions must be >= 0")


@dataclass(frozen=True)
class ViewText:
    """One view of one item: ``template.format(value)`` is its prompt."""

    template: str
    value: str

    @property
    def prompt(self) -> str:
        return self.template.format(self.value)


def field_value(fields: dict[str, str], name: str, cfg: ViewsConfig) -> str:
    """The text a field contributes ('' when absent or blank after cleaning)."""
    value = fields.get(name) or ""
    return clean_text(value) if cfg.clean else value.strip()


def item_views(fields: dict[str, str], cfg: ViewsConfig) -> list[ViewText]:
    """The C views of one item, in ``cfg.names`` order."""
    views = [ViewText(cfg.templates[f], field_value(fields, f, cfg) or cfg.missing) for f in cfg.fields]
    if cfg.include_global:
        views.append(ViewText("{}", " ".join(v.prompt for v in views)))
    return views


def view_pieces(view: ViewText, chunk_chars: int) -> list[str]:
    """Chunk mode's texts for a view that does not fit: the template filled with each slice."""
    value = view.value
    return [view.template.format(value[i:i + chunk_chars]) for i in range(0, len(value), chunk_chars)]


class ViewTokenizer:
    """Views -> token rows, tokenizing every text once (BPE with ftfy is the costly step).

    Needs open_clip's BPE ``SimpleTokenizer`` (every CLIP model's) for chunk mode, which must
    count tokens; other tokenizers only truncate.
    """

    def __init__(self, tokenizer, context_length: int, text: TextConfig):
        self.tokenizer = tokenizer
        self.context_length = context_length
        self.text = text
        self.bpe = (hasattr(tokenizer, "encode") and hasattr(tokenizer, "sot_token_id")
                    and getattr(tokenizer, "reduction_fn", None) is None)
        if text.mode == "chunk" and not self.bpe:
            raise UserError(f"text.mode=chunk needs open_clip's SimpleTokenizer; this model uses "
                            f"{type(tokenizer).__name__} (use text.mode=truncate)")

    def view_ids(self, view: ViewText) -> list:
        """One entry per chunk: BPE ids without start/end tokens (or the text, without BPE)."""
        if not self.bpe:
            return [view.prompt]
        ids = self.tokenizer.encode(view.prompt)
        if self.text.mode == "truncate" or len(ids) + 2 <= self.context_length:
            return [ids]
        return [self.tokenizer.encode(p) for p in view_pieces(view, self.text.chunk_chars)]

    def rows(self, entries: list) -> torch.Tensor:
        """(T, context_length) tokens, cut like ``SimpleTokenizer.__call__`` (end token kept)."""
        if not self.bpe:
            return self.tokenizer(entries)
        out = torch.zeros(len(entries), self.context_length, dtype=torch.long)
        sot, eot = self.tokenizer.sot_token_id, self.tokenizer.eot_token_id
        for i, ids in enumerate(entries):
            row = [sot, *ids[:self.context_length - 2], eot]
            out[i, :len(row)] = torch.tensor(row)
        return out
