"""Capacity planning for the train job: memory per rank by part and time per epoch, before it runs.

torchrec's planner estimates embedding tables; this covers the whole column-parallel job
(LightGCN, FREEDOM with ``optim.rows=all``). Memory is counted from the arrays a rank
allocates (docs/multinode.md names each). Time is the work of one step (sparse products,
full-size passes, row gathers, GEMMs, Adam, batch sampling) at rates that ``calibrate``
measures on this machine with as many processes at once as a host runs ranks (they share
its memory bandwidth), plus each collective's messages and bytes at the network's latency
and bandwidth: loopback between ranks of one host (calibrated), the link between hosts
(given). ``tools/plan.py`` is the command line; ``benchmarks/plan_check.py`` compares the
predictions with measured runs.
"""

from __future__ import annotations

import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

MB = 2**20
EVAL_TOP_K = 50
KNN_BLOCK = 4096  # rows of the exact kNN's similarity block (model/item_graph.py knn_neighbours)
FEATURE_CHECK_BLOCK = 16_384  # items per finiteness-check block (data/item_features.py)


@dataclass(frozen=True)
class Workload:
    """What one training job holds and does, in counts."""

    users: int
    items: int
    interactions: int  # training interactions (graph edges)
    held_out: int = 0  # valid + test interactions
    model: Literal["lightgcn", "freedom"] = "lightgcn"
    dim: int = 64  # embedding_dim
    layers: int = 2  # n_ui_layers
    batch: int = 2048
    feature_widths: tuple[int, ...] = ()  # freedom: widths of the fine-tuned feature tables (image, text)
    knn_k: int = 10
    edge_dropout: float = 0.8  # freedom
    eval_batch_users: int = 256
    eval_users: int | None = None  # users scored per evaluation (None: every user)
    evaluate: bool = True  # whether the peak includes an evaluation
    zipf: float = 0.65  # item popularity exponent, for the distinct items of a batch
    distinct_items: float | None = None  # freedom: distinct items per batch (None: estimated from zipf)

    @property
    def steps(self) -> int:
        return -(-self.interactions // self.batch)

    @property
    def kept_edges(self) -> int:
        return int(self.interactions * (1.0 - self.edge_dropout)) if self.model == "freedom" else self.interactions

    def batch_distinct_items(self) -> float:
        """Expected distinct items among a batch's B positives (drawn by popularity, Zipf) and B
        uniform negatives: sum_i 1 - (1 - p_i)^B (1 - 1/I)^B."""
        if self.distinct_items is not None:
            return self.distinct_items
        p = 1.0 / np.arange(1, self.items + 1) ** self.zipf
        p /= p.sum()
        miss = np.exp(self.batch * (np.log1p(-p) + math.log1p(-1.0 / self.items)))
        return float(np.sum(1.0 - miss))


@dataclass(frozen=True)
class Layout:
    hosts: int = 1
    ranks_per_host: int = 1
    link_gbit: float = 10.0  # between hosts, per host
    link_latency_us: float = 50.0  # one way, between hosts
    procs_per_machine: int = 0  # ranks sharing one machine's cores and memory (0: a host's; test hosts: all)

    @property
    def world(self) -> int:
        return self.hosts * self.ranks_per_host

    @property
    def sharing(self) -> int:
        return self.procs_per_machine or self.ranks_per_host


@dataclass
class Machine:
    """Measured constants (``calibrate``): seconds per unit of work, at ranks_per_host processes."""

    runtime_mb: float  # a rank's process before any data: interpreter, torch, torchrec, fbgemm, gloo
    rates: dict[str, dict[str, float]]  # str(ranks_per_host) -> kernel -> seconds per unit
    loopback: dict[str, float]  # latency_s per message, bytes_per_s between ranks of one host
    threads: int = 1
    measured: str = ""

    def rate(self, ranks_per_host: int) -> dict[str, float]:
        known = sorted(int(k) for k in self.rates)
        use = max([k for k in known if k <= ranks_per_host] or known[:1])
        return self.rates[str(use)]

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(asdict(self), indent=1))

    @classmethod
    def load(cls, path: str | Path) -> "Machine":
        return cls(**json.loads(Path(path).read_text()))


# -- memory --------------------------------------------------------------------------------

def _cols(width: int, world: int) -> int:
    """The widest rank's share of ``width`` columns (the first width % P ranks get one more)."""
    return -(-width // world)


def memory(w: Workload, layout: Layout, machine: Machine) -> dict[str, float]:
    """Peak resident bytes of one rank by part, the largest of the build, step and evaluation
    peaks (``peak``); each part in bytes."""
    P, U, I, N = layout.world, w.users, w.items, w.interactions
    c = _cols(w.dim, P)
    feat = sum(_cols(width, P) for width in w.feature_widths) if w.model == "freedom" else 0
    parts: dict[str, float] = {"runtime": machine.runtime_mb * MB}
    # RecData (int64): train pairs, train CSR, negative-sampling keys, held-out CSRs; an epoch's order
    parts["data"] = 8 * (5 * N + w.held_out + 3 * (U + 1))
    full_graph = 4 * (U + I + 2) + 16 * N  # R and R^T in CSR: int32 indptr/indices, float32 values
    parts["graph"] = full_graph
    if w.model == "freedom":
        nnz_s = (2 * w.knn_k - 1) * I  # S^T, built at the first backward: distinct (i, j) of both modalities
        parts["graph"] += 4 * (U + I + 2) + 16 * w.kept_edges  # the epoch's pruned graph, beside the full one
        parts["graph"] += 2 * w.knn_k * I * (8 + 4) + 4 * (I + 1) + 8 * nnz_s  # item graph bags and S^T
    parts["tables"] = 4 * (U + I) * c  # the torchrec-held ID blocks
    parts["optimizer"] = 8 * (U + I) * c  # Adam's moments (the gradients are workspace blocks)
    parts["features"] = 0.0
    if w.model == "freedom":
        projections = w.dim * feat + c * len(w.feature_widths)  # weights (d x D/P) and biases (c)
        parts["features"] = 4 * I * feat + 4 * projections  # the fine-tuned tables and their projections
        parts["optimizer"] += 8 * I * feat + 4 * I * feat + 8 * projections  # moments, the dense gradient buffer
    blocks = 2 * (U + I) if w.model == "lightgcn" else 2 * U + 3 * I  # propagation blocks, gradients lent
    parts["workspace"] = 4 * blocks * c
    n_d = w.batch_distinct_items()
    parts["step"] = 4 * 40 * w.batch * c + (8 * n_d * feat if w.model == "freedom" else 0)
    steady = sum(parts[k] for k in ("data", "graph", "tables", "optimizer", "features", "workspace"))
    evaluation = 0.0
    if w.evaluate:  # the gathered I x d item matrix and one score block (the embeddings reuse workspace
        # blocks; what evaluation frees of the workspace is not counted as reused: the heap fragments)
        evaluation = 4 * (I * w.dim + w.eval_batch_users * I) + (4 * I * c if w.model == "freedom" else 0)
    parts["evaluation"] = evaluation
    build = 24 * 3 * (N + w.held_out)  # reading the interactions: the text's table, its columns, the masks
    if w.model == "freedom":  # exact kNN: a modality's normalised copy and one similarity block, all ranks
        widest = max(w.feature_widths)
        knn = 8 * I * widest + 4 * min(KNN_BLOCK, -(-I // P)) * I
        build = max(build, parts["data"] + full_graph + parts["tables"] + knn)
    parts["build"] = build
    parts["peak"] = parts["runtime"] + max(build, steady + max(parts["step"], evaluation))
    return parts


# -- time ----------------------------------------------------------------------------------

SPMM_COLUMNS = (16, 32, 64)
OPERAND_MB = (1, 4, 16, 64, 256)  # dense operands from in-cache to far beyond any cache (and the TLB's reach)


def _interp_log2(points: list[tuple[float, float]], x: float) -> float:
    """The value at ``x``, linear in log2 between the measured points, flat beyond them."""
    points = sorted(points)
    return float(np.interp(math.log2(max(x, 1e-9)), [math.log2(p) for p, _ in points], [v for _, v in points]))


def _spmm_rate(rates: dict[str, float], access: str, columns: int, operand_bytes: float) -> float:
    """Seconds per (nnz x column) of a CSR product whose dense operand has ``operand_bytes``,
    read at rows drawn by ``access``: "zipf" (items, by popularity: the popular rows stay in
    cache) or "uniform" (users). Fast while the operand fits in the caches."""
    by_columns = []
    for c in SPMM_COLUMNS:
        by_size = [(mb * MB, rates[f"spmm_{access}_{c}_{mb}"]) for mb in OPERAND_MB]
        by_columns.append((c, _interp_log2(by_size, operand_bytes)))
    return _interp_log2(by_columns, columns)


def _copy_rate(rates: dict[str, float], nbytes: float) -> float:
    return _interp_log2([(mb * MB, rates[f"copy_{mb}"]) for mb in OPERAND_MB], nbytes)


def collectives(w: Workload, P: int) -> list[tuple[int, float]]:
    """(messages, bytes) each rank sends per step, per collective (comm.STATS counts the same)."""
    if P == 1:
        return []
    c = _cols(w.dim, P)
    if w.model == "lightgcn":  # one ring all-reduce of the scores and three norms
        return [(2 * (P - 1), 2 * (P - 1) / P * 4 * (w.batch + 3))]
    n_d = w.batch_distinct_items()
    out = [(2 * (P - 1), 2 * (P - 1) / P * 12 * w.batch)]  # scores of the ID and both modality BPRs
    for _ in w.feature_widths:  # forward reduce-scatter, backward all-gather of each projection
        out += [(P - 1, 4 * n_d * (w.dim - c)), (P - 1, 4 * (P - 1) * n_d * c)]
    return out


def step_seconds(w: Workload, layout: Layout, machine: Machine) -> dict[str, float]:
    """Seconds of one training step on one rank: compute, and communication."""
    r = machine.rate(layout.sharing)
    P, U, I, B = layout.world, w.users, w.items, w.batch
    c = _cols(w.dim, P)
    by_items, by_users = _spmm_rate(r, "zipf", c, 4 * I * c), _spmm_rate(r, "uniform", c, 4 * U * c)
    copy = _copy_rate(r, 4 * (U + I) * c)
    t = r["step_" + w.model] + r["sample"] * B  # python and autograd per op; the batch (every rank)
    t += 2 * w.layers * w.kept_edges * c * (by_items + by_users)  # forward and backward: R E_i, R^T E_u per layer
    t += copy * 4 * (U + I) * c  # layer-0 copies, the backward's zeroed seed and copy
    t += r["adam"] * (U + I) * c
    t += r["row"] * 30 * B * c  # gathers at the batch rows, their scaled copies, index_adds
    if w.model == "freedom":
        feat = sum(_cols(width, P) for width in w.feature_widths)
        n_d = w.batch_distinct_items()
        t += by_items * (2 * w.knn_k - 1) * I * c + r["row"] * (2 * w.knn_k + 4) * 2 * B * c + copy * I * c
        t += 6 * n_d * w.dim * feat / r["gemm_flops"]  # X W, dX, dW of both projections
        t += r["row"] * 3 * n_d * feat  # the table rows gathered; the dense gradient buffer's fill and copy
        t += r["adam"] * (I * feat + w.dim * feat)
    return {"compute": t, "comm": comm_seconds(collectives(w, P), layout, machine)}


def comm_seconds(msgs: list[tuple[int, float]], layout: Layout, machine: Machine) -> float:
    """Each collective's messages at their latency, its bytes at the bandwidth of where they go:
    the other ranks of this host over loopback, the rest over the host's link, which this
    host's ranks share."""
    P, R = layout.world, layout.ranks_per_host
    if P == 1:
        return 0.0
    local, remote = (R - 1) / (P - 1), (P - R) / (P - 1)
    latency = machine.loopback["latency_s"] + (layout.link_latency_us * 1e-6 if remote else 0.0)
    link = layout.link_gbit * 1e9 / 8 / R
    per_byte = local / machine.loopback["bytes_per_s"] + remote * max(1 / link, 1 / machine.loopback["bytes_per_s"])
    return sum(n * latency + nbytes * per_byte for n, nbytes in msgs)


def epoch_seconds(w: Workload, layout: Layout, machine: Machine) -> dict[str, float]:
    step = step_seconds(w, layout, machine)
    per_epoch = 0.0
    if w.model == "freedom":  # the epoch's degree-sensitive pruning and its graph
        per_epoch = machine.rate(layout.sharing)["prune"] * w.interactions
    compute = w.steps * step["compute"] + per_epoch
    comm = w.steps * step["comm"]
    return {"compute": compute, "comm": comm, "total": compute + comm, "steps": w.steps,
            "step_compute": step["compute"], "step_comm": step["comm"]}


def plan(w: Workload, layout: Layout, machine: Machine) -> dict:
    mem = memory(w, layout, machine)
    return {"workload": asdict(w), "layout": asdict(layout), "world": layout.world,
            "memory_mb": {k: round(v / MB, 1) for k, v in mem.items()},
            "epoch_s": {k: (round(v, 3) if isinstance(v, float) else v) for k, v in epoch_seconds(w, layout,
                                                                                                  machine).items()},
            "distinct_items_per_batch": round(w.batch_distinct_items(), 1) if w.model == "freedom" else None}


# -- calibration ---------------------------------------------------------------------------

def _timed_alone(fn, min_s: float = 0.3, repeat: int = 3) -> float:
    """Median seconds of one call of ``fn`` (each estimate over at least ``min_s``)."""
    fn()
    estimates = []
    for _ in range(repeat):
        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < min_s:
            fn()
            n += 1
        estimates.append((time.perf_counter() - start) / n)
    return statistics.median(estimates)


def kernel_rates(threads: int, sync=lambda: None) -> dict[str, float]:
    """Seconds per unit of each kernel the step model counts, measured in this process as the
    engine calls them, from in-cache to far-beyond-cache sizes. ``sync`` runs before each
    measurement: with several processes, a barrier, so that they share the memory bandwidth
    while they measure, as ranks do."""
    import torch
    from torch.optim.adam import adam

    from cliper_dist.model.bipartite import BipartiteGraph, csr_from_pairs, degree_sensitive_prune

    def _timed(fn, min_s: float = 0.3, repeat: int = 3) -> float:
        sync()
        return _timed_alone(fn, min_s, repeat)

    torch.set_num_threads(threads)
    rng = np.random.default_rng(0)
    rates: dict[str, float] = {}
    nnz = 1_000_000
    for columns in SPMM_COLUMNS:
        for mb in OPERAND_MB:
            operand = mb * MB // (4 * columns)
            out_rows = nnz // 12  # a graph's rows hold 5 to 30 entries (users: ~8, items: ~25)
            popularity = 1.0 / np.arange(1, operand + 1) ** Workload.zipf
            popularity = popularity[rng.permutation(operand)] / popularity.sum()
            for access, cols in (("uniform", rng.integers(operand, size=nnz)),
                                 ("zipf", rng.choice(operand, size=nnz, p=popularity))):
                keys = np.unique(rng.integers(out_rows, size=nnz) * operand + cols)
                R = csr_from_pairs(keys // operand, keys % operand, np.ones(len(keys), np.float32), out_rows,
                                   operand)
                x, out = torch.randn(operand, columns), torch.zeros(out_rows, columns)
                rates[f"spmm_{access}_{columns}_{mb}"] = _timed(lambda: out.addmm_(R, x), min_s=0.2) / (
                    len(keys) * columns)
    for mb in OPERAND_MB:
        a = torch.randn(mb * MB // 4)
        b = torch.empty_like(a)
        rates[f"copy_{mb}"] = _timed(lambda: b.copy_(a), min_s=0.2) / a.numel()
    users, items = 200_000, 70_000
    keys = np.unique(rng.integers(users, size=1_200_000) * items + rng.integers(items, size=1_200_000))
    p, g = torch.randn(40_000_000), torch.randn(40_000_000)  # FREEDOM's feature tables step 10^8 elements
    m, v, step = torch.zeros_like(p), torch.zeros_like(p), torch.zeros(())

    def adam_step():
        step.add_(1)
        adam([p], [g], [m], [v], [], [step], amsgrad=False, beta1=0.9, beta2=0.999, lr=1e-3, weight_decay=0.0,
             eps=1e-8, maximize=False, fused=True)
    rates["adam"] = _timed(adam_step) / p.numel()
    feats, weight = torch.randn(3000, 2048), torch.randn(64, 2048)
    rates["gemm_flops"] = 2 * 3000 * 2048 * 64 / _timed(lambda: feats @ weight.T)
    table, idx = torch.randn(users, 32), torch.from_numpy(rng.integers(users, size=6000))
    sink = torch.zeros(users, 32)
    rates["row"] = (_timed(lambda: table.index_select(0, idx)) + _timed(lambda: sink.index_add_(0, idx, table[:6000]))
                    ) / 2 / (6000 * 32)
    user, item = keys // items, keys % items
    rates["prune"] = _timed(lambda: BipartiteGraph.from_edges(*degree_sensitive_prune(
        user, item, users, items, 0.2, np.random.default_rng(1)), users, items), min_s=0.5, repeat=1) / len(keys)
    return rates


def _engine_rates(threads: int) -> dict[str, float]:
    """The real engine's per-step overhead (tiny tables: python and autograd per op) per model,
    and the batch sampling's seconds per sample (its numpy work on every rank)."""
    import tempfile

    import torch

    from cliper_dist import dist
    from cliper_dist.data.interactions import split_per_user, write_inter
    from cliper_dist.model.base import Batch
    from cliper_dist.model.registry import model_config
    from cliper_dist.data.batches import epoch_batches
    from cliper_dist.train.job import TrainConfig, build_engine

    torch.set_num_threads(threads)
    info = dist.init(device="cpu")
    rng = np.random.default_rng(0)
    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as work:
        folder = Path(work)
        users, items = 2000, 500
        u = np.repeat(np.arange(users), 8)
        keys = np.unique(u * items + rng.integers(items, size=len(u)))
        write_inter(folder / "tiny.inter", split_per_user(keys // items, keys % items, 0))
        np.save(folder / "image_feat.npy", rng.standard_normal((items, 64), dtype=np.float32))
        np.save(folder / "text_feat.npy", rng.standard_normal((items, 32), dtype=np.float32))
        for model in ("lightgcn", "freedom"):
            cfg = TrainConfig(data=str(folder), model=model_config(model, embedding_dim=8), batch_size=64)
            engine = build_engine(cfg, info)
            graph = engine.model.train_graph(0)
            batches = [Batch(*(torch.from_numpy(a) for a in arrays)) for arrays in
                       epoch_batches(engine.data, engine.train_keys, 0, cfg.seed, cfg.batch_size)][:20]
            it = iter(range(10**9))
            out[f"step_{model}"] = _timed_alone(lambda: engine.step(graph, batches[next(it) % len(batches)]))
        # sampling at a scale where its searches leave the caches (x10-like)
        n_users, n_items = 200_000, 70_000
        u = np.repeat(np.arange(n_users), 6)
        keys = np.unique(u * n_items + rng.integers(n_items, size=len(u)))
        write_inter(folder / "tiny.inter", split_per_user(keys // n_items, keys % n_items, 0))
        from cliper_dist.data.recdata import load_rec_data

        data = load_rec_data(str(folder))
        train_keys = data.train_keys()
        batches = epoch_batches(data, train_keys, 0, 0, 2048)
        out["sample"] = _timed_alone(lambda: next(batches), repeat=1) / 2048
    return out


def _runtime_rss_mb() -> float:
    """Peak RSS of a rank's process that has imported the train job and joined a group."""
    code = ("import resource; from cliper_dist import dist; import cliper_dist.train.job, cliper_dist.model.registry;"
            "dist.init(device='cpu'); print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    return float(out.stdout.strip().splitlines()[-1])


def _collective_rates() -> dict[str, float]:
    """Latency per message and bandwidth between two ranks of this host (gloo over loopback)."""
    return json.loads(_python("--_collectives", threads=1, ranks=2))


def _collectives_worker() -> None:
    import torch
    import torch.distributed as torch_dist

    from cliper_dist import dist

    def seconds_per_call(x: torch.Tensor, calls: int) -> float:
        """A fixed number of calls (ranks that each timed themselves would disagree on it)."""
        torch_dist.all_reduce(x)
        start = time.perf_counter()
        for _ in range(calls):
            torch_dist.all_reduce(x)
        return (time.perf_counter() - start) / calls

    info = dist.init(device="cpu")
    small, big = torch.ones(64), torch.ones(4 * 2**20 // 4)
    t_small = seconds_per_call(small, 500)  # 2 messages of 256 B (ring, P=2)
    t_big = seconds_per_call(big, 40)  # 2 messages of 2 MiB
    latency = t_small / 2
    rates = {"latency_s": latency, "bytes_per_s": big.numel() * 4 / max(t_big - 2 * latency, 1e-9)}
    rates = dist.broadcast_object(rates)
    if info.is_main:
        print(json.dumps(rates), flush=True)


def _python(*args: str, threads: int, ranks: int = 1) -> str:
    """Run ``python -m cliper_dist.capacity ARGS`` (under torchrun with ``ranks`` > 1); its last line."""
    launcher = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}"] if ranks > 1 else []
    out = subprocess.run([sys.executable, *launcher, "-m", "cliper_dist.capacity", *args], capture_output=True,
                         text=True, env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
                                         "OMP_NUM_THREADS": str(threads)})
    if out.returncode:
        raise RuntimeError(f"calibration step {args[0]} failed:\n{out.stderr[-3000:]}")
    return out.stdout.strip().splitlines()[-1]


def _kernels_worker(threads: int) -> None:
    """Every rank measures the kernels in step (a barrier before each); rank 0 prints the means."""
    from cliper_dist import dist

    dist.init(device="cpu")
    rates = kernel_rates(threads, sync=dist.barrier)
    everyone = dist.all_gather_object(rates)
    if dist.world_info_from_env()[0] == 0:
        print(json.dumps({k: statistics.mean(r[k] for r in everyone) for k in rates}), flush=True)


def calibrate(ranks_per_host: tuple[int, ...] = (1, 2), threads: int = 1) -> Machine:
    """Measure the machine: each kernel rate with R processes measuring it at once, for each R;
    the engine's per-op overhead and the batch sampling once, alone; a rank's runtime memory;
    loopback collectives."""
    engine = json.loads(_python("--_engine", str(threads), threads=threads))
    rates = {str(R): {**json.loads(_python("--_kernels", str(threads), threads=threads, ranks=R)), **engine}
             for R in ranks_per_host}
    return Machine(runtime_mb=_runtime_rss_mb(), rates=rates, loopback=_collective_rates(), threads=threads,
                   measured=time.strftime("%Y-%m-%d %H:%M"))


if __name__ == "__main__":
    from cliper_dist import dist as _dist

    if sys.argv[1] == "--_kernels":
        _dist.run_main(lambda: _kernels_worker(int(sys.argv[2])))
    elif sys.argv[1] == "--_engine":
        print(json.dumps(_engine_rates(int(sys.argv[2]))), flush=True)
    elif sys.argv[1] == "--_collectives":
        _dist.run_main(_collectives_worker)
