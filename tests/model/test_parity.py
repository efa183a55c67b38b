"""The column-parallel engine at 1, 2, 3 and 4 real ranks against each model's dense reference.

The dense side is the model's reference (``cliper_dist/model/reference/<name>.py``: the
equations as MMRec computes them, whole tables, plain torch) in float64, and Adam, dense or
row-sparse, written out here. Starting from the engine's initial parameters it takes the
same batches for several steps; the engine must match its loss at every step, every
parameter after the last step, the propagated embeddings, and its distributed metrics must
equal a brute-force ranking of the gathered embeddings.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from cliper_dist import dist
from cliper_dist.data.batches import epoch_batches
from cliper_dist.data.item_features import load_job_features
from cliper_dist.data.recdata import load_rec_data
from cliper_dist.model.base import Batch
from cliper_dist.model.reference import REFERENCES
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
    info = dist.init(device="cpu")  # compared with CPU references; tests/e2e/test_gpu.py covers CUDA
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


def reference(res: dict, data, features, case: Case):
    """The model's dense reference (``cliper_dist.model.reference``) in float64 from the engine's
    initial parameters, on the engine's batches and graphs: its losses, its parameters after
    the steps, and its evaluated embeddings at the engine's final parameters."""
    cfg = model_config(**case.model)
    dense = REFERENCES[cfg.name](cfg, data, features, SEED, torch.float64)
    dense.load_state_dict(res["before"])
    graph = dense.epoch_graph(EPOCH)
    losses, state = [], {}
    for users, pos, neg in res["batches"]:
        loss = dense.loss(graph, *(torch.from_numpy(a) for a in (users, pos, neg)))
        loss.backward()
        adam_reference(dict(dense.named_parameters()), state, case.rows, res["tables"], case.weight_decay, case.eps)
        losses.append(float(loss.detach()))
    # the evaluated embeddings: the equations at the engine's final parameters (compared above
    # with the trajectory's), so that Adam-amplified rounding is not counted twice
    final = REFERENCES[cfg.name](cfg, data, features, SEED, torch.float64)
    final.load_state_dict(res["after"])
    final.epoch_graph(EPOCH)  # the epoch's draws (DualGNN's user graph)
    with torch.no_grad():
        users, items = final()
    return losses, {n: t.detach() for n, t in dense.state_dict().items()}, users, items


def _close(a, b, what, relative: bool = False):
    """Max abs error <= TOL; ``relative``: TOL times the largest |b| when that exceeds 1 (float32
    rounding grows with the magnitude: DualGNN's embeddings sum normalised rows over hops and
    neighbours, up to ~3.4 here)."""
    a, b = torch.as_tensor(a).double(), torch.as_tensor(b).double()
    assert a.shape == b.shape, f"{what}: shape {tuple(a.shape)} != {tuple(b.shape)}"
    err = (a - b).abs().max().item() if a.numel() else 0.0
    tol = TOL * max(1.0, b.abs().max().item()) if relative and b.numel() else TOL
    assert err <= tol, f"{what}: max abs error {err:.3g} > {tol:.3g}"


@pytest.mark.parametrize("nproc", [pytest.param(1, marks=pytest.mark.slow), 2, pytest.param(3, marks=pytest.mark.slow), 4])
def test_engine_matches_the_dense_equations(ranks, tmp_path, nproc):
    for name in CASES:
        make_case(tmp_path, name)
    results = ranks.run(run_cases, str(tmp_path), nproc=nproc, timeout=400)
    for name, case in CASES.items():
        res = [r[name] for r in results]
        data_dir, feat_dir = case_dirs(tmp_path, name)
        data = load_rec_data(data_dir)
        features = load_job_features(data_dir, feat_dir, data.num_items, name) if case.features else None
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
        losses, after, users, items = reference(res, data, features, case)
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
