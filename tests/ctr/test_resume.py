"""The trainer's DCP state is complete: training resumed from a checkpoint equals training straight
through (tables, fbgemm's row-wise Adagrad state, dense layers, Adam), at 2 real ranks."""

from __future__ import annotations

import pytest
import torch

from cliper_dist import checkpoint, dist
from cliper_dist.ctr.trainer import CtrTrainer, gathered_tables
from tests.ctr.test_parity import SEED, setup, small_data


def _trainer(info) -> CtrTrainer:
    arch, optim = setup("dlrm", "rowwise_adagrad", "row_wise")
    return CtrTrainer(small_data("implicit"), arch, optim, 64, SEED, info)


def _snapshot(t: CtrTrainer, info) -> dict:
    dense = {k: v.clone() for k, v in t.model.dmp.state_dict().items() if "sparse_arch" not in k}
    adam = {k: {n: v.clone() for n, v in s.items()} for k, s in t.model.dense_optimizer.state_dict()["state"].items()}
    moments = {}
    for key, state in t.model.dmp.fused_optimizer.state_dict()["state"].items():
        for name, st in state.items():
            moments[name] = [s.tensor.clone() for s in st.local_shards()]
    return {"tables": gathered_tables(t.model, info.world_size), "dense": dense, "adam": adam, "moments": moments,
            "metrics": t.evaluate()}


def straight_and_resumed(out: str) -> tuple[dict, dict]:
    info = dist.init(device="cpu")
    t = _trainer(info)
    for epoch in range(3):
        t.train_epoch(epoch)
    straight = _snapshot(t, info)
    t = _trainer(info)
    t.train_epoch(0)
    checkpoint.save(out, checkpoint.LAST, 0, t.state_dict(with_optimizer=True), {"epoch": 0}, info.rank)
    t = _trainer(info)
    checkpoint.load(checkpoint.resolve(out), t.state_dict(with_optimizer=True))
    for epoch in (1, 2):
        t.train_epoch(epoch)
    return straight, _snapshot(t, info)


@pytest.mark.slow  # the job test covers resume at 2 ranks; this one pins the state parts
def test_resume_equals_straight_through(ranks, tmp_path):
    for straight, resumed in ranks.run(straight_and_resumed, str(tmp_path / "run")):
        for part in ("tables", "dense", "moments"):
            for name, value in straight[part].items():
                torch.testing.assert_close(resumed[part][name], value, rtol=0, atol=0, msg=f"{part} {name}")
        for name, state in straight["adam"].items():
            for key, value in state.items():
                torch.testing.assert_close(resumed["adam"][name][key], value, rtol=0, atol=0, msg=f"adam {name} {key}")
        assert resumed["metrics"] == straight["metrics"]
