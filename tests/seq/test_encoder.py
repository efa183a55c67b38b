"""The SASRec encoder's blocks against their equations written out: where the LayerNorms sit
(``norm``: the paper's pre-LN, RecBole's post-LN), causal attention over real items only."""

from __future__ import annotations

import pytest
import torch

from cliper_dist.seq.sasrec import SASRec, left_pad


def written_out(model: SASRec, x: torch.Tensor, mask: torch.Tensor, norm: str) -> torch.Tensor:
    """The encoder, one sequence at a time over its real items only (no padding to mask), with
    explicit attention, head by head (dropout off)."""
    out = torch.zeros_like(x)
    n = x.shape[1]
    for b in range(x.shape[0]):
        real = mask[b]
        h = x[b, real] + model.positions.weight[-n:][real]
        h = model.norm(h) if norm == "post" else h
        for block in model.blocks:
            a_in = h if norm == "post" else block.attn_norm(h)
            q, k, v = (a_in @ block.qkv.weight.T).chunk(3, dim=1)
            causal = torch.ones(len(h), len(h), dtype=torch.bool).tril()
            heads = []
            for qh, kh, vh in zip(*(t.chunk(block.heads, dim=1) for t in (q, k, v))):
                scores = (qh @ kh.T / qh.shape[1] ** 0.5).masked_fill(~causal, -torch.inf)
                heads.append(scores.softmax(1) @ vh)
            a = block.proj(torch.cat(heads, dim=1))
            if norm == "post":
                h = block.attn_norm(h + a)
                h = block.ffn_norm(h + block.ffn(h))
            else:
                h = h + a
                h = h + block.ffn(block.ffn_norm(h))
        out[b, real] = h if norm == "post" else model.norm(h)
    return out


@pytest.mark.parametrize("norm", ["pre", "post"])
def test_the_blocks_compute_their_equations(norm):
    torch.manual_seed(0)
    model = SASRec(dim=8, max_len=6, blocks=2, heads=2, dropout=0.0, norm=norm).eval()
    for p in model.parameters():  # away from the init's zero biases and unit norms
        p.data += 0.1 * torch.randn_like(p)
    lengths = torch.tensor([6, 3, 1])
    x, mask = left_pad(torch.randn(int(lengths.sum()), 8), lengths, 6)
    got = model(x, mask)
    torch.testing.assert_close(got[mask], written_out(model, x, mask, norm)[mask], rtol=1e-5, atol=1e-5)
