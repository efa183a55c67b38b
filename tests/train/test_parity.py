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
from cliper_dist.model.base import Batch, ModelConfig
from cliper_dist.model.graph import degree_sensitive_prune
from cliper_dist.parallel.comm import gather_columns
from cliper_dist.parallel.optim import OptimConfig
from cliper_dist.train.data import epoch_batches, load_rec_data
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
}


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
                      model=ModelConfig(**case.model), optim=OptimConfig(lr=LR, eps=EPS, rows=case.rows))
    engine = build_engine(cfg, info)

    def full_params():
        return {n: gather_columns(p.detach(), p.width, engine.split).clone() for n, p in engine.params.items()}

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

    def __init__(self, cfg: ModelConfig, data, feats: dict | None, params: dict[str, torch.Tensor]):
        self.cfg, self.data, self.feats = cfg, data, feats
        self.p = {n: t.double().clone().requires_grad_() for n, t in params.items()}
        self.full_adj = dense_ui_adj(torch.from_numpy(data.train_user), torch.from_numpy(data.train_item),
                                     data.num_users, data.num_items)
        if cfg.name in ("freedom", "vbpr"):
            image = feats["image"]
            text = feats.get("text")
            if feats.get("views") is not None:
                text = dense_sa(feats["views"], image, cfg.tau) if cfg.fusion == "sa" else feats["views"].double().sum(1)
            w = cfg.mm_image_weight
            self.mm = w * dense_knn(image, cfg.knn_k) + (1 - w) * dense_knn(text, cfg.knn_k)
            self.content = torch.cat([text.double(), image.double()], dim=1)  # VBPR's x = [text ; image]

    def propagate(self, adj: torch.Tensor):
        if self.cfg.name == "vbpr":  # no graph: u = [p_u ; q_u], i = [e_i ; W x_i + b]
            p = self.p
            items = torch.cat([p["item_table"], self.content @ p["project.weight"].T + p["project.bias"]], dim=1)
            return torch.cat([p["user_table"], p["user_content"]], dim=1), items
        n_users = self.data.num_users
        ego = torch.cat([self.p["user_table"], self.p["item_table"]])
        layers = [ego]
        for _ in range(self.cfg.n_ui_layers):
            layers.append(adj @ layers[-1])
        out = torch.stack(layers).mean(0)
        users, items = out[:n_users], out[n_users:]
        if self.cfg.name == "freedom":
            h = self.p["item_table"]
            for _ in range(self.cfg.n_mm_layers):
                h = self.mm @ h
            items = items + h
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

    def loss(self, adj, users, pos, neg) -> torch.Tensor:
        ou, oi = self.propagate(adj)
        u = ou[users]
        loss = bpr((u * (oi[pos] - oi[neg])).sum(1))
        if self.cfg.name == "freedom":
            for name in ("image", "text"):
                f = self.modality(name)
                loss = loss + self.cfg.reg_weight * bpr((u * (f[pos] - f[neg])).sum(1))
        elif self.cfg.name == "vbpr":  # EmbLoss on the whole (ID and content) rows
            loss = loss + self.cfg.reg_weight * (u.norm() + oi[pos].norm() + oi[neg].norm()) / len(users)
        else:
            p = self.p
            emb = p["user_table"][users].norm() + p["item_table"][pos].norm() + p["item_table"][neg].norm()
            loss = loss + self.cfg.reg_weight * emb / len(users)
        return loss


def adam_reference(params: dict, state: dict, step: int, rows: str, tables: set[str]) -> None:
    """One Adam step (lr LR, betas 0.9/0.999, eps EPS), written out; under rows="touched" a
    table row steps only when its gradient row is nonzero."""
    b1, b2, eps = 0.9, 0.999, EPS
    with torch.no_grad():
        for name, p in params.items():
            g = p.grad
            m, v = state.setdefault(name, (torch.zeros_like(p), torch.zeros_like(p)))
            mask = torch.ones(p.shape[0], dtype=torch.bool)
            if rows == "touched" and name in tables:
                mask = g.reshape(len(g), -1).ne(0).any(1)
            m[mask] = b1 * m[mask] + (1 - b1) * g[mask]
            v[mask] = b2 * v[mask] + (1 - b2) * g[mask] ** 2
            m_hat, v_hat = m[mask] / (1 - b1 ** step), v[mask] / (1 - b2 ** step)
            p[mask] -= LR * m_hat / (v_hat.sqrt() + eps)
            p.grad = None


def reference(res: dict, data, model: dict, rows: str, feats: dict | None):
    cfg = ModelConfig(**model)
    dense = DenseModel(cfg, data, feats, res["before"])
    edges = (data.train_user, data.train_item)
    if cfg.name == "freedom" and cfg.edge_dropout > 0:
        edges = degree_sensitive_prune(*edges, data.num_users, data.num_items, 1 - cfg.edge_dropout,
                                       np.random.default_rng([SEED, EPOCH, 7]))
    adj = dense_ui_adj(torch.from_numpy(edges[0]), torch.from_numpy(edges[1]), data.num_users, data.num_items)
    tables = {n for n in dense.p if n.endswith("_table") or n.endswith(".table") or n == "user_content"}
    losses, state = [], {}
    for step, (users, pos, neg) in enumerate(res["batches"], start=1):
        loss = dense.loss(adj, *(torch.from_numpy(a) for a in (users, pos, neg)))
        loss.backward()
        adam_reference(dense.p, state, step, rows, tables)
        losses.append(float(loss.detach()))
    with torch.no_grad():
        users, items = dense.propagate(dense.full_adj)
    return losses, {n: t.detach() for n, t in dense.p.items()}, users, items


def _close(a, b, what):
    a, b = torch.as_tensor(a).double(), torch.as_tensor(b).double()
    assert a.shape == b.shape, f"{what}: shape {tuple(a.shape)} != {tuple(b.shape)}"
    err = (a - b).abs().max().item() if a.numel() else 0.0
    assert err <= TOL, f"{what}: max abs error {err:.3g} > {TOL}"


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
        moved = (res["after"]["user_table"] != res["before"]["user_table"]).any(1)
        assert moved.all() if case.rows == "all" else not moved.all(), f"{name}: rows={case.rows}"
        losses, after, users, items = reference(res, data, case.model, case.rows, feats)
        for step, (got, want) in enumerate(zip(res["losses"], losses)):
            _close(got, want, f"{name}: loss at step {step}")
        assert sorted(after) == sorted(res["after"])
        for param, want in after.items():
            if param.startswith("branches.") and param.endswith("project.bias"):
                # b_m cancels in every difference f_m(i+) - f_m(i-): its exact gradient is 0, and
                # Adam turns float rounding (~1e-9) into steps of up to lr, here as in MMRec
                continue
            _close(res["after"][param], want, f"{name}: {param} after {STEPS} Adam steps")
        _close(res["users"], users, f"{name}: propagated users")
        _close(res["items"], items, f"{name}: propagated items")
        scores = (res["users"] @ res["items"].T).numpy()
        train = {u: set(data.train.row(u).tolist()) for u in range(data.num_users)}
        for split, truth in (("valid", data.valid), ("test", data.test)):
            held = {u: set(truth.row(u).tolist()) for u in range(data.num_users)}
            for k in (10, 20, 50):
                recall, ndcg = brute_force(scores, train, held, k)
                assert res["metrics"][split][f"recall@{k}"] == pytest.approx(recall, abs=1e-6), (name, split, k)
                assert res["metrics"][split][f"ndcg@{k}"] == pytest.approx(ndcg, abs=1e-6), (name, split, k)
