"""Training samples/s of the CTR trainer (``cliper_dist/ctr/``) against torchrec's DLRM example's way
of training and a plain single-process PyTorch DLRM, same tables, batch and data, in one run.

    python benchmarks/ctr_step.py [--users 200000 --items 100000 --per-user 4 --batch 4096 --dim 64]

Three sides, each 1 process x 1 thread (``--threads``), in this order on the same synthetic samples
(``ctr/synthetic.py``: user, item, brand, category-path tables; counts + item features dense):

- ``ours``: ``CtrTrainer.train_epoch`` (batches built from the samples as the job does, the
  planner's plan, DMP, fbgemm's fused row-wise Adagrad, Adam, ``TrainPipelineSparseDist``);
- ``torchrec_example``: ``torchrec.models.dlrm.DLRMTrain`` the way torchrec's DLRM example
  (``dlrm_main``) trains it: the stock planner and sharders, the table optimizer given through
  ``apply_optimizer_in_backward`` (torchrec's ``RowWiseAdagrad``), the dense optimizer in a
  ``KeyedOptimizerWrapper`` (Adam here, as ours), ``TrainPipelineSparseDist`` over batches built
  ahead (its dataloader hands over ready batches);
- ``plain``: one ``nn.EmbeddingBag`` per feature and Adam on every parameter, dense gradients
  (``ctr/reference.py`` with ``table_optim="adam"``): what a user without torchrec would write.

One JSON line per side (samples/s over ``--steps`` steps after ``--warmup``, peak RSS), then the
ratios. With ``--ranks 2`` ours also runs at 2 ranks (torchrun) and the scaling is printed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cliper_dist import dist  # noqa: E402
from cliper_dist.ctr.catalog import build_field  # noqa: E402
from cliper_dist.ctr.config import DLRMConfig  # noqa: E402
from cliper_dist.ctr.data import CtrData, LabelConfig, Samples, rank_batches, standardise  # noqa: E402
from cliper_dist.ctr.model import build_dlrm  # noqa: E402
from cliper_dist.ctr.reference import ReferenceCtr  # noqa: E402
from cliper_dist.ctr.synthetic import synthetic_ctr  # noqa: E402
from cliper_dist.ctr.trainer import CtrTrainer, tables_of  # noqa: E402
from cliper_dist.parallel.optim import OptimConfig  # noqa: E402
from cliper_dist.train.job import peak_rss_mb  # noqa: E402
from workers import run_json  # noqa: E402

SEED = 0


def make_data(args) -> CtrData:
    s = synthetic_ctr(args.users, args.items, args.per_user, seed=SEED, feature_dim=32, brands=2000, categories=300)
    fields = [build_field(s.items, "brand", 1), build_field(s.items, "categories", 1)]
    return CtrData.build(s.inter, s.num_users, s.num_items, LabelConfig("explicit"), SEED, fields,
                         standardise(torch.from_numpy(s.features)), "synthetic")


def arch(args) -> DLRMConfig:
    return DLRMConfig(embedding_dim=args.dim, bottom_mlp=[128], top_mlp=[128, 64], bottom_out="relu",
                      sharding=args.sharding)  # relu: the example's DLRM


def samples_for(data: CtrData, args, steps: int) -> Samples:
    s = data.train_samples(0)
    need = steps * args.batch
    if len(s) < need:
        s = s.take(np.arange(need) % len(s))
    return s.take(np.arange(need))


def time_ours(data: CtrData, args, info) -> float:
    trainer = CtrTrainer(data, arch(args), OptimConfig(), args.batch, SEED, info)
    warm = samples_for(data, args, args.warmup)
    timed = samples_for(data, args, args.steps)
    data.train_samples = lambda epoch: warm if epoch == 0 else timed  # type: ignore[method-assign]
    trainer.train_epoch(0)
    start = time.perf_counter()
    trainer.train_epoch(1)
    return args.steps * args.batch / (time.perf_counter() - start)


def time_torchrec_example(data: CtrData, args, info) -> float:
    from torchrec.distributed.model_parallel import DistributedModelParallel, get_default_sharders
    from torchrec.distributed.planner import EmbeddingShardingPlanner, Topology
    from torchrec.distributed.train_pipeline import TrainPipelineSparseDist
    from torchrec.optim.apply_optimizer_in_backward import apply_optimizer_in_backward
    from torchrec.optim.keyed import CombinedOptimizer, KeyedOptimizerWrapper
    from torchrec.optim.optimizers import in_backward_optimizer_filter
    from torchrec.optim.rowwise_adagrad import RowWiseAdagrad

    a = arch(args)
    model = build_dlrm(a, tables_of(data), data.dense_dim, SEED)
    apply_optimizer_in_backward(RowWiseAdagrad, model.model.sparse_arch.parameters(), {"lr": a.table_lr, "eps": 1e-8})
    planner = EmbeddingShardingPlanner(topology=Topology(world_size=info.world_size, compute_device="cpu",
                                                         local_world_size=info.world_size),
                                       batch_size=args.batch // info.world_size)
    plan = planner.collective_plan(model, get_default_sharders(), torch.distributed.GroupMember.WORLD)
    dmp = DistributedModelParallel(model, device=torch.device("cpu"), plan=plan)
    dense = KeyedOptimizerWrapper(dict(in_backward_optimizer_filter(dmp.named_parameters())),
                                  lambda params: torch.optim.Adam(params, lr=1e-3))
    pipeline = TrainPipelineSparseDist(dmp, CombinedOptimizer([dmp.fused_optimizer, dense]), torch.device("cpu"))

    def run(steps: int) -> None:
        batches = [data.batch(b) for b in rank_batches(samples_for(data, args, steps), args.batch, info.rank,
                                                         info.world_size)]
        it = iter(batches)
        start = time.perf_counter()
        while True:
            try:
                pipeline.progress(it)
            except StopIteration:
                return start

    run(args.warmup)
    start = run(args.steps)
    return args.steps * args.batch / (time.perf_counter() - start)


def time_plain(data: CtrData, args) -> float:
    ref = ReferenceCtr(arch(args), OptimConfig(), tables_of(data), data.dense_dim, SEED, table_optim="adam")
    for b in rank_batches(samples_for(data, args, args.warmup), args.batch, 0, 1):
        ref.step(data.batch(b))
    start = time.perf_counter()
    for b in rank_batches(samples_for(data, args, args.steps), args.batch, 0, 1):
        ref.step(data.batch(b))
    return args.steps * args.batch / (time.perf_counter() - start)


def one_side(args) -> None:
    """Measure one side in this process and print its line (rank 0)."""
    torch.set_num_threads(args.threads)
    info = dist.init(device="cpu")
    data = make_data(args)
    sps = {"ours": time_ours, "torchrec_example": time_torchrec_example}[args.side](data, args, info) \
        if args.side != "plain" else time_plain(data, args)
    rss = dist.all_gather_object(round(peak_rss_mb(), 1)) if info.world_size > 1 else [round(peak_rss_mb(), 1)]
    if info.is_main:
        print(json.dumps({"side": args.side, "ranks": info.world_size, "samples_per_s": round(sps, 1),
                          "peak_rss_mb": rss, "batch": args.batch, "dim": args.dim, "users": args.users,
                          "items": args.items, "steps": args.steps, "threads": args.threads}), flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--users", type=int, default=200_000)
    p.add_argument("--items", type=int, default=100_000)
    p.add_argument("--per-user", type=int, default=4)
    p.add_argument("--batch", type=int, default=4096)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--steps", type=int, default=100, help="timed steps per side (20 steps timed 0.45 s here: too noisy)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--sharding", default="auto")
    p.add_argument("--ranks", type=int, default=1, help="also time ours at this many ranks (torchrun)")
    p.add_argument("--side", default="", help=argparse.SUPPRESS)  # internal: measure one side
    args = p.parse_args()
    if args.side:
        return dist.run_main(lambda: one_side(args))  # the process group torn down on every path
    passed = [a for a in sys.argv[1:]]
    lines = {}
    runs = [("ours", 1), ("torchrec_example", 1), ("plain", 1)] + ([("ours", args.ranks)] if args.ranks > 1 else [])
    for side, ranks in runs:
        cmd = ([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(ranks)] if ranks > 1
               else [sys.executable]) + [__file__, *passed, "--side", side]
        lines[(side, ranks)] = run_json(cmd, f"{side} at {ranks} rank(s)", threads=None)["samples_per_s"]
    ours = lines[("ours", 1)]
    summary = {"summary": "ctr_step", "ours_over_torchrec_example": round(ours / lines[("torchrec_example", 1)], 3),
               "ours_over_plain": round(ours / lines[("plain", 1)], 3),
               "torchrec_example_over_plain": round(lines[("torchrec_example", 1)] / lines[("plain", 1)], 3)}
    if args.ranks > 1:
        summary[f"ours_{args.ranks}_ranks_over_1"] = round(lines[("ours", args.ranks)] / ours, 3)
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
