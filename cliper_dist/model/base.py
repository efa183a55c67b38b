"""What every recommender gives the training engine, and the config keys every model shares.

A model is column-parallel (``cliper_dist.parallel``): its parameters are this rank's
column blocks (``ColumnParameter``). A step is split in two so that the engine alone
decides how ranks communicate:

- ``partials(graph, batch)``: named per-rank partial sums (each a sum over this rank's
  columns, such as the batch's dot products);
- ``loss(sums, batch)``: the loss from the same names summed over ranks, computed
  identically on every rank.

``cliper_dist.model.registry`` maps ``model.name`` to the class, and the class names its
config dataclass (``config_class``); the train job builds it as
``cls(model_cfg, data, id_tables, column_split, seed, features)`` and hands it to the engine.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from cliper_dist.data.feature_stats import check_modalities
from cliper_dist.data.features import ItemVectors
from cliper_dist.data.fusion import get_fusion
from cliper_dist.data.item_features import Features
from cliper_dist.errors import UserError
from cliper_dist.model.bipartite import BipartiteGraph


@dataclass
class ModelConfig:
    """The keys every model has; each model's own config (next to its class) adds the rest."""

    name: str  # the model (cliper_dist/model/registry.py); it picks which config the other keys fill
    embedding_dim: int = 64  # width of the ID embeddings and modality projections (split across ranks)


@dataclass
class FeatureConfig(ModelConfig):
    """The keys of a model that reads item features: how an encode output's text views are fused."""

    fusion: Literal["sa", "sum", "concat", "mlp"] = "sa"  # CLIPER fusion of the text views (data/fusion.py); mlp is trained with the model (freedom only)
    tau: float = 0.1  # CLIPER eq. 2 temperature of the view weights softmax(cos / tau)


@dataclass
class Batch:
    """One global BPR batch, the same on every rank: (user, positive, negative) triples."""

    users: torch.Tensor
    pos: torch.Tensor
    neg: torch.Tensor

    def __len__(self) -> int:
        return len(self.users)


class Recommender(nn.Module):
    """A column-parallel graph recommender (see the module docstring). A model names its config
    dataclass in its class statement: ``class LightGCN(Recommender, config=LightGCNConfig)``."""

    #: the dataclass of the model's config keys (``model.*``)
    config_class: type[ModelConfig] = ModelConfig
    #: the train job's task (``model/registry.py``)
    task = "cf"
    #: whether the model reads item features (the job loads them only then)
    uses_features: bool = False
    #: names of the row-indexed parameters (rows = users or items), for row-sparse Adam
    tables: tuple[str, ...] = ()
    #: seconds of the long parts of building the model (FREEDOM: "knn"), for the job's phase times
    build_seconds: dict[str, float] = {}
    #: how many embedding_dim-wide column blocks ``embeddings()`` puts side by side (VBPR: ID and content)
    score_blocks: int = 1

    def __init_subclass__(cls, config: type[ModelConfig] | None = None, **kwargs):
        super().__init_subclass__(**kwargs)
        if config is not None:
            cls.config_class = config

    def train_graph(self, epoch: int) -> BipartiteGraph | None:
        """The user-item graph a training epoch propagates over (None: the model has none)."""
        raise NotImplementedError

    def partials(self, graph: BipartiteGraph, batch: Batch) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def loss(self, sums: dict[str, torch.Tensor], batch: Batch) -> torch.Tensor:
        raise NotImplementedError

    def touched(self, graph: BipartiteGraph, batch: Batch) -> dict[str, torch.Tensor]:
        """The rows of each table with a dense gradient that this step's loss depends on."""
        raise NotImplementedError

    def reclaim_gradients(self) -> None:
        """After the optimizer step, before the gradients are dropped: take back memory the
        model lent to them (default: none)."""

    def embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        """This rank's columns of the final (users, items) embeddings over the full training
        graph, as evaluation scores them: ``score_blocks`` blocks of this rank's
        ``embedding_dim`` columns, side by side."""
        raise NotImplementedError


def frozen_features(features: Features | None, fusion_name: str, tau: float, model_name: str,
                    need_both: bool = False, accept_degenerate: bool | None = None,
                    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(text, image), each (I, D) float32 or None, for a model that fuses its text views once:
    the views fused by a parameter-free fusion (or the ready text feature), the image.
    ``need_both``: the model reads both modalities. Each is checked for degenerate rows and
    dimensions first when ``accept_degenerate`` is not None (a model that builds a kNN graph
    over them: ``feature_stats.check_modalities``; True lets them through)."""
    if features is None:
        raise ValueError(f"{model_name} needs item features (the job checks this before building)")
    if need_both and (features.image is None or (features.text is None and features.text_views is None)):
        raise UserError(f"model.name={model_name} needs image and text features (MMRec's takes both)")
    if get_fusion(fusion_name).trained and features.text_views is not None:
        raise UserError(f"model.name={model_name} takes frozen content features; model.fusion={fusion_name} is "
                        "trained with the recommender (use sa, sum or concat)")
    text, image = (None if v is None else v.whole() for v in features.modalities(fusion_name, tau))
    if accept_degenerate is not None:  # on the tables already whole: one pass over the features, not two
        check_modalities({"image": None if image is None else ItemVectors.of(image),
                          "text": None if text is None else ItemVectors.of(text)}, accept_degenerate,
                         f" of {features.source}")
    return text, image
