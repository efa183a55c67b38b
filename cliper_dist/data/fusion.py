"""CLIPER's view similarity (eq. 2) and the fusions of an item's C text-view embeddings.

Shapes: ``text_views`` (N, C, D), ``image`` (N, D). ``FUSIONS`` is the one registry of
fusions, by config name. SUM, Concat and SA are parameter-free: the encode job stores SUM
and SA in the feature store, and training recomputes the chosen one from the raw views
(tau is a model config key), so both stages read the one definition here. MLP is trained
with the recommender; the model builds it (``model.freedom.MLPTextBranch``), and its
frozen item graph uses the SUM fusion instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from cliper_dist.errors import UserError


def view_similarity(text_views: torch.Tensor, image: torch.Tensor, tau: float) -> torch.Tensor:
    """s_i^j = softmax_j(cos(e_ij^t, e_i^v) / tau): (N, C), each row sums to 1."""
    cos = F.cosine_similarity(text_views, image.unsqueeze(1), dim=-1)
    return torch.softmax(cos / tau, dim=1)


def fuse_sum(text_views: torch.Tensor) -> torch.Tensor:
    return text_views.sum(dim=1)


def fuse_concat(text_views: torch.Tensor) -> torch.Tensor:
    return text_views.flatten(1)


def fuse_sa(text_views: torch.Tensor, similarity: torch.Tensor) -> torch.Tensor:
    """Similarity-weighted sum of the views: sum_j s_i^j * e_ij^t."""
    return torch.einsum("nc,ncd->nd", similarity, text_views)


@dataclass(frozen=True)
class Fusion:
    """How the view embeddings become one text feature. ``fixed(views, image, tau)`` is the
    parameter-free fusion, or the one the frozen item graph uses when ``trained``."""

    fixed: Callable[[torch.Tensor, torch.Tensor | None, float], torch.Tensor]
    needs_image: bool = False
    trained: bool = False


FUSIONS: dict[str, Fusion] = {
    "sum": Fusion(lambda views, image, tau: fuse_sum(views)),
    "concat": Fusion(lambda views, image, tau: fuse_concat(views)),
    "sa": Fusion(lambda views, image, tau: fuse_sa(views, view_similarity(views, image, tau)), needs_image=True),
    "mlp": Fusion(lambda views, image, tau: fuse_sum(views), trained=True),
}


def get_fusion(name: str) -> Fusion:
    if name not in FUSIONS:
        raise UserError(f"model.fusion must be one of {', '.join(FUSIONS)}; got '{name}'")
    return FUSIONS[name]
