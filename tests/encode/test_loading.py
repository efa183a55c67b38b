"""Real open_clip models through the local-checkpoint path (no mocks, no downloads)."""

import pytest
import torch

from cliper_dist.encode.encoder import load_encoder, save_random_checkpoint
from cliper_dist.errors import UserError


def test_local_checkpoint_loads_exactly(tiny_clip):
    model, ckpt = tiny_clip
    enc = load_encoder(model, ckpt, torch.device("cpu"))
    saved = torch.load(ckpt, weights_only=False)["state_dict"]
    loaded = enc.model.state_dict()
    assert set(saved) == set(loaded)
    assert all(torch.equal(saved[k], loaded[k]) for k in saved)
    assert enc.embed_dim == 64 and enc.context_length == 77 and len(enc.checkpoint_sha256) == 64
    tokens = enc.tokenizer(["The product title is a red star."])
    with torch.no_grad():
        assert enc.model.encode_text(tokens).shape == (1, 64)


def test_other_seed_gives_other_weights(tiny_clip, tmp_path):
    model, ckpt = tiny_clip
    other = save_random_checkpoint(model, tmp_path / "other.pt", seed=1)
    a = load_encoder(model, ckpt, torch.device("cpu")).model.state_dict()
    b = load_encoder(model, str(other), torch.device("cpu")).model.state_dict()
    assert not torch.equal(a["text_projection"], b["text_projection"])


def test_clear_errors(tiny_clip, tmp_path):
    model, ckpt = tiny_clip
    with pytest.raises(UserError, match="checkpoint not found"):
        load_encoder(model, str(tmp_path / "nope.pt"), torch.device("cpu"))
    with pytest.raises(UserError, match="unknown open_clip model"):
        load_encoder("not-a-model", ckpt, torch.device("cpu"))
    with pytest.raises(UserError, match="model config not found"):
        load_encoder(str(tmp_path / "missing.json"), ckpt, torch.device("cpu"))
    with pytest.raises(UserError, match="does not fit model"):
        load_encoder("ViT-S-32-alt", ckpt, torch.device("cpu"))


def test_a_file_that_is_no_checkpoint_is_one_line(tiny_clip, tmp_path):
    model, ckpt = tiny_clip
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(open(ckpt, "rb").read()[:5000])
    text = tmp_path / "notes.pt"
    text.write_text("these are not weights\n")
    for bad in (truncated, text):
        with pytest.raises(UserError, match=f"--pretrained {bad} is not a readable checkpoint"):
            load_encoder(model, str(bad), torch.device("cpu"))


def test_a_checkpoint_of_another_shape_names_its_tensors(tiny_clip, tmp_path):
    model, ckpt = tiny_clip
    state = torch.load(ckpt, weights_only=False)
    state["state_dict"]["text_projection"] = torch.zeros(3, 5)
    wrong = tmp_path / "wrong.pt"
    torch.save(state, wrong)
    with pytest.raises(UserError) as err:
        load_encoder(model, str(wrong), torch.device("cpu"))
    message = str(err.value)
    assert "size mismatch for text_projection" in message and "[3, 5]" in message
    assert "\n" not in message and "Error(s) in loading" not in message
