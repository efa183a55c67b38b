"""Distributed plumbing: torchrun env -> process group, rank-aware logging, seeding, teardown.

Jobs are written once for any world size: ``python launch/x.py`` runs as a world of one,
``torchrun --nproc_per_node N launch/x.py`` as N ranks. nccl is used when CUDA is present,
gloo otherwise. A failure on one rank must not leave the others waiting in a collective:
``run_main`` logs the error with its rank and exits non-zero, which makes torchrun tear the
other workers down, and every process group carries a timeout for launches without an agent.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import datetime
import json
import logging
import os
import random
import sys
import time
import traceback
from dataclasses import dataclass
from typing import Any, Callable, TypeVar

import numpy as np
import torch
import torch.distributed as dist

from cliper_dist.errors import as_user_error, error_line

T = TypeVar("T")
log = logging.getLogger("cliper_dist")


@dataclass(frozen=True)
class DistInfo:
    rank: int
    local_rank: int
    world_size: int
    device: torch.device
    backend: str

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def world_info_from_env() -> tuple[int, int, int]:
    """(rank, local_rank, world_size) as torchrun sets them; a plain launch is a world of one."""
    rank = int(os.environ.get("RANK", 0))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    return rank, local_rank, world_size


def init(device: str = "auto", timeout_s: float = 600.0) -> DistInfo:
    """Join the process group torchrun describes (a private one-member group without torchrun).

    device: "auto" (cuda:LOCAL_RANK when CUDA is available, else cpu), "cpu" or "cuda".
    """
    rank, local_rank, world_size = world_info_from_env()
    use_cuda = torch.cuda.is_available() if device == "auto" else device == "cuda"
    if use_cuda:
        torch.cuda.set_device(local_rank)
        dev = torch.device("cuda", local_rank)
    else:
        dev = torch.device("cpu")
    backend = "nccl" if use_cuda else "gloo"
    if not dist.is_initialized():
        # A world of one still gets a (single-member) group, so torchrec and the collectives
        # run the same code path with or without torchrun.
        store = dist.HashStore() if "MASTER_ADDR" not in os.environ else None
        dist.init_process_group(
            backend=backend,
            timeout=datetime.timedelta(seconds=timeout_s),
            device_id=dev if use_cuda else None,
            **({"store": store, "rank": rank, "world_size": world_size} if store is not None else {}),
        )
    setup_logging(rank, world_size)
    return DistInfo(rank, local_rank, world_size, dev, backend)


def keep_freed_memory() -> None:
    """Make glibc's malloc keep freed memory for reuse: a process-wide switch for CPU training.

    By default glibc serves each allocation above its mmap threshold (at most 32 MB) with a
    fresh mmap and unmaps it on free, so a full-size tensor allocated per step (a gradient:
    a 200k x 64 table block is 51 MB) is page-faulted in anew each time. With mmap off and
    trimming raised, freed blocks are reused. Call it after loading, so that loading's
    transient arrays still go back to the OS. Does nothing without glibc's mallopt.
    """
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    if hasattr(libc, "mallopt"):
        m_trim_threshold, m_mmap_max = -1, -4
        libc.mallopt(m_mmap_max, 0)
        libc.mallopt(m_trim_threshold, 2**31 - 1)


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def setup_logging(rank: int, world_size: int, level: int = logging.INFO) -> None:
    """Rank 0 logs at ``level``; other ranks log warnings and errors only, tagged by rank."""
    tag = f"[rank{rank}/{world_size}] " if world_size > 1 else ""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"%(asctime)s {tag}%(levelname)s %(message)s", "%H:%M:%S"))
    log.handlers[:] = [handler]
    log.setLevel(level if rank == 0 else logging.WARNING)
    log.propagate = False


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def broadcast_object(obj: T, src: int = 0) -> T:
    """Decide on one rank, agree everywhere (e.g. a plan or a list of pending shards)."""
    if not dist.is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_gather_object(obj: T) -> list[T]:
    if not dist.is_initialized():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def seed_everything(seed: int, rank: int = 0) -> None:
    """Seed python, numpy and torch; ``rank`` offsets the stream so ranks draw differently."""
    s = seed + rank
    random.seed(s)
    np.random.seed(s % 2**32)
    torch.manual_seed(s)


class Progress:
    """A tqdm bar on rank 0 (shown when stderr is a terminal); a no-op on the other ranks."""

    def __init__(self, total: int | None, desc: str, unit: str = "it"):
        self._bar = None
        if world_info_from_env()[0] == 0:
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True, mininterval=1.0,
                             disable=None, file=sys.stderr)

    def update(self, n: int) -> None:
        if self._bar is not None:
            self._bar.update(n)

    def set_postfix(self, **values: str) -> None:
        if self._bar is not None:
            self._bar.set_postfix(values, refresh=False)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


OTHER_RANK_ERROR_DELAY_S = 3.0


def _tell_torchrun(line: str) -> None:
    """Put ``line`` where torchrun's failure summary reads a worker's root cause (its error
    file), so the summary repeats the error instead of a pointer to torch's traceback docs."""
    path = os.environ.get("TORCHELASTIC_ERROR_FILE")
    if path:
        info = {"py_callstack": line, "timestamp": str(int(datetime.datetime.now().timestamp()))}
        with open(path, "w") as f:
            json.dump({"message": {"message": line, "extraInfo": info}}, f)


def run_main(main: Callable[[], int | None]) -> None:
    """Run a launcher's ``main``: a user error becomes one line (from rank 0 when it fails too),
    everything exits cleanly.

    Exiting non-zero (instead of waiting at the next collective) is what lets torchrun stop
    the remaining ranks; the process group is destroyed on every path.
    """
    rank, _, world_size = world_info_from_env()
    code = 0
    try:
        code = main() or 0
    except KeyboardInterrupt:
        code = 130
    except Exception as e:  # noqa: BLE001 - every failure ends here, as one line or a traceback
        user = as_user_error(e)
        if user is None:
            tag = f"rank {rank}/{world_size}" if world_size > 1 else "cliper-dist"
            print(f"{tag}: failed\n{traceback.format_exc()}", file=sys.stderr, flush=True)
            code = 1
        else:
            if rank != 0:
                # Most input errors strike every rank alike: let rank 0 say it, once. torchrun
                # stops this rank within its monitor interval (0.1 s) when rank 0 fails, so
                # the line below only prints when the error is this rank's alone.
                time.sleep(OTHER_RANK_ERROR_DELAY_S)
            line = error_line(user) if rank == 0 else f"{error_line(user)} (rank {rank})"
            print(line, file=sys.stderr, flush=True)
            _tell_torchrun(error_line(user))
            code = 2
    finally:
        if code == 0:
            shutdown()
    # Exit without interpreter finalisation. A failed rank must not join
    # destroy_process_group (it would wait for its peers; process exit closes its sockets
    # and torchrun stops the others). A successful one has written and closed every output,
    # and skipping finalisation avoids an intermittent abort in native static destructors
    # ("terminate called without an active exception") after runs that trained fused fbgemm
    # tables and saved their optimizer state with DCP, which torchrun would report as a failure.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
