"""Loading: Long-CLIP checkpoints (248 positions) and Long-CLIP positional stretching."""

from __future__ import annotations

import pytest
import torch

from cliper_dist.encode.encoder import load_encoder, save_random_checkpoint, stretch_positions
from cliper_dist.errors import UserError

CPU = torch.device("cpu")


def long_clip_reference(p: torch.Tensor, keep: int = 20) -> torch.Tensor:
    """Long-CLIP's own loop (train/finetune code), verbatim up to names: 77 -> 248."""
    length, dim = p.shape
    new = torch.zeros([4 * length - 3 * keep, dim])
    new[:keep] = p[:keep]
    for i in range(length - 1 - keep):
        for k in range(4):
            new[4 * i + k + keep] = (4 - k) * p[i + keep] / 4 + k * p[i + 1 + keep] / 4
    for k in range(4):
        new[4 * length - 3 * keep - 4 + k] = p[length - 1] + k * (p[length - 1] - p[length - 2]) / 4
    return new


def test_stretch_matches_long_clip():
    p = torch.randn(77, 16)
    out = stretch_positions(p, 248, keep=20)
    assert out.shape == (248, 16)
    torch.testing.assert_close(out, long_clip_reference(p), rtol=0, atol=1e-6)
    assert torch.equal(out[:20], p[:20])


def test_long_clip_checkpoint_loads_into_a_77_position_config(tiny_clip, tmp_path):
    model, _ = tiny_clip
    ckpt = save_random_checkpoint(model, tmp_path / "long.pt", seed=3, context_length=248)
    enc = load_encoder(model, str(ckpt), CPU)
    assert enc.context_length == 248
    tokens = enc.tokenizer(["word " * 200])
    assert tokens.shape == (1, 248) and tokens[0, 100] != 0  # text past 77 tokens is kept
    saved = torch.load(ckpt)["state_dict"]["positional_embedding"]
    assert torch.equal(enc.model.positional_embedding.detach(), saved)
    assert enc.model.encode_text(tokens).shape == (1, enc.embed_dim)
    with pytest.raises(UserError, match="shorter than the checkpoint"):
        load_encoder(model, str(ckpt), CPU, context_length=77)


def test_context_length_stretches_a_77_position_checkpoint(tiny_clip):
    model, ckpt = tiny_clip
    enc = load_encoder(model, ckpt, CPU, context_length=248)
    saved = torch.load(ckpt)["state_dict"]["positional_embedding"]
    assert enc.context_length == 248 and enc.model.attn_mask.shape == (248, 248)
    torch.testing.assert_close(enc.model.positional_embedding.detach(), long_clip_reference(saved), rtol=0, atol=1e-6)
    plain = load_encoder(model, ckpt, CPU)
    short = plain.tokenizer(["a red rattle"])
    # positions below keep are unchanged, so a short text embeds exactly as before stretching
    torch.testing.assert_close(enc.model.encode_text(enc.tokenizer(["a red rattle"])), plain.model.encode_text(short))


def test_trimmed_text_forward_equals_open_clip(tiny_clip):
    enc = load_encoder(*tiny_clip, CPU)
    texts = ["hi", "The product title is a red star rattle!!", "word " * 100, "! ! ! soft " * 6, ""] * 7
    tokens = enc.tokenizer(texts)
    with torch.no_grad():
        stock = enc.model.encode_text(tokens)
        for groups in (1, 3, 5):
            torch.testing.assert_close(enc.encode_text(tokens, CPU, groups=groups), stock, rtol=1e-5, atol=1e-5)
