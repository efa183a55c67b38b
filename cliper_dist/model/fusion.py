"""CLIPER's view similarity (eq. 2) and the fusions of an item's C text-view embeddings.

Shapes: ``text_views`` (N, C, D), ``image`` (N, D). ``FUSIONS`` is the one registry of
fusions, by config name. SUM, Concat and SA are parameter-free: the encode job stores SUM
and SA, and the train job recomputes the chosen one from the raw views (tau is a train
config key). MLP is trained with the recommender; the model builds it
(``model.freedom.MLPTextBranch``), and its frozen item graph uses the SUM fusion instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import torch
import torch.nn.functional as F

from cliper_dist.errors import UserError

if TYPE_CHECKING:
    from cliper_dist.data.features import ItemVectors
    from cliper_dist.train.features import Features


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


def frozen_features(features: "Features | None", fusion_name: str, tau: float, model_name: str,
                    need_both: bool = False) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(text, image), each (I, D) float32 or None, for a model that fuses its text views once:
    the views fused by a parameter-free fusion (or the ready text feature), the image.
    ``need_both``: the model reads both modalities."""
    if features is None:
        raise ValueError(f"{model_name} needs item features (the job checks this before building)")
    if need_both and (features.image is None or (features.text is None and features.text_views is None)):
        raise UserError(f"model.name={model_name} needs image and text features (MMRec's takes both)")
    fusion = get_fusion(fusion_name)
    if fusion.trained and features.text_views is not None:
        raise UserError(f"model.name={model_name} takes frozen content features; model.fusion={fusion_name} is "
                        "trained with the recommender (use sa, sum or concat)")
    return tuple(None if v is None else v.whole() for v in modality_vectors(features, fusion, fusion_name, tau))


def modality_vectors(features: "Features", fusion: Fusion, fusion_name: str,
                     tau: float) -> tuple["ItemVectors | None", "ItemVectors | None"]:
    """(text, image), read a block of items at a time: the views fused by ``fusion.fixed`` (or
    the ready text feature), the image."""
    if fusion.needs_image and features.text_views is not None and features.image is None:
        raise UserError(f"fusion {fusion_name} weighs the text views by their similarity to the image: "
                        "it needs image features")
    return features.text_vectors(fusion, tau), features.image_vectors()
