"""The column-parallel engine at 1, 2, 3 and 4 real ranks against a dense implementation of the equations.

The dense side is written from docs/train.md (Models) and MMRec's losses with dense float64
matrices only (no code of cliper_dist.model): normalised adjacency, LightGCN layer mean,
FREEDOM's kNN graph and modality BPR, CLIPER's SA and MLP fusions, and Adam, dense or
row-sparse, written out. Starting from the engine's initial parameters it takes the same
batches for several steps; the engine must match its loss at every step, every parameter
after the last step, the propagated embeddings, and its distributed metrics must equal a
brute-force ranking of the gathered embeddings.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cliper_dist import dist
from cliper_dist.data.batches import epoch_batches
from cliper_dist.data.recdata import load_rec_data
from cliper_dist.model.base import Batch, ModelConfig
from cliper_dist.model.bipartite import degree_sensitive_prune
from cliper_dist.model.registry import model_config
from cliper_dist.parallel.columns import ColumnParameter
from cliper_dist.parallel.comm import gather_columns
from cliper_dist.parallel.optim import OptimConfig
from cliper_dist.train.evaluate import evaluate
from cliper_dist.train.job import TrainConfig, build_engine
from tests.train._data import make_encode_dir, make_mmrec_folder
from tests.train.test_metrics import brute_force

TOL = 1e-5
STEPS, EPOCH, SEED, LR = 3, 1, 5, 0.05
# Adam's eps: with the default 1e-8, a gradient that cancels to ~1e-9 (an item that is a
# positive and a negative in one batch) is amplified to a step of order lr, and float32
# against float64 rounding alone then exceeds TOL; 1e-6 keeps the comparison meaningful.
EPS = 1e-6

@dataclass(frozen=True)
class Case:
    model: dict
    rows: str = "all"
    features: str | None = None  # "views": an encode output; "mmrec": image_feat/text_feat.npy
    users: int = 40
    items: int = 30
    batch: int = 64
    weight_decay: float = 0.0
    eps: float = EPS  # Adam's


# The row-sparse cases use a larger graph and a small batch, so that a step's receptive
# field leaves rows out (the test checks that it does).
CASES = {
    "lightgcn": Case({"name": "lightgcn", "embedding_dim": 8, "n_ui_layers": 2, "reg_weight": 1e-2}),
    "lightgcn-touched": Case({"name": "lightgcn", "embedding_dim": 8, "n_ui_layers": 2, "reg_weight": 1e-2},
                             "touched", users=400, items=300, batch=8),
    "freedom-sa-pruned": Case({"name": "freedom", "embedding_dim": 8, "knn_k": 4, "edge_dropout": 0.5,
                               "reg_weight": 0.1, "fusion": "sa", "tau": 0.2}, features="views"),
    "freedom-sa-touched": Case({"name": "freedom", "embedding_dim": 8, "knn_k": 3, "edge_dropout": 0.5,
                                "reg_weight": 0.1, "n_ui_layers": 1, "n_mm_layers": 2}, "touched", "views",
                               users=400, items=300, batch=8),
    "freedom-mlp": Case({"name": "freedom", "embedding_dim": 8, "knn_k": 3, "edge_dropout": 0.0, "reg_weight": 0.1,
                         "n_ui_layers": 3, "fusion": "mlp"}, features="views"),
    "freedom-mmrec-features": Case({"name": "freedom", "embedding_dim": 8, "knn_k": 3, "edge_dropout": 0.2,
                                    "reg_weight": 0.1}, features="mmrec"),
    "vbpr-sa": Case({"name": "vbpr", "embedding_dim": 8, "reg_weight": 0.1, "fusion": "sa", "tau": 0.2},
                    features="views"),
    "vbpr-mmrec-touched": Case({"name": "vbpr", "embedding_dim": 8, "reg_weight": 0.01}, "touched", "mmrec",
                               users=400, items=300, batch=8),
    "slmrec-sa": Case({"name": "slmrec", "embedding_dim": 8, "n_ui_layers": 3, "fusion": "sa", "tau": 0.2,
                       "nce_temp": 0.2, "ssl_temp": 0.5, "ssl_alpha": 0.3}, features="views", weight_decay=1e-3),
    "slmrec-mmrec-touched": Case({"name": "slmrec", "embedding_dim": 8, "n_ui_layers": 2, "ssl_alpha": 0.1},
                                 "touched", "mmrec", users=400, items=300, batch=8),
    # eps 1e-5: one item's gradient nearly cancels here and Adam's 1/(sqrt(v) + eps) turns its
    # float32 rounding into 8e-6 at eps 1e-6 (2e-6 at 1e-5); the equations are the same
    "lattice-sa": Case({"name": "lattice", "embedding_dim": 8, "knn_k": 4, "lambda_coeff": 0.7, "reg_weight": 0.1,
                        "fusion": "sa", "tau": 0.2}, features="views", eps=1e-5),
    # eps 1e-4 (both DualGNN cases): normalize()'s Jacobian removes the radial part of a row's
    # gradient, and where the rest is tiny (a row's gradient nearly radial, or, at batch 8, most
    # users reached only through two hops), Adam turns its float32 rounding into parameter
    # differences of 4e-5 at eps 1e-6 (1.3e-5 at 1e-5); below 1e-5 at 1e-4 (1e-3 at batch 8, 3-4 ranks).
    # user_knn 36: user 4 has fewer co-occurring users (the padding is tested)
    "dualgnn-sa": Case({"name": "dualgnn", "embedding_dim": 8, "user_knn": 36, "reg_weight": 0.1, "fusion": "sa",
                        "tau": 0.2}, features="views", eps=1e-4),
    "dualgnn-mmrec-touched": Case({"name": "dualgnn", "embedding_dim": 8, "user_knn": 5, "reg_weight": 0.01},
                                  "touched", "mmrec", users=400, items=300, batch=8, eps=1e-3),
    "lattice-mmrec-touched": Case({"name": "lattice", "embedding_dim": 8, "knn_k": 3, "n_mm_layers": 2},
                                  "touched", "mmrec", users=400, items=300, batch=8),
    "mmgcn-sa": Case({"name": "mmgcn", "embedding_dim": 8, "n_ui_layers": 3, "reg_weight": 0.1, "fusion": "sa",
                      "tau": 0.2}, features="views"),
    "mmgcn-mmrec": Case({"name": "mmgcn", "embedding_dim": 8, "n_ui_layers": 2, "reg_weight": 0.01},
                        features="mmrec", weight_decay=1e-3),
}


# MMRec's MMGCN never trains its ids and preferences (plain tensors, not Parameters)
FROZEN = {"mmgcn": {"user_table", "item_table", "towers.image.preference", "towers.text.preference"}}


def case_dirs(root: Path, name: str) -> tuple[str, str]:
    """(data, features) directories of a case under ``root``."""
    return str(root / name / "data"), str(root / name / "feats") if CASES[name].features == "views" else ""


def make_case(root: Path, name: str) -> None:
    case, (data, feats) = CASES[name], case_dirs(root, name)
    mmrec = case.features == "mmrec"
    make_mmrec_folder(Path(data), num_users=case.users, num_items=case.items, image=mmrec, text=mmrec)
    if feats:
        make_encode_dir(Path(feats), num_items=case.items)


def run_case(data_dir: str, feat_dir: str, case: Case) -> dict:
    """On every rank: the engine's full initial parameters, STEPS steps' losses, the full
    parameters after them, the gathered final embeddings and the distributed metrics."""
    info = dist.init()
    cfg = TrainConfig(data=data_dir, features=feat_dir, out="", seed=SEED, batch_size=case.batch,
                      model=model_config(**case.model),
                      optim=OptimConfig(lr=LR, eps=case.eps, rows=case.rows, weight_decay=case.weight_decay))
    engine = build_engine(cfg, info)

    def full_params():  # column blocks gathered; replicated parameters as they are
        return {n: (gather_columns(p.detach(), p.width, engine.split) if isinstance(p, ColumnParameter)
                    else p.detach()).clone() for n, p in engine.params.items()}

    before = full_params()
    graph = engine.model.train_graph(EPOCH)
    losses, batches = [], []
    for step, arrays in enumerate(epoch_batches(engine.data, engine.train_keys, EPOCH, SEED, case.batch)):
        if step == STEPS:
            break
        batches.append(arrays)
        losses.append(float(engine.step(graph, Batch(*(torch.from_numpy(a) for a in arrays)))))
    def gathered(local: torch.Tensor) -> torch.Tensor:  # the model's score blocks, each gathered whole
        blocks = local.chunk(engine.model.score_blocks, dim=1)
        return torch.cat([gather_columns(b, cfg.model.embedding_dim, engine.split) for b in blocks], dim=1)

    users, items = engine.model.embeddings()
    return {"before": before, "after": full_params(), "losses": losses, "batches": batches,
            "users": gathered(users), "items": gathered(items),
            "metrics": evaluate(engine.model, engine.data, engine.split, batch_users=7),
            "tables": set(engine.model.tables),
            "frozen": {n for n, p in engine.params.items() if not p.requires_grad},
            "blocks": {n: tuple(p.shape) for n, p in engine.params.items()}}


def run_cases(root: str) -> dict:
    return {name: run_case(*case_dirs(Path(root), name), case) for name, case in CASES.items()}


# ---- the dense reference -------------------------------------------------------------------
def dense_norm(a: torch.Tensor) -> torch.Tensor:
    d = a.sum(1)
    inv = torch.where(d > 0, d.pow(-0.5), torch.zeros_like(d))
    return inv[:, None] * a * inv[None, :]


def dense_ui_adj(users, items, n_users, n_items) -> torch.Tensor:
    a = torch.zeros(n_users + n_items, n_users + n_items, dtype=torch.float64)
    a[users, n_users + items] = 1.0
    a[n_users + items, users] = 1.0
    return dense_norm(a)


def dense_knn(feat: torch.Tensor, k: int) -> torch.Tensor:
    x = feat.double() / feat.double().norm(dim=1, keepdim=True)
    sim = x @ x.T
    a = torch.zeros_like(sim)
    a.scatter_(1, sim.topk(k, dim=1).indices, 1.0)
    return dense_norm(a)  # rows have k entries: values 1/k as FREEDOM's normalisation gives


def dense_sim_knn(feat: torch.Tensor, k: int) -> torch.Tensor:
    """LATTICE's K: each row's top-k cosine similarities (self included) kept as values."""
    x = feat / feat.norm(dim=1, keepdim=True)
    sim = x @ x.T
    top = sim.topk(k, dim=1)
    return torch.zeros_like(sim).scatter(1, top.indices, top.values)


def dense_sym_norm(a: torch.Tensor) -> torch.Tensor:
    """D^-1/2 A D^-1/2 with D the row sums (LATTICE's compute_normalized_laplacian)."""
    inv = a.sum(1).pow(-0.5)
    inv = torch.where(torch.isinf(inv), torch.zeros_like(inv), inv)
    return inv[:, None] * a * inv[None, :]


def dense_sa(views: torch.Tensor, image: torch.Tensor, tau: float) -> torch.Tensor:
    """views (I, C, D): softmax_j(cos(view_j, image) / tau)-weighted sum, one view at a time."""
    cos = torch.stack([F.cosine_similarity(views[:, j].double(), image.double(), dim=1)
                       for j in range(views.shape[1])], dim=1)
    s = torch.softmax(cos / tau, dim=1)
    return sum(s[:, j:j + 1] * views[:, j].double() for j in range(views.shape[1]))


def bpr(diff: torch.Tensor) -> torch.Tensor:
    return -F.logsigmoid(diff).mean()


class DenseModel:
    """The equations, dense, float64, with parameters keyed like the engine's."""

    def __init__(self, cfg: ModelConfig, data, feats: dict | None, params: dict[str, torch.Tensor],
                 frozen: set[str] = frozenset()):
        self.cfg, self.data, self.feats = cfg, data, feats
        self.p = {n: t.double().clone().requires_grad_(n not in frozen) for n, t in params.items()}
        self.full_adj = dense_ui_adj(torch.from_numpy(data.train_user), torch.from_numpy(data.train_item),
                                     data.num_users, data.num_items)
        if cfg.name == "dualgnn":
            self.user_graph = self.dualgnn_user_graph()
        if cfg.name == "lattice":  # D^-1 (A + I)
            a = self.full_adj.ne(0).double() + torch.eye(len(self.full_adj), dtype=torch.float64)
            self.full_adj = a / a.sum(1, keepdim=True)
        if cfg.name == "mmgcn":  # D^-1 A: each node's mean over its neighbours
            a = self.full_adj.ne(0).double()
            self.mean_adj = a / a.sum(1, keepdim=True).clamp_min(1.0)
        if cfg.name in ("freedom", "vbpr", "slmrec", "lattice", "dualgnn", "mmgcn"):
            image = feats["image"]
            text = feats.get("text")
            if feats.get("views") is not None:
                text = dense_sa(feats["views"], image, cfg.tau) if cfg.fusion == "sa" else feats["views"].double().sum(1)
            w, k = getattr(cfg, "mm_image_weight", 0.1), getattr(cfg, "knn_k", 1)  # the keys of the models that have them
            self.mm = w * dense_knn(image, k) + (1 - w) * dense_knn(text, k)
            self.content = torch.cat([text.double(), image.double()], dim=1)  # VBPR's x = [text ; image]
            self.normed = {"image": F.normalize(image.double(), dim=1), "text": F.normalize(text.double(), dim=1)}
            self.raw = {"image": image.double(), "text": text.double()}
            self.original = {"image": dense_sym_norm(dense_sim_knn(image.double(), k)),
                             "text": dense_sym_norm(dense_sim_knn(text.double(), k))}

    def dualgnn_user_graph(self) -> torch.Tensor:
        """G (U x U): each user's user_knn users sharing the most training items (ties: lower
        id), softmax(shared counts) weights; fewer such users are repeated at random as the
        model draws them from (seed, epoch)."""
        k, n_users = self.cfg.user_knn, self.data.num_users
        r = torch.zeros(n_users, self.data.num_items, dtype=torch.float64)
        r[torch.from_numpy(self.data.train_user), torch.from_numpy(self.data.train_item)] = 1.0
        shared = r @ r.T
        shared.fill_diagonal_(0.0)
        rng = np.random.default_rng([SEED, EPOCH, 11])
        g = torch.zeros(n_users, n_users, dtype=torch.float64)
        for u in range(n_users):
            mates = sorted(torch.nonzero(shared[u])[:, 0].tolist(), key=lambda v: (-shared[u, v].item(), v))[:k]
            if not mates:
                continue
            if len(mates) < k:
                mates += [mates[j] for j in rng.integers(0, len(mates), size=k - len(mates))]
            weights = torch.softmax(shared[u, mates], 0)
            for v, w in zip(mates, weights):
                g[u, v] += w
        return g

    def dualgnn_propagate(self, adj: torch.Tensor):
        p, n_users = self.p, self.data.num_users
        reps = {}
        for name, pref in (("image", p["user_table"]), ("text", p["text_preference"])):
            hidden = F.leaky_relu(self.linear(f"towers.{name}.mlp", self.raw[name]))
            x = F.normalize(torch.cat([pref, self.linear(f"towers.{name}.mlp_1", hidden)]), dim=1)
            reps[name] = x + adj @ x + adj @ (adj @ x)
        both, w = reps["image"] + reps["text"], p["weight_u"]
        users = w[:, :1] * both[:n_users] + w[:, 1:] * reps["text"][:n_users]
        return users + self.user_graph @ users, both[n_users:]

    def mmgcn_propagate(self):
        """Each modality's GCN (image through the MLP, text as is), averaged."""
        p, n_users = self.p, self.data.num_users
        ids = torch.cat([p["user_table"], p["item_table"]])
        outs = []
        for name in ("image", "text"):
            t = f"towers.{name}"
            items = self.linear(f"{t}.mlp", self.raw[name]) if f"{t}.mlp.weight" in p else self.raw[name]
            x = F.normalize(torch.cat([p[f"{t}.preference"], items]), dim=1)
            for layer in range(self.cfg.n_ui_layers):
                h = F.leaky_relu(self.mean_adj @ x @ p[f"{t}.conv.{layer}.weight"].T)
                x_hat = F.leaky_relu(self.linear(f"{t}.linear.{layer}", x)) + ids
                g = torch.cat([p[f"{t}.gate.{layer}.parts.0.weight"], p[f"{t}.gate.{layer}.parts.1.weight"]], dim=1)
                x = F.leaky_relu(torch.cat([h, x_hat], dim=1) @ g.T + p[f"{t}.gate.{layer}.bias"])
            outs.append(x)
        r = sum(outs) / len(outs)
        return r[:n_users], r[n_users:]

    def lattice_item_adj(self) -> torch.Tensor:
        """LATTICE's S from the current parameters, differentiable: the learned kNN graphs of the
        projected feature tables and the original ones, mixed by softmax(modal_weight)."""
        p, lam = self.p, self.cfg.lambda_coeff
        w = torch.softmax(p["modal_weight"], 0)
        learned = sum(w[m] * dense_sim_knn(self.linear(f"branches.{name}.project", p[f"branches.{name}.table"]),
                                           self.cfg.knn_k) for m, name in enumerate(("image", "text")))
        original = w[0] * self.original["image"] + w[1] * self.original["text"]
        return (1 - lam) * dense_sym_norm(learned) + lam * original

    def layer_mean(self, adj: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        layers = [x]
        for _ in range(self.cfg.n_ui_layers):
            layers.append(adj @ layers[-1])
        return torch.stack(layers).mean(0)

    def linear(self, name: str, *xs: torch.Tensor) -> torch.Tensor:
        """A linear layer on the concatenated inputs; a PartialLinear's weight is (k, out, in)."""
        w = self.p[f"{name}.weight"]
        w = torch.cat(list(w), dim=1) if w.dim() == 3 else w
        return torch.cat(xs, dim=1) @ w.T + self.p[f"{name}.bias"]

    def slmrec_views(self, adj: torch.Tensor):
        """SLMRec's id, vis and txt propagations (MMRec's three compute_graph calls), each (U + I) x d."""
        p, n_users = self.p, self.data.num_users
        views = [self.layer_mean(adj, torch.cat([p["user_table"], p["item_table"]]))]
        for name in ("image", "text"):
            dense = self.linear(f"features.{name}.project", self.normed[name])
            views.append(self.layer_mean(adj, torch.cat([p["user_table"], dense])))
        return [v[:n_users] for v in views], [v[n_users:] for v in views]

    def propagate(self, adj: torch.Tensor):
        if self.cfg.name == "mmgcn":
            return self.mmgcn_propagate()
        if self.cfg.name == "dualgnn":
            return self.dualgnn_propagate(adj)
        if self.cfg.name == "slmrec":
            user_views, item_views = self.slmrec_views(adj)
            return self.linear("fuse_user", *user_views), self.linear("fuse_item", *item_views)
        if self.cfg.name == "vbpr":  # no graph: u = [p_u ; q_u], i = [e_i ; W x_i + b]
            p = self.p
            items = torch.cat([p["item_table"], self.content @ p["project.weight"].T + p["project.bias"]], dim=1)
            return torch.cat([p["user_table"], p["user_content"]], dim=1), items
        n_users = self.data.num_users
        out = self.layer_mean(adj, torch.cat([self.p["user_table"], self.p["item_table"]]))
        users, items = out[:n_users], out[n_users:]
        if self.cfg.name in ("freedom", "lattice"):
            h = self.p["item_table"]
            for _ in range(self.cfg.n_mm_layers):
                h = (self.mm if self.cfg.name == "freedom" else self.item_adj) @ h
            items = items + (h if self.cfg.name == "freedom" else F.normalize(h, dim=1))
        return users, items

    def modality(self, name: str) -> torch.Tensor:
        """f_m for every item: the projected (fused) feature."""
        p = self.p
        if name == "text" and self.cfg.fusion == "mlp" and "views" in self.feats:
            x = F.leaky_relu(self.feats["views"].double().flatten(1) @ p["branches.text.mlp_weight"]
                             + p["branches.text.mlp_bias"])
        else:
            x = p[f"branches.{name}.table"]
        return x @ p[f"branches.{name}.project.weight"].T + p[f"branches.{name}.project.bias"]

    def slmrec_loss(self, adj, users, pos) -> torch.Tensor:
        def nce(a, b, temp):
            return F.cross_entropy(a @ b.T / temp, torch.arange(len(a)))

        cfg = self.cfg
        ou, oi = self.propagate(adj)
        main = nce(F.normalize(ou[users], dim=1), F.normalize(oi[pos], dim=1), cfg.nce_temp)
        _, (ids, vis, txt) = self.slmrec_views(adj)
        x_iv = self.linear("g_i_iv", ids[pos])
        fac = (nce(x_iv, self.linear("g_v_iv", vis[pos]), cfg.ssl_temp)
               + nce(self.linear("g_iva_ivat", self.linear("g_iv_iva", x_iv)), self.linear("g_t_ivat", txt[pos]),
                     cfg.ssl_temp))
        return main + cfg.ssl_alpha * fac

    def loss(self, adj, users, pos, neg) -> torch.Tensor:
        if self.cfg.name == "slmrec":
            return self.slmrec_loss(adj, users, pos)
        ou, oi = self.propagate(adj)
        u = ou[users]
        loss = bpr((u * (oi[pos] - oi[neg])).sum(1))
        if self.cfg.name == "freedom":
            for name in ("image", "text"):
                f = self.modality(name)
                loss = loss + self.cfg.reg_weight * bpr((u * (f[pos] - f[neg])).sum(1))
        elif self.cfg.name == "dualgnn":  # log2 BPR; mean squares of the batch's preferences and of weight_u
            p = self.p
            loss = loss / np.log(2.0) + self.cfg.reg_weight * (
                p["user_table"][users].pow(2).mean() + p["text_preference"][users].pow(2).mean()
                + p["weight_u"].pow(2).mean())
        elif self.cfg.name == "mmgcn":  # MMRec's L2 of the (frozen) ids over interleaved pairs, and of P_v
            p = self.p
            user_tensor = users.repeat_interleave(2)
            item_tensor = torch.stack([pos, neg]).t().reshape(-1) + self.data.num_users
            ids = torch.cat([p["user_table"], p["item_table"]])
            loss = loss + self.cfg.reg_weight * ((ids[user_tensor] ** 2 + ids[item_tensor] ** 2).mean()
                                                 + p["towers.image.preference"].pow(2).mean())
        elif self.cfg.name == "lattice":  # L2 on the output rows
            sq = u.pow(2).sum() + oi[pos].pow(2).sum() + oi[neg].pow(2).sum()
            loss = loss + self.cfg.reg_weight * 0.5 * sq / len(users)
        elif self.cfg.name == "vbpr":  # EmbLoss on the whole (ID and content) rows
            loss = loss + self.cfg.reg_weight * (u.norm() + oi[pos].norm() + oi[neg].norm()) / len(users)
        else:
            p = self.p
            emb = p["user_table"][users].norm() + p["item_table"][pos].norm() + p["item_table"][neg].norm()
            loss = loss + self.cfg.reg_weight * emb / len(users)
        return loss


def adam_reference(params: dict, state: dict, rows: str, tables: set[str], weight_decay: float, eps: float) -> None:
    """One Adam step (lr LR, betas 0.9/0.999, eps EPS, L2 ``weight_decay`` added to the
    gradient), written out, as torch.optim.Adam: a parameter without a gradient does not
    step, and bias correction counts each parameter's own steps. Under rows="touched" a
    row of a table steps only when its gradient row is nonzero."""
    b1, b2 = 0.9, 0.999
    with torch.no_grad():
        for name, p in params.items():
            if p.grad is None:
                continue
            m, v, steps = state.setdefault(name, (torch.zeros_like(p), torch.zeros_like(p), [0]))
            steps[0] += 1
            step = steps[0]
            mask = torch.ones(p.shape[0], dtype=torch.bool)
            if rows == "touched" and name in tables:
                mask = p.grad.reshape(len(p), -1).ne(0).any(1)
            g = p.grad + weight_decay * p
            m[mask] = b1 * m[mask] + (1 - b1) * g[mask]
            v[mask] = b2 * v[mask] + (1 - b2) * g[mask] ** 2
            m_hat, v_hat = m[mask] / (1 - b1 ** step), v[mask] / (1 - b2 ** step)
            p[mask] -= LR * m_hat / (v_hat.sqrt() + eps)
            p.grad = None


def reference(res: dict, data, case: Case, feats: dict | None):
    cfg, rows = model_config(**case.model), case.rows
    frozen = FROZEN.get(cfg.name, set())
    dense = DenseModel(cfg, data, feats, res["before"], frozen)
    edges = (data.train_user, data.train_item)
    if cfg.name == "freedom" and cfg.edge_dropout > 0:
        edges = degree_sensitive_prune(*edges, data.num_users, data.num_items, 1 - cfg.edge_dropout,
                                       np.random.default_rng([SEED, EPOCH, 7]))
    adj = dense_ui_adj(torch.from_numpy(edges[0]), torch.from_numpy(edges[1]), data.num_users, data.num_items)
    if cfg.name == "lattice":
        adj = dense.full_adj
    losses, state = [], {}
    for step, (users, pos, neg) in enumerate(res["batches"]):
        if cfg.name == "lattice":  # the epoch's first batch learns the item graph; the others use it detached
            dense.item_adj = dense.lattice_item_adj() if step == 0 else dense.item_adj.detach()
        loss = dense.loss(adj, *(torch.from_numpy(a) for a in (users, pos, neg)))
        loss.backward()
        adam_reference(dense.p, state, rows, res["tables"], case.weight_decay, case.eps)
        losses.append(float(loss.detach()))
    # the evaluated embeddings: the equations at the engine's final parameters (compared above
    # with the trajectory's), so that Adam-amplified rounding is not counted twice
    final = DenseModel(cfg, data, feats, res["after"], frozen)
    with torch.no_grad():
        if cfg.name == "lattice":  # evaluation learns the graph again from the final parameters
            final.item_adj = final.lattice_item_adj()
        users, items = final.propagate(final.full_adj)
    return losses, {n: t.detach() for n, t in dense.p.items()}, users, items


def _close(a, b, what, relative: bool = False):
    """Max abs error <= TOL; ``relative``: TOL times the largest |b| when that exceeds 1 (float32
    rounding grows with the magnitude: DualGNN's embeddings sum normalised rows over hops and
    neighbours, up to ~3.4 here)."""
    a, b = torch.as_tensor(a).double(), torch.as_tensor(b).double()
    assert a.shape == b.shape, f"{what}: shape {tuple(a.shape)} != {tuple(b.shape)}"
    err = (a - b).abs().max().item() if a.numel() else 0.0
    tol = TOL * max(1.0, b.abs().max().item()) if relative and b.numel() else TOL
    assert err <= tol, f"{what}: max abs error {err:.3g} > {tol:.3g}"


def load_feats(data_dir: Path, feat_dir: str, kind: str | None) -> dict | None:
    if kind == "views":
        return {"image": torch.from_numpy(np.load(Path(feat_dir) / "image.npy")),
                "views": torch.from_numpy(np.load(Path(feat_dir) / "text_views.npy").transpose(1, 0, 2).copy())}
    if kind == "mmrec":
        return {"image": torch.from_numpy(np.load(data_dir / "image_feat.npy")),
                "text": torch.from_numpy(np.load(data_dir / "text_feat.npy"))}
    return None


@pytest.mark.parametrize("nproc", [1, 2, 3, 4])
def test_engine_matches_the_dense_equations(ranks, tmp_path, nproc):
    for name in CASES:
        make_case(tmp_path, name)
    results = ranks.run(run_cases, str(tmp_path), nproc=nproc, timeout=400)
    for name, case in CASES.items():
        res = [r[name] for r in results]
        data_dir, feat_dir = case_dirs(tmp_path, name)
        data = load_rec_data(data_dir)
        feats = load_feats(Path(data_dir), feat_dir, case.features)
        dim = case.model["embedding_dim"]
        widths = [r["blocks"]["user_table"][1] for r in res]  # each rank holds its own block of columns
        assert sum(widths) == dim and (nproc == 1 or max(widths) < dim)
        for r in res[1:]:  # the gathered state, the losses and the metrics agree on every rank
            assert r["losses"] == res[0]["losses"] and r["metrics"] == res[0]["metrics"]
            for n in r["after"]:
                assert torch.equal(r["after"][n], res[0]["after"][n])
        res = res[0]
        frozen = FROZEN.get(case.model["name"], set())
        assert res["frozen"] == frozen, name
        for param in frozen:
            assert torch.equal(res["after"][param], res["before"][param]), f"{name}: frozen {param} moved"
        if "user_table" not in frozen:
            moved = (res["after"]["user_table"] != res["before"]["user_table"]).any(1)
            assert moved.all() if case.rows == "all" else not moved.all(), f"{name}: rows={case.rows}"
        losses, after, users, items = reference(res, data, case, feats)
        for step, (got, want) in enumerate(zip(res["losses"], losses)):
            _close(got, want, f"{name}: loss at step {step}")
        assert sorted(after) == sorted(res["after"])
        for param, want in after.items():
            if (param.startswith("branches.") and param.endswith("project.bias")
                    or param in ("g_v_iv.bias", "g_t_ivat.bias") and case.weight_decay == 0):
                # b_m cancels in every difference f_m(i+) - f_m(i-), and SLMRec's g2/g6 biases add
                # a constant to each row of an in-batch softmax: their exact gradient is 0, and
                # Adam turns float rounding (~1e-9) into steps of up to lr, here as in MMRec
                continue
            _close(res["after"][param], want, f"{name}: {param} after {STEPS} Adam steps")
        _close(res["users"], users, f"{name}: propagated users", relative=True)
        _close(res["items"], items, f"{name}: propagated items", relative=True)
        scores = (res["users"] @ res["items"].T).numpy()
        train = {u: set(data.train.row(u).tolist()) for u in range(data.num_users)}
        for split, truth in (("valid", data.valid), ("test", data.test)):
            held = {u: set(truth.row(u).tolist()) for u in range(data.num_users)}
            for k in (10, 20, 50):
                recall, ndcg = brute_force(scores, train, held, k)
                assert res["metrics"][split][f"recall@{k}"] == pytest.approx(recall, abs=1e-6), (name, split, k)
                assert res["metrics"][split][f"ndcg@{k}"] == pytest.approx(ndcg, abs=1e-6), (name, split, k)
