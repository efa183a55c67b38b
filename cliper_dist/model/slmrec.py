"""SLMRec (Tao et al., IEEE TMM 2022) over CLIPER features, as MMRec's ``src/models/slmrec.py``
computes it with its FAC task (``ssl_task: FAC``, ``mm_fusion_mode: concat``):

    v = W_v x_v + b_v,  t = W_t x_t + b_t        x: row-normalised frozen features (image; fused text)
    M(y) = mean_{l=0..L} A^l y                    A: the normalised training graph (LightGCN's)
    id, vis, txt = M([E_u; E_i]), M([E_u; v]), M([E_u; t])
    user = F_u([id ; vis ; txt]_u),  item = F_i([id ; vis ; txt]_i)       F: Linear(3d, d)
    loss = CE(cos(user_b, item_{i+_b'}) / nce_temp) + ssl_alpha * FAC       (in-batch softmax)
    FAC  = CE(g1(id_i) . g2(vis_i') / ssl_temp) + CE(g5(g3(g1(id_i))) . g6(txt_i') / ssl_temp)

over the batch's positive items i; scores are user . item. The negatives of the batch are
not used: the other rows of the batch are the negatives.

How a step runs here (the same values as MMRec's, other work):
- M is linear: M([E_u; v]) = M([E_u; 0]) + M([0; x_v]) W_v^T + M([0; 1]) b_v^T, and
  M([0; x]) is frozen. It is propagated once when the model is built (this rank's feature
  columns, (U + I) x D/P floats: the memory this costs) and a step projects only its
  batch's rows, where MMRec projects every item and propagates three tables per step.
- M([E_u; 0]) and M([0; E_i]) both come from one propagation of [E_u; E_i]
  (``propagation.source_rows``): id = both, vis and txt reuse the first.

Column-parallel: E, W_v, W_t and the frozen propagated features are split over columns;
F_u, F_i, g1, g2 and g6 are ``PartialLinear`` layers whose partial outputs (B x d each)
the engine's all-reduce completes; g3 and g5 act on the completed g1 output and are
replicated.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from cliper_dist.data.item_features import Features
from cliper_dist.data.recdata import RecData
from cliper_dist.model.base import Batch, FeatureConfig, Recommender, frozen_features
from cliper_dist.model.bipartite import BipartiteGraph
from cliper_dist.model.layers import ColumnProjection, PartialLinear, ReplicatedLinear
from cliper_dist.model.propagation import SourceRows, source_layer_mean, source_rows
from cliper_dist.model.workspace import Workspace
from cliper_dist.parallel.columns import ColumnParameter, ColumnSplit
from cliper_dist.parallel.comm import sum_to_local_columns
from cliper_dist.sharding.tables import IdTables

MODALITIES = ("image", "text")


@dataclass
class SLMRecConfig(FeatureConfig):
    """SLMRec: three propagations (ID, image, text) fused, in-batch InfoNCE and the FAC task."""

    name: Literal["slmrec"] = "slmrec"
    n_ui_layers: int = 2  # hops over the user-item graph
    nce_temp: float = 0.2  # temperature of the in-batch user-item InfoNCE (MMRec's temp)
    ssl_temp: float = 0.1  # temperature of the FAC cross-modal InfoNCE terms
    ssl_alpha: float = 0.01  # weight of the FAC loss


def in_batch_nce(a: torch.Tensor, b: torch.Tensor, temperature: float) -> torch.Tensor:
    """Cross-entropy of row r of a against every row of b, row r being the right one. The
    temperature divides a (B x d), not the logits (B x B)."""
    return F.cross_entropy((a / temperature) @ b.T, torch.arange(len(a), device=a.device))


class PropagatedFeature(nn.Module):
    """A frozen feature after propagation, M([0; x]) for the user and item rows (this rank's
    feature columns, computed a block of columns at a time), and its trained projection."""

    def __init__(self, x: torch.Tensor, graph: BipartiteGraph, layers: int, dim: int, split: ColumnSplit,
                 seed: int, name: str, block: int = 512):
        super().__init__()
        width = x.shape[1]
        split.check(width, f"{name} feature")
        x = split.local(F.normalize(x, dim=1)).to(graph.r.device)
        self.num_users = graph.num_users
        # M([0; x]) user rows, then item rows: a step's rows are one index_select
        propagated = x.new_empty(graph.num_users + graph.num_items, x.shape[1])
        for lo in range(0, x.shape[1], block):
            chunk = x[:, lo:lo + block]
            users, items = graph.layer_mean(chunk.new_zeros(graph.num_users, chunk.shape[1]), chunk, layers)
            propagated[:graph.num_users, lo:lo + block] = users
            propagated[graph.num_users:, lo:lo + block] = items
        mass = graph.layer_mean(x.new_zeros(graph.num_users, 1), x.new_ones(graph.num_items, 1), layers)
        self.register_buffer("rows", propagated, persistent=False)
        self.register_buffer("mass", torch.cat(mass)[:, 0], persistent=False)  # M([0; 1]): how b propagates
        # MMRec: nn.Linear(D, d) with a Xavier-uniform weight and the default bias
        self.project = ColumnProjection(width, dim, split, seed, f"{name}_dense", weight_init="xavier_uniform")

    def forward(self, users: torch.Tensor | None, items: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """M([0; v]) at the user rows and at the item rows (None: all), this rank's embedding
        columns; each distinct row is projected once."""
        if users is None:
            return self.project(self.rows, self.mass).split([self.num_users, self.rows.shape[0] - self.num_users])
        rows, where = torch.unique(torch.cat([users, items + self.num_users]), return_inverse=True)
        out = self.project(self.rows.index_select(0, rows), self.mass[rows])[where]
        return out[:len(users)], out[len(users):]


class SLMRec(Recommender, config=SLMRecConfig):
    uses_features = True

    def __init__(self, cfg: SLMRecConfig, data: RecData, tables: IdTables, split: ColumnSplit, seed: int,
                 features: Features | None = None):
        super().__init__()
        text, image = frozen_features(features, cfg.fusion, cfg.tau, "slmrec", need_both=True)
        self.cfg, self.split = cfg, split
        dim, layers = cfg.embedding_dim, cfg.n_ui_layers
        self.user_table = ColumnParameter(tables.user, dim)
        self.item_table = ColumnParameter(tables.item, dim)
        self.tables = ("user_table", "item_table")
        self.graph = BipartiteGraph.from_edges(data.train_user, data.train_item, data.num_users,
                                               data.num_items).to(self.user_table.device)
        self.workspace = Workspace()
        self.features = nn.ModuleDict({name: PropagatedFeature(x, self.graph, layers, dim, split, seed, name)
                                       for name, x in zip(MODALITIES, (image, text))})
        self.fuse_user = PartialLinear(3, dim, dim, split, seed, "fuse_user")
        self.fuse_item = PartialLinear(3, dim, dim, split, seed, "fuse_item")
        # FAC heads, MMRec's names: g_i_iv, g_v_iv, g_iv_iva, g_iva_ivat, g_t_ivat
        self.g_i_iv = PartialLinear(1, dim, dim, split, seed, "g_i_iv")
        self.g_v_iv = PartialLinear(1, dim, dim, split, seed, "g_v_iv")
        self.g_t_ivat = PartialLinear(1, dim, dim // 2, split, seed, "g_t_ivat")
        self.g_iv_iva = ReplicatedLinear(dim, dim, seed, "g_iv_iva")
        self.g_iva_ivat = ReplicatedLinear(dim, dim // 2, seed, "g_iva_ivat")
        self.to(self.user_table.device)

    def train_graph(self, epoch: int) -> BipartiteGraph:
        return self.graph

    def _views(self, graph: BipartiteGraph, users: torch.Tensor | None, items: torch.Tensor | None,
               rows: SourceRows | None = None):
        """(id, vis, txt) at the user rows and at the item rows (all rows: None, with ``rows``
        given), this rank's columns."""
        if rows is None:
            rows = source_rows(graph, self.user_table, self.item_table, self.cfg.n_ui_layers, users, items,
                                     self.workspace)
        vis_u, vis_i = self.features["image"](users, items)
        txt_u, txt_i = self.features["text"](users, items)
        ego_u, ego_i = rows.user_by_user, rows.item_by_user  # M([E_u; 0]): every view's user part
        return ((ego_u + rows.user_by_item, ego_u + vis_u, ego_u + txt_u),
                (ego_i + rows.item_by_item, ego_i + vis_i, ego_i + txt_i))

    def partials(self, graph: BipartiteGraph, batch: Batch) -> dict[str, torch.Tensor]:
        user_views, item_views = self._views(graph, batch.users, batch.pos)
        item_id, item_vis, item_txt = item_views
        return {"user": self.fuse_user(*user_views), "item": self.fuse_item(*item_views),
                "i_iv": self.g_i_iv(item_id), "v_iv": self.g_v_iv(item_vis), "t_ivat": self.g_t_ivat(item_txt)}

    def loss(self, sums: dict[str, torch.Tensor], batch: Batch) -> torch.Tensor:
        c = self.cfg
        main = in_batch_nce(F.normalize(sums["user"], dim=1), F.normalize(sums["item"], dim=1), c.nce_temp)
        fac = (in_batch_nce(sums["i_iv"], sums["v_iv"], c.ssl_temp)
               + in_batch_nce(self.g_iva_ivat(self.g_iv_iva(sums["i_iv"])), sums["t_ivat"], c.ssl_temp))
        return main + c.ssl_alpha * fac

    def touched(self, graph: BipartiteGraph, batch: Batch) -> dict[str, torch.Tensor]:
        users, items = graph.reach(batch.users, batch.pos, self.cfg.n_ui_layers)
        return {"user_table": users, "item_table": items}

    @torch.no_grad()
    def embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        rows = source_layer_mean(self.graph, self.user_table, self.item_table, self.cfg.n_ui_layers)
        user_views, item_views = self._views(self.graph, None, None, rows)
        return (sum_to_local_columns(self.fuse_user(*user_views), self.split),
                sum_to_local_columns(self.fuse_item(*item_views), self.split))
