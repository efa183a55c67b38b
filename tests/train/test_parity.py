"""The sharded 2-rank model against a direct dense implementation of the equations.

The dense side is written from DESIGN.md section 2 with dense matrices only (no code of
cliper_dist.model): normalised adjacency, LightGCN layer mean, FREEDOM's kNN graph and
modality BPR, CLIPER SA fusion, one SGD step on the tables and the (all-reduced)
gradients of the dense parameters. The sharded side runs the real Trainer on 2 ranks (torchrun, gloo).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cliper_dist import dist
from cliper_dist.model.recommender import ModelConfig
from cliper_dist.sharding.tables import ShardingConfig
from cliper_dist.train.data import epoch_batches, load_rec_data
from cliper_dist.train.job import Trainer, TrainConfig
from tests.train._data import make_encode_dir, make_mmrec_folder

TOL = 1e-5
TABLE_LR = 0.5


def one_step(data_dir: str, feat_dir: str, model: dict, sharding_type: str, epoch: int):
    """On every rank: the trainer's state before a step, its loss share, and the state after."""
    info = dist.init()
    cfg = TrainConfig(data=data_dir, features=feat_dir, out="", batch_size=64, seed=5,
                      model=ModelConfig(**model),
                      sharding=ShardingConfig(sharding_type=sharding_type, optimizer="sgd", lr=TABLE_LR))
    tr = Trainer(cfg, info)
    users, pos, neg, n = next(epoch_batches(tr.data, tr.train_keys, epoch, cfg.seed, cfg.batch_size,
                                            info.rank, info.world_size))
    with torch.no_grad():
        before = [t.clone() for t in tr.tables_whole()]
    dense_before = {k: v.detach().clone() for k, v in tr.model.state_dict().items()}
    propagated = [t.clone() for t in tr.final_embeddings()]
    adj = tr.epoch_graph(epoch)
    dense_grads = {}
    if tr.optimizer is not None:  # record the all-reduced dense gradients Adam is given
        adam_step = tr.optimizer.step

        def recording_step(*args, **kwargs):
            dense_grads.update({k: p.grad.clone() for k, p in tr.model.named_parameters() if p.grad is not None})
            return adam_step(*args, **kwargs)

        tr.optimizer.step = recording_step
    loss = float(tr.step(adj, users, pos, neg, n))
    with torch.no_grad():
        after = [t.clone() for t in tr.tables_whole()]
    plan = {t: ps.sharding_type for shardings in tr.plan.plan.values() for t, ps in shardings.items()}
    ranks_of = {t: sorted({s.placement.rank() for s in ps.sharding_spec.shards})
                for shardings in tr.plan.plan.values() for t, ps in shardings.items()}
    return {"users": users, "pos": pos, "neg": neg, "n": n, "before": before, "after": after, "loss": loss,
            "propagated": propagated, "dense_before": dense_before, "dense_grads": dense_grads,
            "plan": plan, "ranks_of": ranks_of}


# ---- the dense reference -------------------------------------------------------------------
def dense_norm(a: torch.Tensor) -> torch.Tensor:
    d = a.sum(1)
    inv = torch.where(d > 0, d.pow(-0.5), torch.zeros_like(d))
    return inv[:, None] * a * inv[None, :]


def dense_ui_adj(users, items, U, I) -> torch.Tensor:
    a = torch.zeros(U + I, U + I, dtype=torch.float64)
    a[users, U + items] = 1.0
    a[U + items, users] = 1.0
    return dense_norm(a)


def dense_knn(feat: torch.Tensor, k: int) -> torch.Tensor:
    x = feat.double() / feat.double().norm(dim=1, keepdim=True)
    sim = x @ x.T
    a = torch.zeros_like(sim)
    a.scatter_(1, sim.topk(k, dim=1).indices, 1.0)
    return dense_norm(a)  # rows have k entries: values 1/k as FREEDOM's normalisation gives


def dense_sa(views: torch.Tensor, image: torch.Tensor, tau: float) -> torch.Tensor:
    cos = torch.stack([F.cosine_similarity(views[:, j].double(), image.double(), dim=1)
                       for j in range(views.shape[1])], dim=1)
    s = torch.softmax(cos / tau, dim=1)
    return sum(s[:, j:j + 1] * views[:, j].double() for j in range(views.shape[1]))


def bpr(u, p, n):
    return -F.logsigmoid((u * p).sum(1) - (u * n).sum(1))


def reference(res, data, model: dict, feats: dict | None, adj_edges):
    """Dense loss of the global batch, propagated embeddings, the tables after one SGD
    step, and the dense parameters' gradients."""
    cfg = ModelConfig(**model)
    U, I = data.num_users, data.num_items
    eu0, ei0 = (t.double() for t in res[0]["before"])
    eu, ei = eu0.clone().requires_grad_(), ei0.clone().requires_grad_()
    users = torch.from_numpy(np.concatenate([r["users"] for r in res]))
    pos = torch.from_numpy(np.concatenate([r["pos"] for r in res]))
    neg = torch.from_numpy(np.concatenate([r["neg"] for r in res]))
    full_a = dense_ui_adj(torch.from_numpy(data.train_user), torch.from_numpy(data.train_item), U, I)
    step_a = dense_ui_adj(torch.from_numpy(adj_edges[0]), torch.from_numpy(adj_edges[1]), U, I)
    dense = {k: v.double().clone().requires_grad_(v.is_floating_point()) for k, v in res[0]["dense_before"].items()}

    def forward(a, eu, ei):
        ego = torch.cat([eu, ei])
        layers = [ego]
        for _ in range(cfg.n_ui_layers):
            layers.append(a @ layers[-1])
        out = torch.stack(layers).mean(0)
        ou, oi = out[:U], out[U:]
        if cfg.name == "freedom":
            text = dense_sa(feats["views"], feats["image"], cfg.tau) if feats.get("views") is not None else feats["text"].double()
            mm = cfg.mm_image_weight * dense_knn(feats["image"], cfg.knn_k) + (1 - cfg.mm_image_weight) * dense_knn(text, cfg.knn_k)
            h = ei
            for _ in range(cfg.n_mm_layers):
                h = mm @ h
            oi = oi + h
        return ou, oi

    with torch.no_grad():
        prop = forward(full_a, eu0, ei0)
    ou, oi = forward(step_a, eu, ei)
    u, p, n = ou[users], oi[pos], oi[neg]
    loss = bpr(u, p, n)
    if cfg.name == "freedom":
        t = dense["text_embedding"] @ dense["text_trs.weight"].T + dense["text_trs.bias"]
        v = dense["image_embedding"] @ dense["image_trs.weight"].T + dense["image_trs.bias"]
        loss = loss + cfg.reg_weight * (bpr(u, t[pos], t[neg]) + bpr(u, v[pos], v[neg]))
    else:
        loss = loss + cfg.reg_weight * (eu[users].pow(2).sum(1) + ei[pos].pow(2).sum(1) + ei[neg].pow(2).sum(1)) / 2
    loss = loss.sum() / res[0]["n"]
    loss.backward()
    after = (eu0 - TABLE_LR * eu.grad, ei0 - TABLE_LR * ei.grad)
    return float(loss.detach()), prop, after, {k: v.grad for k, v in dense.items() if v.grad is not None}


def _close(a, b, what):
    a, b = torch.as_tensor(a).double(), torch.as_tensor(b).double()
    err = (a - b).abs().max().item() if a.numel() else 0.0
    assert err <= TOL, f"{what}: max abs error {err:.3g} > {TOL}"


CASES = {
    "lightgcn-table_wise": ({"name": "lightgcn", "embedding_dim": 8, "n_ui_layers": 2, "reg_weight": 1e-3},
                            "table_wise", None),
    "lightgcn-row_wise": ({"name": "lightgcn", "embedding_dim": 8, "n_ui_layers": 3, "reg_weight": 1e-3},
                          "row_wise", None),
    "freedom-sa-views": ({"name": "freedom", "embedding_dim": 8, "knn_k": 4, "edge_dropout": 0.5,
                          "reg_weight": 0.1, "fusion": "sa", "tau": 0.2}, "table_wise", "views"),
    "freedom-mmrec-column_wise": ({"name": "freedom", "embedding_dim": 8, "knn_k": 3, "edge_dropout": 0.0,
                                   "reg_weight": 0.1}, "column_wise", "mmrec"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_sharded_two_rank_step_matches_dense_equations(ranks, tmp_path, case):
    model, sharding_type, feat_kind = CASES[case]
    data_dir = make_mmrec_folder(tmp_path / "data", image=feat_kind == "mmrec", text=feat_kind == "mmrec")
    feat_dir = ""
    if feat_kind == "views":
        feat_dir = str(make_encode_dir(tmp_path / "feats", num_items=30))
    epoch = 1
    res = ranks.run(one_step, str(data_dir), feat_dir, model, sharding_type, epoch, timeout=150)
    data = load_rec_data(data_dir)
    feats = None
    if feat_kind == "views":
        feats = {"image": torch.from_numpy(np.load(tmp_path / "feats" / "image.npy")),
                 "views": torch.from_numpy(np.load(tmp_path / "feats" / "text_views.npy").transpose(1, 0, 2).copy())}
    elif feat_kind == "mmrec":
        feats = {"image": torch.from_numpy(np.load(data_dir / "image_feat.npy")),
                 "text": torch.from_numpy(np.load(data_dir / "text_feat.npy"))}
    cfg = ModelConfig(**model)
    edges = (data.train_user, data.train_item)
    if cfg.name == "freedom" and cfg.edge_dropout > 0:
        from cliper_dist.model.graph import degree_sensitive_prune
        edges = degree_sensitive_prune(data.train_user, data.train_item, data.num_users, data.num_items,
                                       1 - cfg.edge_dropout, np.random.default_rng([5, epoch, 7]))
        assert len(edges[0]) == int(len(data.train_user) * (1 - cfg.edge_dropout))
    loss, prop, after, dense_grads = reference(res, data, model, feats, edges)
    if feat_kind == "views":  # the CLIPER SA fusion the model fine-tunes from
        _close(res[0]["dense_before"]["text_embedding"], dense_sa(feats["views"], feats["image"], cfg.tau), "SA fusion")

    assert {t: k for t, k in res[0]["plan"].items()} == {"user_id": sharding_type, "item_id": sharding_type}
    if sharding_type == "row_wise":
        assert res[0]["ranks_of"]["user_id"] == [0, 1]  # each table really spans both ranks
    # every rank saw the same tables, and a different half of the global batch
    for r in res[1:]:
        for a, b in zip(r["before"], res[0]["before"]):
            assert torch.equal(a, b)
    assert sum(len(r["users"]) for r in res) == res[0]["n"]
    _close(sum(r["loss"] for r in res), loss, "loss (sum of rank shares vs dense mean)")
    for r in res:
        _close(r["propagated"][0], prop[0], "propagated users")
        _close(r["propagated"][1], prop[1], "propagated items")
        _close(r["after"][0], after[0], "user table after one fused SGD step")
        _close(r["after"][1], after[1], "item table after one fused SGD step")
        assert sorted(r["dense_grads"]) == sorted(dense_grads)
        for k, v in dense_grads.items():
            _close(r["dense_grads"][k], v, f"all-reduced gradient of {k}")
