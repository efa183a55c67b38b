"""End-to-end encode throughput vs the model-only ceiling, at 1 and 2 ranks, in one run.

    python benchmarks/encode_throughput.py [--model configs/models/clip-tiny.json | ViT-B-32]
        [--items 2000] [--batch-size 64] [--workers 1] [--threads 1]

Builds a synthetic demo dataset and a random-init checkpoint, then measures on the same
model and batch size:
  ceiling        model-only items/s: the job's forward (image + all text views, chunk sums
                 included) on batches that are already decoded and tokenized, one process
                 with ``--threads`` threads (what one rank gets);
  ceiling_2proc  the same in 2 concurrent processes, summed: what the machine gives 2 ranks
                 that do nothing but the forward;
  pipeline       input-only items/s of one worker (decode, resize, prompts, tokenize);
  e2e_1, e2e_2   the real job (torchrun launch/encode.py) at 1 and 2 ranks, items over the
                 encode phase's wall time (workers starting up included).
Prints one JSON line; ratios are taken within the run, so a busy machine affects all alike.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cliper_dist.convert.jsonl import convert_jsonl  # noqa: E402
from cliper_dist.convert.writer import DatasetWriter, WriterOptions  # noqa: E402
from cliper_dist.data.dataset import DatasetDir  # noqa: E402
from cliper_dist.data.demo import DemoSpec, make_demo_catalog  # noqa: E402
from cliper_dist.encode.encoder import load_encoder, save_random_checkpoint  # noqa: E402
from cliper_dist.encode.job import launch_batch  # noqa: E402
from cliper_dist.encode.pipeline import ShardBatches, default_image, split_preprocess  # noqa: E402
from cliper_dist.encode.views import TextConfig, ViewsConfig  # noqa: E402


def make_dataset(root: Path, items: int, shard_size: int) -> Path:
    raw = make_demo_catalog(root / "raw", DemoSpec(num_items=items, num_users=50, min_per_user=3, max_per_user=6))
    out = root / "data"
    with DatasetWriter(out, WriterOptions(shard_size=shard_size), image_dir=raw["images"]) as writer:
        convert_jsonl(writer, raw["catalog"], interactions=raw["interactions"])
    return out


def ready_batches(data: Path, enc, batch_size: int) -> tuple[list, float]:
    """All batches prepared in this process, and the input pipeline's items/s doing it."""
    ds = DatasetDir.open(data)
    stage, _ = split_preprocess(enc.preprocess)
    batches = ShardBatches([(n, str(ds.shard_path(n))) for n in ds.shard_names], stage, enc.tokenizer,
                           enc.context_length, ViewsConfig(), TextConfig(), batch_size, default_image(""))
    start = time.perf_counter()
    out = [b for b in batches if len(b.index)]
    return out, ds.num_items / (time.perf_counter() - start)


def ceiling(enc, batches: list, threads: int, min_s: float = 5.0) -> float:
    """Model-only items/s over the prepared batches (repeated until ``min_s`` have passed)."""
    torch.set_num_threads(threads)
    _, normalizer = split_preprocess(enc.preprocess)
    cpu = torch.device("cpu")
    launch_batch(enc, normalizer, batches[0], 5, cpu, torch.float32)  # warm-up
    items, start = 0, time.perf_counter()
    while True:
        for b in batches:
            launch_batch(enc, normalizer, b, 5, cpu, torch.float32)
            items += len(b.index)
        if time.perf_counter() - start >= min_s:
            return items / (time.perf_counter() - start)


def ceiling_concurrent(enc, batches: list, threads: int, procs: int) -> float:
    """Summed model-only items/s of ``procs`` processes running the forward at the same time."""
    import multiprocessing as mp

    with mp.get_context("fork").Pool(procs) as pool:
        return sum(pool.starmap(ceiling, [(enc, batches, threads)] * procs))


def end_to_end(nproc: int, data: Path, out: Path, model: str, ckpt: Path, args) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": str(args.threads)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           str(REPO / "launch" / "encode.py"), "--data", str(data), "--out", str(out), "--model", model,
           "--pretrained", str(ckpt), f"batch_size={args.batch_size}", f"workers={args.workers}",
           f"threads={args.threads}"]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"encode failed ({nproc} ranks):\n{result.stderr[-4000:]}")
    stats = json.loads((out / "stats.json").read_text())
    return {"items_per_s": stats["items_per_s"], "encode_s": stats["encode_s"],
            "data_wait_share": round(sum(r["data_wait_s"] for r in stats["ranks"])
                                     / max(sum(r["seconds"] for r in stats["ranks"]), 1e-9), 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=str(REPO / "configs" / "models" / "clip-tiny.json"))
    parser.add_argument("--items", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=1, help="DataLoader workers per rank")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per rank (and for the ceiling)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="encode_bench_") as tmp:
        root = Path(tmp)
        shard_size = max(1, args.items // 16)
        data = make_dataset(root, args.items, shard_size)
        ckpt = save_random_checkpoint(args.model, root / "ckpt.pt")
        torch.set_num_threads(1)
        enc = load_encoder(args.model, str(ckpt), torch.device("cpu"))
        batches, pipeline = ready_batches(data, enc, args.batch_size)
        ceil = ceiling(enc, batches, args.threads)
        ceil_2 = ceiling_concurrent(enc, batches, args.threads, 2)
        e2e_1 = end_to_end(1, data, root / "f1", args.model, ckpt, args)
        e2e_2 = end_to_end(2, data, root / "f2", args.model, ckpt, args)
    print(json.dumps({
        "model": Path(args.model).stem if args.model.endswith(".json") else args.model, "items": args.items,
        "batch_size": args.batch_size, "workers_per_rank": args.workers, "threads_per_rank": args.threads,
        "cpu_cores": os.cpu_count(), "ceiling_items_per_s": round(ceil, 2),
        "ceiling_2proc_items_per_s": round(ceil_2, 2),
        "pipeline_items_per_s_per_worker": round(pipeline, 2),
        "e2e_1rank_items_per_s": e2e_1["items_per_s"], "e2e_2rank_items_per_s": e2e_2["items_per_s"],
        "e2e_over_ceiling_1rank": round(e2e_1["items_per_s"] / ceil, 3),
        "scaling_2rank_over_1rank": round(e2e_2["items_per_s"] / e2e_1["items_per_s"], 3),
        "e2e_over_ceiling_2rank": round(e2e_2["items_per_s"] / ceil_2, 3),
        "ceiling_scaling_2proc": round(ceil_2 / ceil, 3),
        "data_wait_share_1rank": e2e_1["data_wait_share"], "data_wait_share_2rank": e2e_2["data_wait_share"],
    }))


if __name__ == "__main__":
    main()
