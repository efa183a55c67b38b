"""What every dense reference shares: the interface, the graphs as MMRec builds them, and the layers
shaped like the column-parallel model's gathered parameters."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cliper_dist.data.item_features import Features
from cliper_dist.data.recdata import RecData
from cliper_dist.model.base import ModelConfig


class Reference(nn.Module):
    """One model's equations on one process, whole tables, in ``dtype``.

    Its state dict holds exactly the column-parallel model's parameters, by name and whole
    shape (``load_state_dict`` takes a gathered engine's), frozen ones as buffers.
    """

    def __init__(self, cfg: ModelConfig, data: RecData, features: Features | None, seed: int,
                 dtype: torch.dtype = torch.float32):
        super().__init__()
        self.cfg, self.data, self.seed, self.dtype = cfg, data, seed, dtype
        self.n_users, self.n_items = data.num_users, data.num_items
        self.graph = self.adjacency(data.train_user, data.train_item)

    def epoch_graph(self, epoch: int) -> torch.Tensor | None:
        """The graph a training epoch propagates over (MMRec's ``pre_epoch_processing``)."""
        return self.graph

    def loss(self, graph: torch.Tensor | None, users: torch.Tensor, pos: torch.Tensor,
             neg: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The (users, items) embeddings evaluation scores by dot product, over the full graph."""
        raise NotImplementedError

    def id_tables(self) -> tuple[nn.Parameter, nn.Parameter]:
        """The user and item ID tables, Xavier-uniform (MMRec's nn.Embedding)."""
        return self.table(self.n_users, self.cfg.embedding_dim), self.table(self.n_items, self.cfg.embedding_dim)

    def table(self, rows: int, width: int) -> nn.Parameter:
        """A Xavier-uniform table (nn.Embedding's place in MMRec's models)."""
        return nn.Parameter(nn.init.xavier_uniform_(torch.empty(rows, width, dtype=self.dtype)))

    def dense(self, array: np.ndarray | None) -> torch.Tensor | None:
        return None if array is None else torch.from_numpy(np.array(array, dtype=np.float32)).to(self.dtype)

    def adjacency(self, user: np.ndarray, item: np.ndarray) -> torch.Tensor:
        """D^-1/2 A D^-1/2 of the bipartite graph of the (user, item) pairs, (U + I)^2 sparse COO."""
        rows, cols = self.stacked(user, item)
        degree = torch.bincount(rows, minlength=self.n_users + self.n_items).to(self.dtype)
        return self.sparse(rows, cols, degree[rows].rsqrt() * degree[cols].rsqrt())

    def stacked(self, user: np.ndarray, item: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """(rows, cols) of A's entries in the stacked [users; items] order, both directions."""
        user, item = torch.from_numpy(user), torch.from_numpy(item) + self.n_users
        return torch.cat([user, item]), torch.cat([item, user])

    def sparse(self, rows: torch.Tensor, cols: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        n = self.n_users + self.n_items
        return torch.sparse_coo_tensor(torch.stack([rows, cols]), values.to(self.dtype), (n, n),
                                       check_invariants=False).coalesce()

    def text_feature(self, features: Features, fixed: bool = True) -> torch.Tensor | None:
        """The text feature the model reads: the ready one, or the views fused by ``cfg.fusion``
        (``fixed``: MLP, which is trained, as its frozen stand-in SUM)."""
        if features.text is not None or features.text_views is None:
            return self.dense(features.text)
        views = self.dense(features.text_views).transpose(0, 1)  # (I, C, D)
        fusion = "sum" if fixed and self.cfg.fusion == "mlp" else self.cfg.fusion
        if fusion == "sa":  # eq. 2: softmax over the views of cos(view, image) / tau
            image = self.dense(features.image)
            cos = torch.stack([F.cosine_similarity(views[:, j], image, dim=1) for j in range(views.shape[1])], 1)
            return (torch.softmax(cos / self.cfg.tau, dim=1)[:, :, None] * views).sum(1)
        return views.flatten(1) if fusion == "concat" else views.sum(1)


def layer_mean(graph: torch.Tensor, users: torch.Tensor, items: torch.Tensor,
               layers: int) -> tuple[torch.Tensor, torch.Tensor]:
    """MMRec's LightGCN: the mean of layers 0..L of ``torch.sparse.mm`` over [users; items]."""
    out = [torch.cat([users, items])]
    for _ in range(layers):
        out.append(torch.sparse.mm(graph, out[-1]))
    mean = torch.stack(out, dim=1).mean(dim=1)
    return mean[:len(users)], mean[len(users):]


def bpr(users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    return -F.logsigmoid((users * pos).sum(1) - (users * neg).sum(1)).mean()


def top_k(features: torch.Tensor, k: int):
    """Each row's k most cosine-similar rows (self included) and their similarities, from the
    dense I x I similarities (``.values``, ``.indices``: (I, k))."""
    unit = features / features.norm(dim=1, keepdim=True)  # MMRec's: no epsilon
    return (unit @ unit.T).topk(k, dim=1)


class BlockLinear(nn.Module):
    """nn.Linear over k inputs side by side, its weight held as k (out, in) blocks (the
    column-parallel ``PartialLinear``'s shape)."""

    def __init__(self, blocks: int, in_width: int, out_width: int, dtype: torch.dtype):
        super().__init__()
        whole = nn.Linear(blocks * in_width, out_width, dtype=dtype)
        self.weight = nn.Parameter(whole.weight.detach().view(out_width, blocks, in_width).transpose(0, 1).clone())
        self.bias = whole.bias

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        return torch.cat(xs, dim=1) @ torch.cat(list(self.weight), dim=1).T + self.bias
