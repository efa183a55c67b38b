"""CLIPER's multi-view prompts: one prompt per metadata field plus a global view.

A view fills its field's template (``The product title is {}.``); a missing field fills it
with ``Missing``. The global view joins all field prompts into one text. (The reference
implementation formats only the categories into its global prompt; here it is built from
every field, as the paper describes.)
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cliper_dist.data.schema import TEXT_FIELDS

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
    fields: list[str] = field(default_factory=lambda: list(TEXT_FIELDS))
    templates: dict[str, str] = field(default_factory=_default_templates)
    missing: str = "Missing"
    include_global: bool = True

    @property
    def names(self) -> list[str]:
        return list(self.fields) + ([GLOBAL_VIEW] if self.include_global else [])

    def validate(self) -> None:
        from cliper_dist.errors import UserError

        for f in self.fields:
            if f not in TEXT_FIELDS:
                raise UserError(f"views.fields: unknown field '{f}' (known: {', '.join(TEXT_FIELDS)})")
            if f not in self.templates or "{}" not in self.templates[f]:
                raise UserError(f"views.templates.{f} must be a template containing '{{}}'")
        if not self.names:
            raise UserError("views: no views configured")


def item_prompts(fields: dict[str, str], cfg: ViewsConfig) -> list[str]:
    """The C prompts of one item, in ``cfg.names`` order."""
    prompts = [cfg.templates[f].format(fields.get(f) or cfg.missing) for f in cfg.fields]
    if cfg.include_global:
        prompts.append(" ".join(prompts))
    return prompts
