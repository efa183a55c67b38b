"""The capacity planner counts what the engine holds and sends: its parts against the arrays a
built engine allocates after a few steps, its collectives against comm.STATS at 2 real ranks,
its distinct-items estimate against sampling."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cliper_dist.capacity import MB, Layout, Machine, Workload, collectives, memory
from tests.train._data import make_mmrec_folder

MACHINE = Machine(runtime_mb=0.0, rates={"1": {}}, loopback={"latency_s": 0.0, "bytes_per_s": 1.0})


def _engine(folder, model: str, dim: int = 16, batch: int = 32):
    from cliper_dist import dist
    from cliper_dist.model.registry import model_config
    from cliper_dist.train.job import TrainConfig, build_engine

    cfg = TrainConfig(data=str(folder), model=model_config(model, embedding_dim=dim), batch_size=batch)
    return build_engine(cfg, dist.init(device="cpu")), cfg


def _steps(engine, cfg, n: int) -> list:
    from cliper_dist.model.base import Batch
    from cliper_dist.data.batches import epoch_batches

    graph = engine.model.train_graph(0)
    batches = []
    for step, arrays in enumerate(epoch_batches(engine.data, engine.train_keys, 0, cfg.seed, cfg.batch_size)):
        if step == n:
            break
        batch = Batch(*(torch.from_numpy(a) for a in arrays))
        engine.step(graph, batch)
        batches.append(batch)
    return batches


def _nbytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def _csr_bytes(csr: torch.Tensor) -> int:
    return _nbytes([csr.crow_indices(), csr.col_indices(), csr.values()])


@pytest.mark.parametrize("model", ["lightgcn", "freedom"])
def test_the_counted_parts_are_the_engines_arrays(tmp_path, model):
    folder = make_mmrec_folder(tmp_path / "data", num_users=60, num_items=40, dim=24)
    engine, cfg = _engine(folder, model)
    _steps(engine, cfg, 3)
    d, m = engine.data, engine.model
    widths = tuple(branch.table.width for branch in m.branches.values()) if model == "freedom" else ()
    w = Workload(users=d.num_users, items=d.num_items, interactions=len(d.train_user),
                 held_out=int(d.valid.lengths().sum() + d.test.lengths().sum()), model=model, dim=16,
                 feature_widths=widths)
    parts = memory(w, Layout(), MACHINE)
    ids = [m.user_table, m.item_table]
    assert parts["tables"] == _nbytes(ids)
    blocks = list(m.workspace._blocks.values())
    assert parts["workspace"] == _nbytes(blocks), sorted(m.workspace._blocks)
    adam = engine.optimizer
    moments = [adam.exp_avg[n] for n in adam.params] + [adam.exp_avg_sq[n] for n in adam.params]
    dense = [buf for buf, _ in adam._dense.values()]
    features = [p for n, p in m.named_parameters() if n.startswith("branches.")]
    assert parts["optimizer"] + parts["features"] == _nbytes(moments + dense + features)
    graphs = _csr_bytes(m.full_graph.r) + _csr_bytes(m.full_graph.r_t)
    if model == "freedom":
        pruned = m.train_graph(0)
        s_t = m.item_graph.transposed_csr()
        graphs += _csr_bytes(pruned.r) + _csr_bytes(pruned.r_t) + _nbytes([m.item_graph.neighbours,
                                                                              m.item_graph.weights]) + _csr_bytes(s_t)
        # S^T's size is counted at its bound (2k - 1 distinct neighbours per item)
        assert parts["graph"] >= graphs and parts["graph"] - graphs <= 8 * (2 * 10 - 1) * d.num_items
    else:
        assert parts["graph"] == graphs
    held = [d.train_user, d.train_item, engine.train_keys, *(a for csr in (d.train, d.valid, d.test)
                                                            for a in (csr.indptr, csr.indices))]
    assert parts["data"] == sum(a.nbytes for a in held) + 8 * w.interactions  # + an epoch's order


def collective_bytes(folder: str, model: str) -> list:
    """On each rank: bytes sent per step (comm.STATS) and the planner's count for those batches."""
    from cliper_dist.parallel.comm import STATS

    engine, cfg = _engine(folder, model, batch=32)
    _steps(engine, cfg, 1)  # warm up (S^T, buffers)
    STATS.reset()
    batches = _steps(engine, cfg, 4)
    distinct = float(np.mean([len(torch.unique(torch.cat([b.pos, b.neg]))) for b in batches]))
    widths = tuple(b.table.width for b in engine.model.branches.values()) if model == "freedom" else ()
    w = Workload(users=1, items=engine.data.num_items, interactions=1, model=model, dim=16, batch=32,
                 feature_widths=widths, distinct_items=distinct)
    counted = sum(nbytes for _, nbytes in collectives(w, engine.info.world_size)) * len(batches)
    return [STATS.bytes_sent, counted, STATS.calls, sum(1 for _ in collectives(w, 2)) * len(batches)]


@pytest.mark.parametrize("model", ["lightgcn", "freedom"])
def test_the_counted_collectives_are_what_two_ranks_send(ranks, tmp_path, model):
    folder = make_mmrec_folder(tmp_path / "data", num_users=60, num_items=40, dim=24)
    for sent, counted, calls, counted_calls in ranks.run(collective_bytes, str(folder), model):
        assert sent == pytest.approx(counted, rel=1e-9) and calls == counted_calls


def test_the_distinct_items_of_a_batch_match_sampling():
    w = Workload(users=1000, items=5000, interactions=10**5, batch=2048, zipf=0.65)
    rng = np.random.default_rng(0)
    p = 1.0 / np.arange(1, w.items + 1) ** w.zipf
    p /= p.sum()
    sampled = np.mean([len(np.unique(np.concatenate([rng.choice(w.items, w.batch, p=p),
                                                      rng.integers(w.items, size=w.batch)]))) for _ in range(30)])
    assert w.batch_distinct_items() == pytest.approx(sampled, rel=0.01)


def test_more_ranks_hold_less_and_a_slow_link_costs_time():
    w = Workload(users=200_000, items=70_000, interactions=1_200_000, model="freedom", feature_widths=(4096, 384))
    one, two = memory(w, Layout(1, 1), MACHINE), memory(w, Layout(1, 2), MACHINE)
    for part in ("tables", "optimizer", "features", "workspace"):
        assert two[part] < 0.55 * one[part]
    assert two["data"] == one["data"]  # every rank holds the interactions
    fast = Machine(runtime_mb=0.0, rates={"1": {}}, loopback={"latency_s": 1e-5, "bytes_per_s": 5e9})
    from cliper_dist.capacity import comm_seconds

    msgs = collectives(w, 2)
    assert comm_seconds(msgs, Layout(2, 1, link_gbit=1), fast) > 5 * comm_seconds(msgs, Layout(2, 1, link_gbit=10),
                                                                                  fast) / 2
    assert one["peak"] / MB > 0
