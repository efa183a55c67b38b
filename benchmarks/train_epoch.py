"""Seconds per training epoch and per full evaluation on Baby, against MMRec-style references.

    python benchmarks/train_epoch.py --data ../shared/data/amazon/baby [--epochs 3]

The references run in the same invocation, single-process, written the way MMRec writes
its models: ``nn.Embedding`` tables, ``torch.sparse.mm`` over the full normalised COO
adjacency for every batch, Adam lr 1e-3 on every parameter, batch 2048, MMRec's Python
negative sampler (``TrainDataLoader``: a random item redrawn while it is a training item).

- LightGCN (``src/models/lightgcn.py``): BPR + 1e-4 EmbLoss.
- FREEDOM (``src/models/freedom.py``): frozen kNN item graph (k=10, 0.1 image / 0.9
  text), degree-sensitive pruning with ``torch.multinomial`` every epoch (dropout 0.8),
  feature tables fine-tuned, *all* items projected every step, reg_weight 1e-4.
- VBPR (``src/models/vbpr.py``): users (U, 2d), items [e_i ; W [text ; image] + b] with
  *all* items projected every step, BPR + 2.0 EmbLoss (the first point of its grid).
- SLMRec (``src/models/slmrec.py``, FAC task): all items projected and three full tables
  propagated (3 layers) every step, concat fusion, in-batch InfoNCE + 0.01 FAC, Adam
  weight_decay 1e-4.
- LATTICE (``src/models/lattice.py``, lightgcn): MMRec's dense I x I graph learning (with
  its O(I^3) ``diagflat`` products) on each epoch's first batch and at every evaluation,
  a dense S @ E_i every step, 2 layers over D^-1 (A + I).
- DualGNN (``src/models/dualgnn.py``): both modalities' MLPs over all items and two
  propagations of the whole table per modality every step, the user graph for every user.

Features are the issue's stand-ins: ``rng = np.random.default_rng(0)``, image (I, 4096)
drawn first, then text (I, 384), standard normal. Ours is ``launch/train.py`` under
torchrun with the shipped configs (no checkpoints) at RANKSxTHREADS layouts. One JSON line
per measurement (median over the epochs after the first), then a summary; speedups compare
the same model on the same number of cores. ``--rounds R`` repeats every measurement R
times, references and ours alternating, and the summary gives medians over the rounds: the
host's speed drifts by 15-25% within minutes, so a ratio from one round is that noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cliper_dist.data.recdata import load_rec_data  # noqa: E402
from cliper_dist.train.metrics import KS, evaluate_users  # noqa: E402


def mmrec_negatives(users: np.ndarray, all_items: list, history: dict) -> np.ndarray:
    """MMRec's TrainDataLoader sampler: one random item per user, redrawn while it is a
    training item of the user, in a Python loop."""
    out = []
    for u in users.tolist():
        iid = random.sample(all_items, 1)[0]
        while iid in history[u]:
            iid = random.sample(all_items, 1)[0]
        out.append(iid)
    return np.array(out, dtype=np.int64)


def sym_adjacency(user: torch.Tensor, item: torch.Tensor, n_users: int, n_items: int) -> torch.Tensor:
    """MMRec's normalised bipartite adjacency, (U+I) x (U+I) COO, degrees + 1e-7."""
    rows = torch.cat([user, item + n_users])
    cols = torch.cat([item + n_users, user])
    deg = torch.bincount(rows, minlength=n_users + n_items).double() + 1e-7
    values = (deg[rows] ** -0.5 * deg[cols] ** -0.5).float()
    return torch.sparse_coo_tensor(torch.stack([rows, cols]), values, (n_users + n_items,) * 2).coalesce()


def knn_adjacency(features: torch.Tensor, k: int) -> torch.Tensor:
    """MMRec's get_knn_adj_mat: dense cosine similarities, top-k, D^-1/2 A D^-1/2."""
    normed = features / features.norm(p=2, dim=-1, keepdim=True)
    knn = (normed @ normed.T).topk(k, dim=-1).indices
    rows = torch.arange(len(features)).repeat_interleave(k)
    value = (k + 1e-7) ** -1.0
    return torch.sparse_coo_tensor(torch.stack([rows, knn.reshape(-1)]), torch.full((len(rows),), value),
                                   (len(features),) * 2).coalesce()


class Reference(nn.Module):
    """LightGCN, or FREEDOM when given features, as MMRec computes them."""

    def __init__(self, data, features: dict | None):
        super().__init__()
        self.n_users, self.n_items = data.num_users, data.num_items
        self.user, self.item = nn.Embedding(self.n_users, 64), nn.Embedding(self.n_items, 64)
        nn.init.xavier_uniform_(self.user.weight)
        nn.init.xavier_uniform_(self.item.weight)
        user, item = torch.from_numpy(data.train_user), torch.from_numpy(data.train_item)
        self.norm_adj = sym_adjacency(user, item, self.n_users, self.n_items)
        self.freedom = features is not None
        if self.freedom:
            self.image = nn.Embedding.from_pretrained(features["image"], freeze=False)
            self.text = nn.Embedding.from_pretrained(features["text"], freeze=False)
            self.image_trs, self.text_trs = nn.Linear(features["image"].shape[1], 64), nn.Linear(features["text"].shape[1], 64)
            self.mm_adj = (0.1 * knn_adjacency(features["image"], 10) + 0.9 * knn_adjacency(features["text"], 10)).coalesce()
            self.edges = torch.stack([user, item])
            du = torch.bincount(user, minlength=self.n_users).float() + 1e-7
            di = torch.bincount(item, minlength=self.n_items).float() + 1e-7
            self.edge_values = du[user] ** -0.5 * di[item] ** -0.5

    def epoch_adjacency(self) -> torch.Tensor:
        """FREEDOM's pre_epoch_processing: keep 20% of the edges by degree-sensitive sampling."""
        if not self.freedom:
            return self.norm_adj
        keep = self.edges[:, torch.multinomial(self.edge_values, int(self.edges.shape[1] * 0.2))]
        return sym_adjacency(keep[0], keep[1], self.n_users, self.n_items)

    def forward(self, adj: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        users, items = light_out(adj, self.user.weight, self.item.weight, 2)
        if self.freedom:
            items = items + torch.sparse.mm(self.mm_adj, self.item.weight)
        return users, items

    def loss(self, adj, u, p, n) -> torch.Tensor:
        users, items = self.forward(adj)
        loss = bpr(users[u], items[p], items[n])
        if self.freedom:
            t, v = self.text_trs(self.text.weight), self.image_trs(self.image.weight)
            return loss + 1e-4 * (bpr(users[u], t[p], t[n]) + bpr(users[u], v[p], v[n]))
        reg = self.user(u).norm() + self.item(p).norm() + self.item(n).norm()
        return loss + 1e-4 * reg / len(u)


def light_out(adj: torch.Tensor, users: torch.Tensor, items: torch.Tensor,
              layers: int) -> tuple[torch.Tensor, torch.Tensor]:
    """MMRec's LightGCN: the mean of layers 0..L of torch.sparse.mm over [users; items]."""
    ego = torch.cat([users, items])
    out = [ego]
    for _ in range(layers):
        ego = torch.sparse.mm(adj, ego)
        out.append(ego)
    mean = torch.stack(out, dim=1).mean(dim=1)
    return mean[:len(users)], mean[len(users):]


def bpr(users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    return -F.logsigmoid((users * pos).sum(1) - (users * neg).sum(1)).mean()


class ReferenceVBPR(nn.Module):
    """VBPR as MMRec computes it (the same interface as ``Reference``; no graph)."""

    def __init__(self, data, features: dict):
        super().__init__()
        self.user = nn.Parameter(nn.init.xavier_uniform_(torch.empty(data.num_users, 128)))
        self.item = nn.Parameter(nn.init.xavier_uniform_(torch.empty(data.num_items, 64)))
        self.raw = torch.cat([features["text"], features["image"]], dim=1)
        self.linear = nn.Linear(self.raw.shape[1], 64)
        nn.init.xavier_normal_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)
        self.norm_adj = None

    def epoch_adjacency(self) -> None:
        return None

    def forward(self, adj: None) -> tuple[torch.Tensor, torch.Tensor]:
        return self.user, torch.cat([self.item, self.linear(self.raw)], dim=1)

    def loss(self, adj, u, p, n) -> torch.Tensor:
        users, items = self.forward(adj)
        reg = users[u].norm() + items[p].norm() + items[n].norm()
        return bpr(users[u], items[p], items[n]) + 2.0 * reg / len(u)


class ReferenceSLMRec(nn.Module):
    """SLMRec as MMRec computes it (``ssl_task: FAC``, concat fusion, 3 layers): every step
    projects all items and propagates three full tables; Adam weight_decay 1e-4."""

    weight_decay = 1e-4

    def __init__(self, data, features: dict):
        super().__init__()
        self.user, self.item = nn.Embedding(data.num_users, 64), nn.Embedding(data.num_items, 64)
        self.v_feat, self.t_feat = (F.normalize(features[k], dim=1) for k in ("image", "text"))
        self.v_dense, self.t_dense = nn.Linear(self.v_feat.shape[1], 64), nn.Linear(self.t_feat.shape[1], 64)
        self.fuse_user, self.fuse_item = nn.Linear(192, 64), nn.Linear(192, 64)
        self.g_i_iv, self.g_v_iv, self.g_iv_iva = nn.Linear(64, 64), nn.Linear(64, 64), nn.Linear(64, 64)
        self.g_iva_ivat, self.g_t_ivat = nn.Linear(64, 32), nn.Linear(64, 32)
        for w in (self.user, self.item, self.v_dense, self.t_dense, self.fuse_user, self.fuse_item, self.g_i_iv,
                  self.g_v_iv, self.g_iv_iva, self.g_iva_ivat, self.g_t_ivat):
            nn.init.xavier_uniform_(w.weight)
        user, item = torch.from_numpy(data.train_user), torch.from_numpy(data.train_item)
        self.norm_adj = sym_adjacency(user, item, data.num_users, data.num_items)

    def epoch_adjacency(self) -> torch.Tensor:
        return self.norm_adj

    def views(self, adj):
        return [light_out(adj, self.user.weight, x, 3) for x in (self.item.weight, self.v_dense(self.v_feat), self.t_dense(self.t_feat))]

    def forward(self, adj) -> tuple[torch.Tensor, torch.Tensor]:
        views = self.views(adj)
        return (self.fuse_user(torch.cat([u for u, _ in views], dim=1)),
                self.fuse_item(torch.cat([i for _, i in views], dim=1)))

    def loss(self, adj, u, p, n) -> torch.Tensor:
        views = self.views(adj)
        users = self.fuse_user(torch.cat([v[0] for v in views], dim=1))
        items = self.fuse_item(torch.cat([v[1] for v in views], dim=1))
        main = nce(F.normalize(users[u], dim=1), F.normalize(items[p], dim=1), 0.2)
        (_, ids), (_, vis), (_, txt) = views
        x_iv = self.g_i_iv(ids[p])
        fac = nce(x_iv, self.g_v_iv(vis[p]), 0.1) + nce(self.g_iva_ivat(self.g_iv_iva(x_iv)), self.g_t_ivat(txt[p]), 0.1)
        return main + 0.01 * fac


class ReferenceLATTICE(nn.Module):
    """LATTICE as MMRec computes it (``cf_model: lightgcn``): dense I x I similarity, kNN and
    normalisation (``build_sim``, ``build_knn_neighbourhood``, ``compute_normalized_laplacian``
    with ``diagflat`` products) on the first batch of each epoch and at every evaluation, a
    dense S @ E_i every step, all items projected when the graph is built."""

    def __init__(self, data, features: dict):
        super().__init__()
        self.n_users, self.n_items = data.num_users, data.num_items
        self.user, self.item = nn.Embedding(self.n_users, 64), nn.Embedding(self.n_items, 64)
        nn.init.xavier_uniform_(self.user.weight)
        nn.init.xavier_uniform_(self.item.weight)
        self.image = nn.Embedding.from_pretrained(features["image"], freeze=False)
        self.text = nn.Embedding.from_pretrained(features["text"], freeze=False)
        self.image_trs, self.text_trs = nn.Linear(features["image"].shape[1], 64), nn.Linear(features["text"].shape[1], 64)
        self.modal_weight = nn.Parameter(torch.tensor([0.5, 0.5]))
        with torch.no_grad():
            self.image_orig, self.text_orig = (lattice_laplacian(lattice_knn(f, 10)) for f in
                                               (self.image.weight, self.text.weight))
        user, item = torch.from_numpy(data.train_user), torch.from_numpy(data.train_item)
        n = self.n_users + self.n_items
        rows = torch.cat([user, item + self.n_users, torch.arange(n)])
        cols = torch.cat([item + self.n_users, user, torch.arange(n)])
        deg = torch.bincount(rows, minlength=n).float()
        self.norm_adj = torch.sparse_coo_tensor(torch.stack([rows, cols]), 1.0 / deg[rows], (n, n)).coalesce()
        self.build, self.item_adj = True, None

    def epoch_adjacency(self) -> torch.Tensor:
        self.build = True
        return self.norm_adj

    def forward(self, adj, build: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        if build:
            w = torch.softmax(self.modal_weight, 0)
            learned = (w[0] * lattice_knn(self.image_trs(self.image.weight), 10)
                       + w[1] * lattice_knn(self.text_trs(self.text.weight), 10))
            self.item_adj = 0.1 * lattice_laplacian(learned) + 0.9 * (w[0] * self.image_orig + w[1] * self.text_orig)
        else:
            self.item_adj = self.item_adj.detach()
        h = torch.mm(self.item_adj, self.item.weight)
        users, items = light_out(adj, self.user.weight, self.item.weight, 2)
        return users, items + F.normalize(h, p=2, dim=1)

    def loss(self, adj, u, p, n) -> torch.Tensor:
        users, items = self.forward(adj, self.build)
        self.build = False
        return bpr(users[u], items[p], items[n])  # reg_weight 0.0: the first point of its grid


class ReferenceDualGNN(nn.Module):
    """DualGNN as MMRec computes it (weighted_sum, aggr add): every step both modalities'
    MLPs over all items, two propagations of the whole (U + I) table per modality
    (``torch.sparse.mm`` here, where MMRec's PyG message passing is slower), the user graph
    gathered for every user; log2 BPR and its L2 terms (reg_weight 0.1). The user graph's
    per-epoch sample is ours (MMRec's is a Python loop over users)."""

    def __init__(self, data, features: dict):
        super().__init__()
        from cliper_dist.model.dualgnn import co_occurrence_top, sample_user_graph

        self.n_users, self.sample = data.num_users, sample_user_graph
        self.top = co_occurrence_top(data.train_user, data.train_item, data.num_users, data.num_items, 40)
        self.feats = features
        self.pref = nn.ParameterDict({m: nn.Parameter(nn.init.xavier_normal_(torch.empty(data.num_users, 64)))
                                      for m in features})
        self.mlp = nn.ModuleDict({m: nn.Linear(f.shape[1], 256) for m, f in features.items()})
        self.mlp_1 = nn.ModuleDict({m: nn.Linear(256, 64) for m in features})
        self.weight_u = nn.Parameter(torch.softmax(nn.init.xavier_normal_(torch.empty(data.num_users, 2, 1)), dim=1))
        user, item = torch.from_numpy(data.train_user), torch.from_numpy(data.train_item)
        self.norm_adj = sym_adjacency(user, item, data.num_users, data.num_items)
        self.epoch_adjacency()

    def epoch_adjacency(self) -> torch.Tensor:
        self.user_graph = self.sample(*self.top, np.random.default_rng())
        return self.norm_adj

    def forward(self, adj) -> tuple[torch.Tensor, torch.Tensor]:
        reps = {}
        for m in ("image", "text"):
            temp = self.mlp_1[m](F.leaky_relu(self.mlp[m](self.feats[m])))
            x = F.normalize(torch.cat([self.pref[m], temp]))
            h = torch.sparse.mm(adj, x)
            reps[m] = h + x + torch.sparse.mm(adj, h)
        both = reps["image"] + reps["text"]
        users = torch.matmul(torch.stack([both[:self.n_users], reps["text"][:self.n_users]], dim=2),
                             self.weight_u).squeeze(-1)
        nbr, w = self.user_graph
        users = users + torch.matmul(w.unsqueeze(1), users[nbr]).squeeze(1)
        return users, both[self.n_users:]

    def loss(self, adj, u, p, n) -> torch.Tensor:
        users, items = self.forward(adj)
        score = (users[u] * items[p]).sum(1) - (users[u] * items[n]).sum(1)
        reg = sum((self.pref[m][u] ** 2).mean() for m in self.pref) + (self.weight_u ** 2).mean()
        return -torch.mean(torch.log2(torch.sigmoid(score))) + 0.1 * reg


class ReferenceMMGCN(nn.Module):
    """MMGCN as MMRec computes it: every step both modalities' three-layer GCN over all
    U + I nodes (image through its 4096 -> 256 MLP, text at its 384 width), mean
    aggregation (``torch.sparse.mm`` with D^-1 A here, where MMRec's PyG message passing
    gathers every edge's row), the concatenating g-layers (its ``concate = 'False'``), and
    the id embedding and preferences as untrained tensors that autograd still reaches."""

    def __init__(self, data, features: dict):
        super().__init__()
        n = data.num_users + data.num_items
        self.n_users, self.feats = data.num_users, features
        self.ids = nn.init.xavier_normal_(torch.rand(n, 64, requires_grad=True))
        self.pref = {"image": nn.init.xavier_normal_(torch.rand(data.num_users, 256, requires_grad=True)),
                     "text": nn.init.xavier_normal_(torch.rand(data.num_users, 384, requires_grad=True))}
        self.mlp = nn.Linear(features["image"].shape[1], 256)
        widths = {"image": [256, 64, 64], "text": [features["text"].shape[1], 64, 64]}
        self.conv = nn.ParameterDict({f"{m}{l}": nn.Parameter(nn.init.xavier_normal_(torch.empty(w, w)))
                                      for m, ws in widths.items() for l, w in enumerate(ws)})
        self.linear = nn.ModuleDict({f"{m}{l}": nn.Linear(w, 64) for m, ws in widths.items() for l, w in enumerate(ws)})
        self.g = nn.ModuleDict({f"{m}{l}": nn.Linear(w + 64, 64) for m, ws in widths.items() for l, w in enumerate(ws)})
        user, item = torch.from_numpy(data.train_user), torch.from_numpy(data.train_item)
        rows, cols = torch.cat([user, item + data.num_users]), torch.cat([item + data.num_users, user])
        degree = torch.bincount(rows, minlength=n).float()
        self.mean_adj = torch.sparse_coo_tensor(torch.stack([rows, cols]), 1.0 / degree[rows], (n, n)).to_sparse_csr()
        self.norm_adj = self.mean_adj

    def epoch_adjacency(self) -> torch.Tensor:
        return self.mean_adj

    def gcn(self, m: str, adj) -> torch.Tensor:
        items = self.mlp(self.feats[m]) if m == "image" else self.feats[m]
        x = F.normalize(torch.cat([self.pref[m], items]))
        for l in range(3):
            h = F.leaky_relu(torch.sparse.mm(adj, x @ self.conv[f"{m}{l}"]))
            x_hat = F.leaky_relu(self.linear[f"{m}{l}"](x)) + self.ids
            x = F.leaky_relu(self.g[f"{m}{l}"](torch.cat([h, x_hat], dim=1)))
        return x

    def forward(self, adj) -> tuple[torch.Tensor, torch.Tensor]:
        r = (self.gcn("image", adj) + self.gcn("text", adj)) / 2
        return r[:self.n_users], r[self.n_users:]

    def loss(self, adj, u, p, n) -> torch.Tensor:
        users, items = self.forward(adj)
        return bpr(users[u], items[p], items[n])


def lattice_knn(x: torch.Tensor, k: int) -> torch.Tensor:
    normed = x.div(torch.norm(x, p=2, dim=-1, keepdim=True))
    sim = normed @ normed.T
    val, ind = sim.topk(k, dim=-1)
    return torch.zeros_like(sim).scatter_(-1, ind, val)


def lattice_laplacian(adj: torch.Tensor) -> torch.Tensor:
    inv = adj.sum(-1).pow(-0.5)
    inv[torch.isinf(inv)] = 0.0
    d = torch.diagflat(inv)
    return torch.mm(torch.mm(d, adj), d)


def nce(a: torch.Tensor, b: torch.Tensor, temperature: float) -> torch.Tensor:
    return F.cross_entropy(a @ b.T / temperature, torch.arange(len(a)))


REFERENCES = {"vbpr": ReferenceVBPR, "slmrec": ReferenceSLMRec, "lattice": ReferenceLATTICE,
              "dualgnn": ReferenceDualGNN, "mmgcn": ReferenceMMGCN}


def reference(data_dir: str, model: str, epochs: int, threads: int) -> dict:
    torch.set_num_threads(threads)
    torch.manual_seed(999)
    d = load_rec_data(data_dir)
    features = None
    if model != "lightgcn":
        features = {k: torch.from_numpy(np.load(Path(data_dir) / f"{k}_feat.npy")) for k in ("image", "text")}
    ref = REFERENCES.get(model, Reference)(d, features)
    opt = torch.optim.Adam(ref.parameters(), lr=1e-3, weight_decay=getattr(ref, "weight_decay", 0.0))
    rng = np.random.default_rng(999)
    random.seed(999)
    all_items = list(range(d.num_items))
    history = {u: set(d.train.row(u).tolist()) for u in range(d.num_users)}
    epoch_s, eval_s = [], []
    for _ in range(epochs):
        t0 = time.perf_counter()
        adj = ref.epoch_adjacency()
        order = rng.permutation(len(d.train_user))
        for lo in range(0, len(order), 2048):
            b = order[lo:lo + 2048]
            u, p = d.train_user[b], d.train_item[b]
            n = mmrec_negatives(u, all_items, history)
            loss = ref.loss(adj, *(torch.from_numpy(x) for x in (u, p, n)))
            opt.zero_grad()
            loss.backward()
            opt.step()
        epoch_s.append(time.perf_counter() - t0)
        t1 = time.perf_counter()
        with torch.no_grad():
            users_emb, items_emb = ref.forward(ref.norm_adj)
            res = {}
            for name, truth in (("valid", d.valid), ("test", d.test)):
                users = np.flatnonzero(truth.lengths() > 0)
                res[name] = evaluate_users(users_emb, items_emb, users, d.train, truth, 4096, KS)["recall@20"] / len(users)
        eval_s.append(time.perf_counter() - t1)
    return {"impl": "reference-mmrec-style", "model": model, "ranks": 1, "threads": threads, "epochs": epochs,
            "s_per_epoch": round(_steady(epoch_s), 3), "eval_s": round(_steady(eval_s), 3),
            "valid_recall@20": round(res["valid"], 4),
            "peak_rss_mb": [round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)]}


def _steady(xs: list[float]) -> float:
    return statistics.median(xs[1:] if len(xs) > 1 else xs)


def features_folder(data_dir: str, work: Path) -> Path:
    """Baby's interactions beside the issue's stand-in features (image 4096, then text 384)."""
    folder = work / "baby_feats"
    folder.mkdir(parents=True, exist_ok=True)
    inter = next(Path(data_dir).glob("*.inter"))
    link = folder / inter.name
    if not link.exists():
        link.symlink_to(inter.resolve())
    n = load_rec_data(data_dir).num_items
    rng = np.random.default_rng(0)
    np.save(folder / "image_feat.npy", rng.standard_normal((n, 4096), dtype=np.float32))
    np.save(folder / "text_feat.npy", rng.standard_normal((n, 384), dtype=np.float32))
    return folder


def ours(model: str, ranks: int, data: Path, work: Path, epochs: int, threads: int) -> dict:
    out = work / f"run_{model}_{ranks}x{threads}"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}",
           str(REPO / "launch/train.py"), "--config", str(REPO / f"configs/train/{model}.yaml"),
           "--data", str(data), "--out", str(out), f"epochs={epochs}", "checkpoint_every=0", "save_best=false",
           "resume=never", f"threads={threads}"]
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS=str(threads))
    proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stdout[-4000:]}")
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    final = json.loads((out / "final.json").read_text())
    return {"impl": "cliper-dist", "model": model, "ranks": ranks, "threads": threads, "epochs": epochs,
            "s_per_epoch": round(_steady([r["epoch_s"] for r in lines]), 3),
            "eval_s": round(_steady([r["eval_s"] for r in lines]), 3),
            "valid_recall@20": lines[-1]["valid"]["recall@20"], "peak_rss_mb": final["peak_rss_mb"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True, help="MMRec Baby folder (baby.inter)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--ref-epochs", type=int, default=3)
    parser.add_argument("--layouts", default="1x1,1x2,2x1", help="RANKSxTHREADS per rank, comma-separated")
    parser.add_argument("--models", default="lightgcn,freedom,vbpr,slmrec,lattice,dualgnn,mmgcn")
    parser.add_argument("--ref-threads", default="1,2", help="reference thread counts")
    parser.add_argument("--rounds", type=int, default=1, help="repeat every measurement, alternating")
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="train_bench_"))
    refs: dict[tuple, list[dict]] = {}  # (model, threads) -> one result per round
    rows: dict[tuple, list[dict]] = {}  # (model, ranks, threads) -> one result per round
    for round_ in range(args.rounds):
        for model in args.models.split(","):
            data = Path(args.data) if model == "lightgcn" else features_folder(args.data, work)
            for threads in (int(t) for t in args.ref_threads.split(",")):
                # a fresh process per measurement (torch's thread pool is set once per process)
                proc = subprocess.run([sys.executable, __file__, "--_reference", str(data), model, str(threads),
                                       str(args.ref_epochs)], stdout=subprocess.PIPE, text=True)
                ref = {**json.loads(proc.stdout.strip().splitlines()[-1]), "round": round_}
                refs.setdefault((model, threads), []).append(ref)
                print(json.dumps({"bench": "train_epoch", **ref}), flush=True)
            for layout in args.layouts.split(","):
                ranks, threads = (int(x) for x in layout.split("x"))
                row = {**ours(model, ranks, data, work, args.epochs, threads), "round": round_}
                ref = refs.get((model, ranks * threads), [None])[-1]  # this round's
                if ref is not None:
                    row["epoch_speedup_vs_ref"] = round(ref["s_per_epoch"] / row["s_per_epoch"], 2)
                    row["eval_speedup_vs_ref"] = round(ref["eval_s"] / row["eval_s"], 2)
                rows.setdefault((model, ranks, threads), []).append(row)
                print(json.dumps({"bench": "train_epoch", **row}), flush=True)
    print()
    median = statistics.median
    for (model, t), runs in refs.items():
        print(f"reference {model:<9} 1 proc x {t} thread(s): {median(r['s_per_epoch'] for r in runs):.2f} s/epoch, "
              f"{median(r['eval_s'] for r in runs):.2f} s/eval")
    for (model, ranks, t), runs in rows.items():
        ratios = [r["epoch_speedup_vs_ref"] for r in runs if "epoch_speedup_vs_ref" in r]
        ratio = (f"{median(ratios):.2f}x the reference (rounds: {', '.join(f'{x:.2f}' for x in ratios)})"
                 if ratios else "no reference")
        print(f"ours {model:<9} {ranks} rank(s) x {t} thread(s): {median(r['s_per_epoch'] for r in runs):.2f} "
              f"s/epoch ({ratio}), {median(r['eval_s'] for r in runs):.2f} s/eval, "
              f"peak RSS/rank {runs[-1]['peak_rss_mb']} MB")


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "--_reference":
        print(json.dumps(reference(sys.argv[2], sys.argv[3], int(sys.argv[5]), int(sys.argv[4]))))
    else:
        main()
