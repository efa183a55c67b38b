"""CLIPER's view similarity (eq. 2) and the fusions of an item's C text-view embeddings.

Shapes: ``text_views`` (N, C, D), ``image`` (N, D). Parameter-free fusions (SUM, Concat,
SA) are computed once by the encode job and again, from the stored raw view embeddings,
by the train job, where tau is a config key and MLP is a trained layer.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

FUSIONS = ("sa", "sum", "concat", "mlp")


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


class MLPFusion(nn.Module):
    """Concat -> Linear(C*D, D) -> LeakyReLU, trained with the recommender (as in the paper)."""

    def __init__(self, num_views: int, dim: int):
        super().__init__()
        self.proj = nn.Linear(num_views * dim, dim)

    def forward(self, text_views: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(self.proj(fuse_concat(text_views)))
