"""Resumable checkpoints of a sharded job with torch.distributed.checkpoint (DCP): the train
job's under ``RUN_DIR/checkpoints``, the adapt job's under ``OUT/adapt/checkpoints``.

Layout (train's; adapt writes ``last`` only)::

    last            text file: name of the newest complete resume checkpoint
    last-000012/    DCP files of every rank's column blocks (ID tables, feature tables,
                    projections) and Adam's moments and step count; meta.json (epoch,
                    early-stopping state, metric history, timings, the job's config)
    best            text file: name of the checkpoint of the best valid epoch
    best-000009/    the same without optimizer state (what tools/recommend.py reads)

Each rank writes only its own blocks; replicated tensors are written once. A checkpoint
directory becomes visible (its pointer file is replaced atomically) only after every rank
finished writing, so a crash mid-save leaves the previous one in place. Across nodes the
run directory must be on a shared file system. DCP reshards on load, so a run can be
resumed (or served) at another world size. No RNG state is saved: every random draw of
training derives from (seed, epoch), the same on every rank.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import torch.distributed.checkpoint as dcp

from cliper_dist import dist, files

CHECKPOINTS = "checkpoints"
LAST, BEST = "last", "best"


def checkpoint_root(run_dir: str | Path) -> Path:
    return Path(run_dir) / CHECKPOINTS


def resolve(run_dir: str | Path, kind: str = LAST) -> Path | None:
    """The complete checkpoint of ``kind`` (last | best) of a run, or None."""
    root = checkpoint_root(run_dir)
    pointer = root / kind
    if not pointer.is_file():
        return None
    path = root / pointer.read_text().strip()
    return path if (path / "meta.json").is_file() else None


def save(run_dir: str | Path, kind: str, epoch: int, state: dict[str, Any], meta: dict[str, Any],
         rank: int) -> Path:
    """Write ``state`` (a DCP state dict) and ``meta`` as the ``kind`` checkpoint of ``epoch``."""
    root = checkpoint_root(run_dir)
    name = f"{kind}-{epoch:06d}"
    path = root / name
    if rank == 0:
        root.mkdir(parents=True, exist_ok=True)
        if path.exists():  # a leftover of an interrupted save of the same epoch
            shutil.rmtree(path)
    dist.barrier()
    dcp.save(state, checkpoint_id=str(path))
    dist.barrier()
    if rank == 0:
        files.write_json(path / "meta.json", meta)
        old = resolve(run_dir, kind)
        files.write_text(root / kind, name + "\n")  # the switch is atomic
        if old is not None and old != path:
            shutil.rmtree(old, ignore_errors=True)
    dist.barrier()
    return path


def read_meta(path: Path) -> dict[str, Any]:
    """The meta dict of checkpoint ``path`` (run state, config)."""
    return files.read_json(path / "meta.json")


def load(path: Path, state: dict[str, Any]) -> dict[str, Any]:
    """Load ``path`` into the tensors of ``state`` in place; returns the meta dict."""
    dcp.load(state, checkpoint_id=str(path))
    return read_meta(path)
