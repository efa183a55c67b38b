"""CLIPER's views: templates, the global view, missing fields, cleaning and chunk-and-sum."""

from __future__ import annotations

import pytest

from cliper_dist.encode.encoder import load_encoder
from cliper_dist.encode.views import (ViewsConfig, ViewText, item_prompts, item_views, token_fit,
                                      view_chunks)
from cliper_dist.errors import UserError

FIELDS = {"title": "Moonbeam red star rattle", "brand": "Moonbeam", "categories": "Baby Products, Toys, Rattles",
          "description": "A red rattle."}


def test_prompts_fill_templates_and_the_global_view_joins_every_field():
    prompts = item_prompts(FIELDS, ViewsConfig())
    assert prompts[:4] == ["The product title is Moonbeam red star rattle.", "The product brand is Moonbeam.",
                           "The product categories are Baby Products, Toys, Rattles.",
                           "The product description is A red rattle."]
    assert prompts[4] == " ".join(prompts[:4])  # not only the categories, as in the reference code


def test_missing_blank_and_dirty_fields():
    prompts = item_prompts({"title": "Bib &amp; <b>cloth</b>\n  set", "brand": "  ", "categories": None},
                           ViewsConfig(missing="Unknown"))
    assert prompts[0] == "The product title is Bib & cloth set."
    assert prompts[1] == "The product brand is Unknown."
    assert prompts[2] == "The product categories are Unknown."
    assert prompts[3] == "The product description is Unknown"
    raw = item_prompts({"title": "a &amp; b"}, ViewsConfig(clean=False, include_global=False))
    assert raw[0] == "The product title is a &amp; b." and len(raw) == 4


def test_views_config_is_validated():
    with pytest.raises(UserError, match="unknown field"):
        ViewsConfig(fields=["colour"]).validate()
    with pytest.raises(UserError, match="templates.brand"):
        ViewsConfig(templates={**ViewsConfig().templates, "brand": "no slot"}).validate()


def test_long_text_is_cut_into_prefixed_chunks_only_when_it_does_not_fit():
    view = ViewText("The product description is {}", "x" * 500)
    assert view_chunks(view, lambda t: True, 230) == [view.prompt]
    chunks = view_chunks(view, lambda t: False, 230)
    assert chunks == ["The product description is " + "x" * 230] * 2 + ["The product description is " + "x" * 40]
    glob = item_views({**FIELDS, "description": "y" * 300}, ViewsConfig())[-1]
    assert view_chunks(glob, lambda t: False, 230) == [glob.value[i:i + 230] for i in range(0, len(glob.value), 230)]


def test_token_fit_counts_start_and_end_tokens(tiny_clip):
    import torch

    tokenizer = load_encoder(*tiny_clip, torch.device("cpu")).tokenizer
    fits = token_fit(tokenizer, 77)
    assert fits("a " * 75) and not fits("a " * 76)
