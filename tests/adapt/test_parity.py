"""The adapt step at 1 and 2 real ranks against a dense float64 implementation of the MCR equations.

The dense side writes out the MCR equations (cliper_dist/adapt/model.py's docstring) in
float64, using no code of cliper_dist.adapt: z = norm(x W + b) per feature head,
z_id = norm(E[items] W_id^T + b_id), symmetric in-batch InfoNCE at scale
s = exp(min(log_scale, log 100)), the co-interaction term -log sigma(s z_i.z_j)
- log sigma(-s z_i.z_k) averaged over the modalities' z, and Adam.
Starting from the adapter's initial parameters it takes the same batches for several steps;
every world size must match the gradients at the first batch, every loss term at every step
and every parameter after the last.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from cliper_dist import dist
from cliper_dist.adapt.job import AdaptConfig, Adapter, load_inputs
from cliper_dist.adapt.model import AdaptModelConfig
from cliper_dist.adapt.pairs import epoch_steps
from cliper_dist.parallel.columns import ColumnParameter
from cliper_dist.parallel.comm import gather_columns
from cliper_dist.parallel.optim import OptimConfig
from tests.train._data import make_mmrec_folder

TOL = 1e-5
STEPS, EPOCH, SEED, LR, EPS = 3, 1, 5, 0.05, 1e-6  # EPS: see tests/model/test_parity.py
BATCH, PAIRS = 10, 24
# distinct weights, so that a term weighted wrongly (or dropped) shows in the total; id_dim 7
# splits unevenly (4 + 3 columns) at 2 ranks
MODEL = dict(dim=8, id_dim=7, temperature=0.2, w_image_text=1.0, w_image_id=0.5, w_text_id=0.7, w_cooccur=1.3)


def adapt_steps(data_dir: str) -> dict:
    """On every rank: the adapter's full parameters before and after STEPS steps of one
    epoch, their gradients at the first batch, the loss terms of each step, the batches,
    and this rank's block shapes."""
    cfg = AdaptConfig(data=data_dir, out="", seed=SEED, batch_size=BATCH, pairs_per_step=PAIRS,
                      model=AdaptModelConfig(**MODEL), optim=OptimConfig(lr=LR, eps=EPS))
    data, features = load_inputs(cfg)
    adapter = Adapter(cfg, data, features, dist.init(device="cpu"))  # against CPU references

    def full(of=lambda p: p.detach()):
        """``of(p)`` for every parameter, whole: column blocks gathered from every rank."""
        return {n: (gather_columns(of(p), p.width, adapter.split) if isinstance(p, ColumnParameter)
                    else of(p)).clone() for n, p in adapter.params.items()}

    before = full()
    items, triples = next(epoch_steps(data, EPOCH, SEED, BATCH, PAIRS))
    adapter.model.loss(adapter.embed(items), tuple(adapter.embed(t) for t in triples))["total"].backward()
    grads = full(lambda p: p.grad)
    adapter.optimizer.zero_grad()  # gradients only: the steps below start from the same state
    losses, batches = [], []
    for step, (items, triples) in enumerate(epoch_steps(data, EPOCH, SEED, BATCH, PAIRS)):
        if step == STEPS:
            break
        batches.append((items, triples))
        losses.append(adapter.step(items, triples))
    return {"before": before, "grads": grads, "after": full(), "losses": losses, "batches": batches,
            "blocks": {n: tuple(p.shape) for n, p in adapter.params.items()}}


# ---- the dense reference -------------------------------------------------------------------
def norm(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=1, keepdim=True)


def nce(a: torch.Tensor, b: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """mean over n of -log softmax(s a b^T)[n, n] by rows and by columns, halved."""
    logits = s * a @ b.T
    diag = logits.diagonal()
    rows = (logits.logsumexp(1) - diag).mean()
    cols = (logits.logsumexp(0) - diag).mean()
    return (rows + cols) / 2


def neg_log_sigmoid(x: torch.Tensor) -> torch.Tensor:
    return torch.log1p(torch.exp(-x))


def dense_terms(p: dict, image: torch.Tensor, text: torch.Tensor, items, triples) -> dict:
    def z(rows):
        rows = torch.as_tensor(rows)
        return {"image": norm(image[rows] @ p["image.weight"] + p["image.bias"]),
                "text": norm(text[rows] @ p["text.weight"] + p["text.bias"]),
                "id": norm(p["id_table"][rows] @ p["id_weight"].T + p["id_bias"])}

    s = torch.exp(torch.clamp(p["log_scale"], max=np.log(100.0)))
    zb, w = z(items), MODEL
    terms = {"nce_image_text": w["w_image_text"] * nce(zb["image"], zb["text"], s),
             "nce_image_id": w["w_image_id"] * nce(zb["image"], zb["id"], s),
             "nce_text_id": w["w_text_id"] * nce(zb["text"], zb["id"], s)}
    zi, zj, zk = map(z, triples)
    co = [(neg_log_sigmoid(s * (zi[m] * zj[m]).sum(1)) + neg_log_sigmoid(-s * (zi[m] * zk[m]).sum(1))).mean()
          for m in ("image", "text", "id")]
    terms["cooccur"] = w["w_cooccur"] * sum(co) / 3
    terms["total"] = sum(terms.values())
    return terms


def reference(data_dir: Path, before: dict, batches: list) -> tuple[list[dict], dict, dict]:
    """The loss terms of every step, the gradients at the first and the parameters after
    the last, Adam written out."""
    image = torch.from_numpy(np.load(data_dir / "image_feat.npy")).double()
    text = torch.from_numpy(np.load(data_dir / "text_feat.npy")).double()
    p = {n: t.double().clone().requires_grad_() for n, t in before.items()}
    state, losses, grads = {}, [], {}
    for step, (items, triples) in enumerate(batches, start=1):
        terms = dense_terms(p, image, text, items, triples)
        terms["total"].backward()
        grads = grads or {n: t.grad.clone() for n, t in p.items()}
        with torch.no_grad():
            for name, t in p.items():
                m, v = state.setdefault(name, (torch.zeros_like(t), torch.zeros_like(t)))
                m.mul_(0.9).add_(0.1 * t.grad)
                v.mul_(0.999).add_(0.001 * t.grad ** 2)
                t -= LR * (m / (1 - 0.9 ** step)) / ((v / (1 - 0.999 ** step)).sqrt() + EPS)
                t.grad = None
        losses.append({k: float(v.detach()) for k, v in terms.items()})
    return losses, grads, {n: t.detach() for n, t in p.items()}


def _close(a, b, what):
    a, b = torch.as_tensor(a).double(), torch.as_tensor(b).double()
    assert a.shape == b.shape, f"{what}: shape {tuple(a.shape)} != {tuple(b.shape)}"
    err = (a - b).abs().max().item()
    assert err <= TOL, f"{what}: max abs error {err:.3g} > {TOL}"


def test_ranks_match_one_process_and_the_dense_equations(ranks, tmp_path):
    data_dir = make_mmrec_folder(tmp_path / "data", num_users=40, num_items=30)
    runs = {n: ranks.run(adapt_steps, str(data_dir), nproc=n) for n in (1, 2)}
    one = runs[1][0]
    assert len(one["losses"]) == STEPS and all(len(b[1][0]) > 0 for b in one["batches"])
    want_losses, want_grads, want_params = reference(data_dir, one["before"], one["batches"])
    assert sorted(want_params) == sorted(one["after"])
    for nproc, results in runs.items():
        widths = [r["blocks"]["id_table"][1] for r in results]  # each rank holds only its own ID columns
        assert widths == ([7] if nproc == 1 else [4, 3])
        assert [r["blocks"]["id_weight"][1] for r in results] == widths
        for r in results[1:]:  # every rank saw the same batches, losses and gathered parameters
            assert r["losses"] == results[0]["losses"]
            assert all(torch.equal(r["after"][n], results[0]["after"][n]) for n in r["after"])
        res = results[0]
        for n in one["before"]:  # the same start at every world size (column-seeded init)
            assert torch.equal(res["before"][n], one["before"][n]), n
        assert [b[0].tolist() for b in res["batches"]] == [b[0].tolist() for b in one["batches"]]
        for name, want in want_grads.items():  # the distributed backward, before Adam rescales it
            _close(res["grads"][name], want, f"{nproc} ranks: gradient of {name} at the first batch")
        for step, (got, want) in enumerate(zip(res["losses"], want_losses)):
            assert sorted(got) == sorted(want)
            for term in want:
                _close(got[term], want[term], f"{nproc} ranks: {term} at step {step}")
                _close(got[term], one["losses"][step][term], f"{nproc} ranks vs 1: {term} at step {step}")
        for name, want in want_params.items():
            _close(res["after"][name], want, f"{nproc} ranks: {name} after {STEPS} Adam steps")
            _close(res["after"][name], one["after"][name], f"{nproc} ranks vs 1: {name}")
    table = one["after"]["id_table"] - one["before"]["id_table"]
    seen = np.unique(np.concatenate([np.concatenate([b[0], *b[1]]) for b in one["batches"]]))
    assert (table[seen].abs().amax(1) > 1e-3).all()  # the ID table moved where the batches reached it
    assert (one["after"]["log_scale"] != one["before"]["log_scale"]).all()  # the temperature is learned
