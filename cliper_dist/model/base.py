"""What every recommender gives the training engine, and the registry of models by name.

A model is column-parallel (``cliper_dist.parallel``): its parameters are this rank's
column blocks (``ColumnParameter``). A step is split in two so that the engine alone
decides how ranks communicate:

- ``partials(graph, batch)``: named per-rank partial sums (each a sum over this rank's
  columns, such as the batch's dot products);
- ``loss(sums, batch)``: the loss from the same names summed over ranks, computed
  identically on every rank.

``cliper_dist.model.registry`` maps ``model.name`` to the class; the engine builds it as
``cls(model_cfg, data, id_tables, column_split, seed, features)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from cliper_dist.model.graph import BipartiteGraph


@dataclass
class ModelConfig:
    name: Literal["lightgcn", "freedom", "vbpr", "slmrec", "lattice", "dualgnn", "mmgcn"] = "freedom"  # the recommender (cliper_dist/model/registry.py)
    embedding_dim: int = 64  # width of the ID embeddings and modality projections (split across ranks)
    n_ui_layers: int = 2  # hops over the user-item graph (mmgcn: GCN layers, 3 in MMRec)
    n_mm_layers: int = 1  # freedom, lattice: hops over the item-item graph
    knn_k: int = 10  # freedom, lattice: neighbours per item in each modality's kNN graph
    knn: Literal["exact", "hnsw"] = "exact"  # freedom: kNN search, exact (blockwise) or FAISS HNSW (large catalogs)
    hnsw_m: int = 16  # knn=hnsw: links per node of the HNSW graph
    hnsw_ef: int = 64  # knn=hnsw: candidate-list breadth when building and searching (recall vs time)
    mm_image_weight: float = 0.1  # w in mm_adj = w * image_adj + (1 - w) * text_adj
    edge_dropout: float = 0.8  # freedom: fraction of user-item edges dropped each epoch (degree-sensitive)
    reg_weight: float = 1e-4  # lightgcn, vbpr: weight of MMRec's EmbLoss; mmgcn: of its (constant) L2 on the frozen ids; lattice: of the L2 on output rows; dualgnn: of its L2 terms; freedom: weight of the modality BPR losses
    fusion: Literal["sa", "sum", "concat", "mlp"] = "sa"  # CLIPER fusion of the text views (model/fusion.py)
    tau: float = 0.1  # CLIPER eq. 2 temperature of the view weights softmax(cos / tau)
    nce_temp: float = 0.2  # slmrec: temperature of the in-batch user-item InfoNCE (MMRec's temp)
    ssl_temp: float = 0.1  # slmrec: temperature of the FAC cross-modal InfoNCE terms
    ssl_alpha: float = 0.01  # slmrec: weight of the FAC loss
    lambda_coeff: float = 0.9  # lattice: weight of the frozen feature kNN graph against the learned one
    user_knn: int = 40  # dualgnn: co-occurring users each user aggregates (MMRec's k)


@dataclass
class Batch:
    """One global BPR batch, the same on every rank: (user, positive, negative) triples."""

    users: torch.Tensor
    pos: torch.Tensor
    neg: torch.Tensor

    def __len__(self) -> int:
        return len(self.users)


class Recommender(nn.Module):
    """A column-parallel graph recommender (see the module docstring)."""

    #: whether the model reads item features (the job loads them only then)
    uses_features: bool = False
    #: names of the row-indexed parameters (rows = users or items), for row-sparse Adam
    tables: tuple[str, ...] = ()
    #: seconds of the long parts of building the model (FREEDOM: "knn"), for the job's phase times
    build_seconds: dict[str, float] = {}
    #: how many embedding_dim-wide column blocks ``embeddings()`` puts side by side (VBPR: ID and content)
    score_blocks: int = 1

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
