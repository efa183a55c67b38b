"""Checkpoints of a training run with torch.distributed.checkpoint (DCP).

Layout under ``RUN_DIR/checkpoints``::

    last            text file: name of the newest complete resume checkpoint
    last-000012/    DCP files of the sharded tables, their fused optimizer state, the dense
                    parameters and Adam state; meta.json (epoch, early-stopping state,
                    metric history, timings); rng.rank<R>.pt (each rank's RNG states)
    best            text file: name of the checkpoint of the best valid epoch
    best-000009/    the same without optimizer states (what tools/recommend.py reads)

Each rank writes only its own table shards; replicated (dense) tensors are written once.
A checkpoint directory becomes visible (its pointer file is replaced atomically) only after
every rank finished writing, so a crash mid-save leaves the previous one in place. Across
nodes the run directory must be on a shared file system. DCP reshards on load, so a run
can be resumed (or served) with another world size.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed.checkpoint as dcp

from cliper_dist import dist

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


def _rng_state() -> dict[str, Any]:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])


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
    torch.save(_rng_state(), path / f"rng.rank{rank}.pt")
    dist.barrier()
    if rank == 0:
        (path / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
        old = resolve(run_dir, kind)
        tmp = root / f".{kind}.tmp"
        tmp.write_text(name + "\n")
        os.replace(tmp, root / kind)  # the switch is atomic
        if old is not None and old != path:
            shutil.rmtree(old, ignore_errors=True)
    dist.barrier()
    return path


def load(path: Path, state: dict[str, Any], rank: int, restore_rng: bool = True) -> dict[str, Any]:
    """Load ``path`` into the templates of ``state`` in place; returns the meta dict."""
    dcp.load(state, checkpoint_id=str(path))
    rng_file = path / f"rng.rank{rank}.pt"
    if restore_rng and rng_file.is_file():  # absent when the world size changed
        _set_rng_state(torch.load(rng_file, weights_only=False))
    return json.loads((path / "meta.json").read_text())
