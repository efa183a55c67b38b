"""CLIPER's views: templates, the global view, missing fields, cleaning and chunk-and-sum."""

from __future__ import annotations

import pytest
import torch

from cliper_dist.encode.encoder import load_encoder
from cliper_dist.encode.views import (TextConfig, ViewsConfig, ViewText, ViewTokenizer, item_views,
                                      view_pieces)
from cliper_dist.errors import UserError

def item_prompts(fields, cfg):
    return [v.prompt for v in item_views(fields, cfg)]


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


def test_chunk_pieces_are_prefixed_slices_of_the_value():
    view = ViewText("The product description is {}", "x" * 500)
    assert view_pieces(view, 230) == ["The product description is " + "x" * 230] * 2 + ["The product description is " + "x" * 40]
    glob = item_views({**FIELDS, "description": "y" * 300}, ViewsConfig())[-1]
    assert view_pieces(glob, 230) == [glob.value[i:i + 230] for i in range(0, len(glob.value), 230)]


@pytest.fixture(scope="module")
def tokenizer(tiny_clip):
    return load_encoder(*tiny_clip, torch.device("cpu")).tokenizer


def test_view_tokenizer_chunks_only_what_does_not_fit(tokenizer):
    chunk = ViewTokenizer(tokenizer, 77, TextConfig())
    fits, too_long = ViewText("{}", "a " * 75), ViewText("{}", "a " * 76)  # + start and end = 77 / 78 tokens
    assert chunk.view_ids(fits) == [tokenizer.encode(fits.prompt)]
    assert chunk.view_ids(too_long) == [tokenizer.encode(p) for p in view_pieces(too_long, 230)]
    assert len(chunk.view_ids(too_long)) == 1  # 152 characters: one piece, cut to 230 characters
    long = ViewText("The product description is {}", "word " * 100)
    assert len(chunk.view_ids(long)) == 3
    truncate = ViewTokenizer(tokenizer, 77, TextConfig(mode="truncate"))
    prompts = [fits.prompt, too_long.prompt, long.prompt, "short"]
    rows = truncate.rows([truncate.view_ids(ViewText("{}", p))[0] for p in prompts])
    assert torch.equal(rows, tokenizer(prompts))  # same rows as open_clip's tokenizer, end token kept
