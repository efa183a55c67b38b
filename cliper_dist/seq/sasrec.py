"""SASRec's sequence encoder (Kang & McAuley, ICDM 2018): the dense, data-parallel part.

Item embeddings (looked up elsewhere) plus learned positions, dropout, then ``blocks``
blocks of causal self-attention and a point-wise feed-forward net, each with a residual;
padding positions are zeroed after every block, as in the paper. Where the LayerNorms sit is
``norm``: ``pre`` (the paper's) normalises each sublayer's input and the last block's output;
``post`` (RecBole's and BERT's) normalises each residual sum and the input embeddings.
Sequences are left-padded (to a batch's longest, at most ``max_len``) and take the last
positions' embeddings, so position L-1 is always the most recent item, and its output is the
user's representation.

Weights start at N(0, 0.02) (``INIT_STD``, BERT's and RecBole's; the item table's rows too,
``table.py``) and the item vectors enter unscaled. The paper's code instead scales Xavier-initialised
embeddings by sqrt(d); with the table's row-wise Adagrad that trained to a test NDCG@10 of 0.040 on
the benchmark's catalog, against 0.065 this way (docs/sequential.md, "Initialisation").
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

INIT_STD = 0.02
Norm = Literal["pre", "post"]
MASKED = -1e9  # a finite "minus infinity": a query whose keys are all padding attends evenly, never NaN


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, dropout: float, norm: Norm):
        super().__init__()
        self.heads, self.dropout, self.post = heads, dropout, norm == "post"
        self.attn_norm, self.ffn_norm = nn.LayerNorm(dim, eps=1e-8), nn.LayerNorm(dim, eps=1e-8)
        # no bias: a key bias cannot change the attention (softmax is shift-invariant), so its gradient is
        # rounding noise that Adam would scale up to full steps; the shift of the LayerNorm before
        # (pre: attn_norm; post: the previous block's last, or the input's) reaches q, k, v anyway
        self.qkv, self.proj = nn.Linear(dim, 3 * dim, bias=False), nn.Linear(dim, dim)
        self.ffn = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Dropout(dropout), nn.Linear(dim, dim))

    def attend(self, x: torch.Tensor, attn_mask: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask,
                                           dropout_p=self.dropout if self.training else 0.0)
        return F.dropout(self.proj(a.transpose(1, 2).reshape(b, n, d)), self.dropout, self.training)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor) -> torch.Tensor:
        if self.post:
            x = self.attn_norm(x + self.attend(x, attn_mask))
            return self.ffn_norm(x + F.dropout(self.ffn(x), self.dropout, self.training))
        x = x + self.attend(self.attn_norm(x), attn_mask)
        return x + F.dropout(self.ffn(self.ffn_norm(x)), self.dropout, self.training)


class SASRec(nn.Module):
    """(B, L, d) left-padded item embeddings and their (B, L) mask -> (B, L, d) outputs."""

    def __init__(self, dim: int, max_len: int, blocks: int, heads: int, dropout: float, norm: Norm = "pre"):
        super().__init__()
        if dim % heads:
            raise ValueError(f"embedding_dim {dim} is not divisible by heads {heads}")
        if norm not in ("pre", "post"):
            raise ValueError(f"norm is pre or post; got {norm!r}")
        self.dim, self.dropout, self.post = dim, dropout, norm == "post"
        self.positions = nn.Embedding(max_len, dim)
        self.blocks = nn.ModuleList(Block(dim, heads, dropout, norm) for _ in range(blocks))
        self.norm = nn.LayerNorm(dim, eps=1e-8)  # pre: on the output; post: on the input
        causal = torch.ones(max_len, max_len, dtype=torch.bool).tril()
        self.register_buffer("causal", causal, persistent=False)
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, std=INIT_STD)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)

    def forward(self, items: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, n, _ = items.shape
        keep = mask.unsqueeze(-1).to(items.dtype)
        x = items + self.positions.weight[-n:]
        x = F.dropout(self.norm(x) if self.post else x, self.dropout, self.training) * keep
        allowed = self.causal[-n:, -n:] & mask[:, None, :]  # (B, L, L): earlier, real items only
        attn_mask = torch.zeros(allowed.shape, dtype=items.dtype, device=items.device)
        attn_mask = attn_mask.masked_fill(~allowed, MASKED).unsqueeze(1)
        for block in self.blocks:
            x = block(x, attn_mask) * keep
        return x if self.post else self.norm(x)


def left_pad(values: torch.Tensor, lengths: torch.Tensor, max_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Jagged rows (sum(lengths), d) -> (B, max_len, d) right-aligned, and its (B, max_len) mask."""
    b = lengths.numel()
    mask = torch.arange(max_len, device=values.device).expand(b, max_len) >= (max_len - lengths).unsqueeze(1)
    out = values.new_zeros(b, max_len, values.shape[-1])
    out[mask] = values
    return out, mask
