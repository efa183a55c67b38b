"""CPMM-style multimodal contrastive representation (MCR) of items: image, text and ID in one space.

    z_v = norm(H_v x_v)   z_t = norm(H_t x_t)   z_id = norm(H_id e_i)        (d'-dimensional)
    L = w_vt NCE(z_v, z_t) + w_vid NCE(z_v, z_id) + w_tid NCE(z_t, z_id) + w_co L_co
    NCE(a, b) = symmetric in-batch InfoNCE at temperature T (learnable or fixed)
    L_co = mean over modalities m of  -log sigmoid(z_m(i) . z_m(j) / T) - log sigmoid(-z_m(i) . z_m(k) / T)

over a batch of items (NCE) and a batch of co-interaction triples (i, j shared a user, k a
random item). The proximity term acts on each modality's own z, so that the image and text
features the job exports are trained on the collaborative signal directly, not only through
their sum with the ID, which is not exported (see docs/adapt.md for the measured difference). H_v, H_t and H_id are linear heads (with bias); e_i is the item's row of a
torchrec ID table. See docs/adapt.md for what comes from the CPMM abstract and what was chosen.

Column-parallel as the trainer: the ID table is split over its columns, so rank r holds e's
columns [lo, hi) and H_id's matching input columns; the ranks' partial products H_id e are
summed (one all-reduce of B x d' per batch), and every rank then runs the same global batch
through the small replicated heads. Their gradients are therefore equal on every rank and
need no all-reduce; the ID table's columns get their own gradients, which never travel.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from cliper_dist.parallel.columns import ColumnParameter, ColumnSplit, seeded_columns, uniform
from cliper_dist.parallel.comm import sum_partials


@dataclass
class AdaptModelConfig:
    dim: int = 64  # d': the shared contrastive space
    id_dim: int = 64  # columns of the item ID table (split across ranks)
    temperature: float = 0.1  # InfoNCE and proximity temperature T (initial value when learned)
    learn_temperature: bool = True  # learn log(1/T), clamped to T >= 0.01, as CLIP does
    w_image_text: float = 1.0  # weight of NCE(image, text)
    w_image_id: float = 1.0  # weight of NCE(image, ID)
    w_text_id: float = 1.0  # weight of NCE(text, ID)
    w_cooccur: float = 1.0  # weight of the first-order co-interaction loss


def _seeded(rows: int, cols: int, split: ColumnSplit, seed: int, name: str, bound: float) -> torch.Tensor:
    return seeded_columns(rows, cols, split, seed, name, uniform(bound))


class Head(nn.Module):
    """y = W x + b (nn.Linear's init), replicated: every rank holds it whole."""

    def __init__(self, in_width: int, out_width: int, seed: int, name: str):
        super().__init__()
        bound = 1.0 / math.sqrt(in_width)
        whole = ColumnSplit()
        self.weight = nn.Parameter(_seeded(in_width, out_width, whole, seed, f"{name}.weight", bound))
        self.bias = nn.Parameter(_seeded(1, out_width, whole, seed, f"{name}.bias", bound)[0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.weight + self.bias


class MCR(nn.Module):
    def __init__(self, cfg: AdaptModelConfig, image_width: int | None, text_width: int | None,
                 id_block: torch.Tensor, split: ColumnSplit, seed: int):
        super().__init__()
        self.cfg, self.split = cfg, split
        self.image = None if image_width is None else Head(image_width, cfg.dim, seed, "image_head")
        self.text = None if text_width is None else Head(text_width, cfg.dim, seed, "text_head")
        self.id_table = ColumnParameter(id_block, cfg.id_dim)
        # H_id split over its input columns, as the table: rank r multiplies its own columns
        bound = 1.0 / math.sqrt(cfg.id_dim)
        self.id_weight = ColumnParameter(_seeded(cfg.dim, cfg.id_dim, split, seed, "id_head.weight", bound),
                                         cfg.id_dim)
        self.id_bias = nn.Parameter(_seeded(1, cfg.dim, ColumnSplit(), seed, "id_head.bias", bound)[0])
        scale = torch.tensor(math.log(1.0 / cfg.temperature))
        if cfg.learn_temperature:
            self.log_scale = nn.Parameter(scale)
        else:
            self.register_buffer("log_scale", scale)

    @property
    def tables(self) -> tuple[str, ...]:
        return ("id_table",)

    def scale(self) -> torch.Tensor:
        return self.log_scale.clamp(max=math.log(100.0)).exp()

    def embed(self, items: torch.Tensor, image: torch.Tensor | None, text: torch.Tensor | None) -> dict:
        """Normalised z per modality of ``items``; ``image``/``text`` are their raw rows."""
        partial = self.id_table.index_select(0, items) @ self.id_weight.T  # (B, this rank's id cols) -> (B, d')
        z = {"id": sum_partials(partial, self.split) + self.id_bias}
        if self.image is not None:
            z["image"] = self.image(image)
        if self.text is not None:
            z["text"] = self.text(text)
        return {name: F.normalize(v, dim=-1) for name, v in z.items()}

    def loss(self, z: dict[str, torch.Tensor], triple: tuple[dict, dict, dict] | None) -> dict[str, torch.Tensor]:
        """The weighted terms and their sum (``total``); ``triple``: the embeddings of i, j, k."""
        c, s = self.cfg, self.scale()
        terms = {}
        for (a, b), w in ((("image", "text"), c.w_image_text), (("image", "id"), c.w_image_id),
                          (("text", "id"), c.w_text_id)):
            if w and a in z and b in z:
                terms[f"nce_{a}_{b}"] = w * info_nce(z[a], z[b], s)
        if triple is not None and c.w_cooccur:
            i, j, k = triple
            per_modality = [(-F.logsigmoid(s * (i[m] * j[m]).sum(1)) - F.logsigmoid(-s * (i[m] * k[m]).sum(1))).mean()
                            for m in i]
            terms["cooccur"] = c.w_cooccur * sum(per_modality) / len(per_modality)
        terms["total"] = sum(terms.values())
        return terms


def info_nce(a: torch.Tensor, b: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Symmetric in-batch InfoNCE: row n of ``a`` should pick row n of ``b``, and back."""
    logits = scale * a @ b.T
    target = torch.arange(len(a), device=a.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
