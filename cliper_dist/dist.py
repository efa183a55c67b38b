"""Distributed plumbing: torchrun env -> process group, rank-aware logging, teardown, peer loss.

Jobs are written once for any world size: ``python launch/x.py`` runs as a world of one,
``torchrun --nproc_per_node N launch/x.py`` as N ranks (``launch/multinode.sh`` across
hosts). nccl is used when CUDA is present, gloo otherwise. No rank waits forever:

- start-up: the ranks must meet within ``CLIPER_CONNECT_TIMEOUT``, and a multi-host world
  whose hostname resolves to a loopback address is refused before it tries (the trap that
  makes gloo listen where no other host can reach it);
- a crashed or silent peer: ``run_main`` reports a lost connection as one line, and
  ``peers.PeerWatch`` ends a rank whose peer went silent after ``CLIPER_PEER_TIMEOUT``
  (cliper_dist/peers.py); every collective also has ``CLIPER_COLLECTIVE_TIMEOUT``, and a
  failed rank exits, which makes torchrun stop the others.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import datetime
import json
import logging
import os
import socket
import sys
import threading
import time
import uuid
import traceback
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Callable, TypeVar

import torch
import torch.distributed as dist

from cliper_dist import peers
from cliper_dist.errors import UserError, as_user_error, error_line

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


@dataclass(frozen=True)
class Timeouts:
    """How long a rank waits for the others, in seconds; each is overridden by its variable."""

    connect_s: float = 120.0  # CLIPER_CONNECT_TIMEOUT: every rank joins the process group
    collective_s: float = 600.0  # CLIPER_COLLECTIVE_TIMEOUT: one collective completes
    peer_s: float = 120.0  # CLIPER_PEER_TIMEOUT: a peer's heartbeat is silent before it counts as lost

    @classmethod
    def from_env(cls, collective_s: float | None = None) -> "Timeouts":
        values = {}
        for f in fields(cls):
            name = "CLIPER_" + f.name.removesuffix("_s").upper() + "_TIMEOUT"
            default = collective_s if f.name == "collective_s" and collective_s is not None else f.default
            try:
                values[f.name] = float(os.environ.get(name, default))
            except ValueError:
                raise UserError(f"{name} must be a number of seconds; got {os.environ[name]!r}") from None
        return cls(**values)


_watch: peers.PeerWatch | None = None


def local_address() -> str:
    """This host as the other hosts reach it: launch/multinode.sh's choice, else the hostname."""
    return os.environ.get("CLIPER_LOCAL_ADDR") or socket.gethostname()


CONNECT_GRACE_S = 2.0  # past CLIPER_CONNECT_TIMEOUT, for gloo's own, more specific, error


def init(device: str = "auto", collective_timeout_s: float | None = None) -> DistInfo:
    """Join the process group torchrun describes (a private one-member group without torchrun).

    device: "auto", "cpu" or "cuda" (``choose_device``); "auto" defers to ``CLIPER_DEVICE``
    where it is set (the test suite pins cpu with it, so a GPU host runs the CPU tests on the CPU).
    collective_timeout_s: this job's default for ``CLIPER_COLLECTIVE_TIMEOUT``.
    """
    global _watch
    rank, local_rank, world_size = world_info_from_env()
    timeouts = Timeouts.from_env(collective_timeout_s)
    if device == "auto":
        device = os.environ.get("CLIPER_DEVICE") or "auto"
        if device not in ("auto", "cpu", "cuda"):
            raise UserError(f"CLIPER_DEVICE must be auto, cpu or cuda; got {device!r}")
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    dev, warning = choose_device(device, local_rank, int(os.environ.get("LOCAL_WORLD_SIZE", 1)), gpus)
    use_cuda = dev.type == "cuda"
    if use_cuda:
        torch.cuda.set_device(dev)
    backend = "nccl" if use_cuda else "gloo"
    cores: list[int] = []
    if not dist.is_initialized():
        if not use_cuda:  # once, before gloo starts its threads (a thread inherits its creator's cores)
            cores = bind_cpus(local_rank, int(os.environ.get("LOCAL_WORLD_SIZE", 1)))
        # A world of one still gets a (single-member) group, so torchrec and the collectives
        # run the same code path with or without torchrun.
        store = dist.HashStore() if "MASTER_ADDR" not in os.environ else None
        if store is None:
            _refuse_unreachable_hostname(world_size)
            _agree_on_backend(backend, rank, world_size, timeouts.connect_s)
        cannot_connect = (f"rank {rank} could not connect to the other {world_size - 1} rank(s) within "
                          f"{timeouts.connect_s:g} s (CLIPER_CONNECT_TIMEOUT)")
        # gloo honours the timeout on the side that connects; the side that waits for a peer's
        # connection can wait far longer (a minute and more), so the bound is enforced here
        deadline = threading.Timer(timeouts.connect_s + CONNECT_GRACE_S, peers.exit_with_line,
                                   (f"cliper-dist: error: {cannot_connect}: no connection from them; {_IFNAME_HINT}", 2))
        deadline.daemon = True
        deadline.start()
        try:
            dist.init_process_group(
                backend=backend,
                timeout=datetime.timedelta(seconds=timeouts.connect_s),
                device_id=dev if use_cuda else None,
                **({"store": store, "rank": rank, "world_size": world_size} if store is not None else {}),
            )
        except (dist.DistError, RuntimeError) as e:
            raise UserError(f"{cannot_connect}: {peers.first_line(e)}; {_IFNAME_HINT}") from None
        finally:
            deadline.cancel()
        dist.distributed_c10d._set_pg_timeout(datetime.timedelta(seconds=timeouts.collective_s))
        if store is None and world_size > 1:
            _watch = peers.PeerWatch(rank, world_size, os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]),
                               timeouts.peer_s, on_lost=_peer_lost).start()
    setup_logging(rank, world_size)
    if warning and int(os.environ.get("LOCAL_RANK", 0)) == 0:
        log.warning("%s", warning)
    if cores and local_rank == 0:
        log.info("each of this host's %s ranks runs on its own share of the cores (%s=1; rank 0: %d)",
                 os.environ["LOCAL_WORLD_SIZE"], BIND_CPUS_ENV, len(cores))
    return DistInfo(rank, local_rank, world_size, dev, backend)


BIND_CPUS_ENV = "CLIPER_BIND_CPUS"


def bind_cpus(local_rank: int, local_ranks: int) -> list[int]:
    """With ``CLIPER_BIND_CPUS=1``, give each of a host's CPU ranks its own share of the cores this
    process may use; returns this rank's (empty: left unbound).

    Ranks that float over shared cores preempt each other, and each preemption stalls the other
    ranks at the next collective; bound, a rank's gloo threads wait on its own core. Cores are
    taken in (socket, core) order so that a share keeps SMT siblings and sockets together.
    Off by default: bound, a rank's threads share fewer cores, so one is likelier to be preempted
    holding a lock, and a DataLoader worker forked at that moment (pretrain, encode) inherits the
    lock held and hangs; that happened once in a run of the suite. Unbound also with one rank,
    with fewer cores than ranks, or where the launcher already bound this rank (numactl, taskset:
    fewer cores than its parent's)."""
    if not hasattr(os, "sched_setaffinity") or os.environ.get(BIND_CPUS_ENV, "0") != "1":
        return []
    allowed = os.sched_getaffinity(0)
    try:
        if allowed != os.sched_getaffinity(os.getppid()):
            return []
    except OSError:
        pass  # the parent is gone or not ours to read: decide on this process's cores alone
    cores = cpu_share(sorted(allowed, key=_cpu_topology), local_rank, local_ranks)
    if not cores:
        return []
    try:
        threads = [int(t) for t in os.listdir("/proc/self/task")]  # those already running (torch's pool)
    except OSError:
        threads = [0]
    for thread in threads:
        try:
            os.sched_setaffinity(thread, cores)
        except OSError:
            pass  # it ended meanwhile, or it is not ours to move: binding is an optimisation
    return cores


def cpu_share(cpus: list[int], local_rank: int, local_ranks: int) -> list[int]:
    """Rank ``local_rank``'s consecutive share of ``cpus`` among ``local_ranks`` (the first ranks take
    one more where they do not divide); none with one rank or fewer CPUs than ranks."""
    if local_ranks < 2 or len(cpus) < local_ranks:
        return []
    share, extra = divmod(len(cpus), local_ranks)
    start = local_rank * share + min(local_rank, extra)
    return cpus[start:start + share + (local_rank < extra)]


def _cpu_topology(cpu: int) -> tuple[int, int, int]:
    """(socket, core, cpu) of a logical CPU, from sysfs (its number alone where sysfs says nothing)."""
    topology = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
    try:
        return (int((topology / "physical_package_id").read_text()), int((topology / "core_id").read_text()), cpu)
    except (OSError, ValueError):
        return (0, cpu, cpu)


def choose_device(requested: str, local_rank: int, local_ranks: int, gpus: int) -> tuple[torch.device, str | None]:
    """This rank's device, and a warning when ``auto`` leaves GPUs unused.

    nccl gives each rank a GPU of its own, and gloo cannot carry the collectives of CUDA
    tensors, so a host runs on its GPUs only when it has one for each of its ``local_ranks``.
    ``auto``: cuda:LOCAL_RANK then, else the CPU (with a warning where there are GPUs, but
    too few). ``cuda``: the same, or one line saying why not. ``cpu``: the CPU.
    """
    if requested == "cpu":
        return torch.device("cpu"), None
    if gpus >= local_ranks:
        return torch.device("cuda", local_rank), None
    if requested == "cuda":
        if gpus == 0:
            raise UserError("device=cuda, but torch sees no usable GPU here (torch.cuda.is_available() is False: a "
                            "CPU build of torch, or no driver); install the CUDA stack with CLIPER_TARGET=cuda "
                            "bash scripts/install.sh, or set device=cpu")
        raise UserError(f"device=cuda with {local_ranks} ranks on this host but {gpus} GPU(s): nccl puts each rank on "
                        f"a GPU of its own; start at most {gpus} rank(s) per host (--nproc_per_node, "
                        "NPROC_PER_NODE), or set device=cpu")
    if gpus:
        return torch.device("cpu"), (f"{local_ranks} ranks on this host but {gpus} GPU(s): running on the CPU "
                                     f"with gloo (nccl puts each rank on a GPU of its own); start {gpus} rank(s) per "
                                     "host to use the GPUs, or set device=cpu")
    return torch.device("cpu"), None


def _agree_on_backend(backend: str, rank: int, world_size: int, timeout_s: float) -> None:
    """Refuse a world whose hosts chose different backends (a host with too few GPUs falls back
    to gloo under device=auto): nccl and gloo ranks would meet and then wait on each other."""
    if world_size == 1:
        return
    store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), is_master=False,
                          wait_for_workers=False, timeout=datetime.timedelta(seconds=timeout_s))
    prefix = f"cliper/backend/{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}/"
    store.set(f"{prefix}{rank}", f"{backend}\t{local_address()}")
    keys = [f"{prefix}{r}" for r in range(world_size)]
    store.wait(keys)
    chosen = [v.decode().split("\t") for v in store.multi_get(keys)]
    if len({b for b, _ in chosen}) > 1:
        where = sorted({f"{b} on {host}" for b, host in chosen})
        raise UserError(f"the hosts chose different backends ({', '.join(where)}): every host needs a GPU for each "
                        "of its ranks for nccl; set device=cpu, or start as many ranks per host as it has GPUs")


_IFNAME_HINT = ("across hosts, start every node with launch/multinode.sh (it binds the ranks to the interface "
                "that reaches MASTER_ADDR), or set GLOO_SOCKET_IFNAME / NCCL_SOCKET_IFNAME to that interface")


def _refuse_unreachable_hostname(world_size: int) -> None:
    """A world spread over hosts with no interface named: gloo and nccl would listen on the
    hostname's address, and a hostname that resolves to loopback (``127.0.1.1 myhost`` in
    /etc/hosts, common) leaves the other hosts connecting to themselves until the timeout."""
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", world_size))
    if local_world >= world_size or os.environ.get("GLOO_SOCKET_IFNAME") or os.environ.get("NCCL_SOCKET_IFNAME"):
        return
    host = socket.gethostname()
    try:
        addr = socket.gethostbyname(host)
    except OSError:
        return
    if addr.startswith("127.") or addr == "::1":
        raise UserError(f"the {world_size} ranks span several hosts, but this host's name {host!r} resolves to "
                        f"{addr}, which the other hosts cannot reach; {_IFNAME_HINT}")


def _peer_lost(line: str) -> None:
    rank = world_info_from_env()[0]
    full = f"cliper-dist: error: rank {rank}: {line}"
    _tell_torchrun(full)
    peers.exit_with_line(full)


def _spans_hosts() -> bool:
    _, _, world_size = world_info_from_env()
    return int(os.environ.get("LOCAL_WORLD_SIZE", world_size)) < world_size


def check_shared_dir(path: str | Path, flag: str = "--out") -> None:
    """Refuse ``path`` unless every rank sees the same directory: checkpoints and part files
    written on one host must be readable on the others (a shared file system, as NFS)."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return
    rank = dist.get_rank()
    token = broadcast_object(uuid.uuid4().hex if rank == 0 else None)
    probe = Path(path) / f".cliper-shared-{token}"  # a new name: no host has it cached
    if rank == 0:
        probe.parent.mkdir(parents=True, exist_ok=True)
        probe.write_text(token)
    barrier()
    seen = all_gather_object((probe.is_file(), local_address()))
    if rank == 0:
        probe.unlink(missing_ok=True)
    blind = [r for r, (ok, _) in enumerate(seen) if not ok]
    if blind:
        hosts = sorted({seen[r][1] for r in blind})
        raise UserError(f"{flag} {path} is not shared between the hosts: rank(s) {_ranges(blind)} on "
                        f"{', '.join(hosts)} do not see what rank 0 ({seen[0][1]}) wrote there, so checkpoints and "
                        f"outputs written there could never be read back; put {flag} on a file system every host "
                        "mounts at the same path (NFS, a parallel file system)")


def _ranges(ranks: list[int]) -> str:
    return ", ".join(str(r) for r in ranks) if len(ranks) <= 8 else f"{ranks[0]}..{ranks[-1]} ({len(ranks)})"


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
    a lost peer one line from every survivor (exit 3), everything exits cleanly.

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
        user, lost = as_user_error(e), peers.peer_failure(e, Timeouts.from_env().collective_s)
        if lost is not None:
            # A peer that failed on its own said why; the survivors stay quiet. A peer that
            # died said nothing: each survivor says which peer it lost, at once.
            code = 3
            if not peers.failure_reported():
                line = f"cliper-dist: error: {lost}"
                print(line, file=sys.stderr, flush=True)
                _tell_torchrun(line)
        elif user is None:
            peers.report_failure()
            tag = f"rank {rank}/{world_size}" if world_size > 1 else "cliper-dist"
            print(f"{tag}: failed\n{traceback.format_exc()}", file=sys.stderr, flush=True)
            code = 1
        else:
            line = error_line(user)
            peers.report_failure(line, local_address())
            if rank == 0:
                print(line, file=sys.stderr, flush=True)
                if _spans_hosts():
                    # Stay up a moment: this rank's exit takes down the rendezvous store that
                    # the other hosts' ranks read this line from.
                    time.sleep(OTHER_RANK_ERROR_DELAY_S + 1.0)
            else:
                # Most input errors strike every rank alike: let rank 0 say it, once per host.
                # On rank 0's host torchrun stops this rank within its monitor interval (0.1 s)
                # when rank 0 fails; elsewhere the first rank of each host repeats rank 0's
                # line. A rank says its own line only when rank 0 had nothing to say.
                time.sleep(OTHER_RANK_ERROR_DELAY_S)
                said = peers.rank0_failure()
                if said is None:
                    print(f"{line} (rank {rank})", file=sys.stderr, flush=True)
                elif said[0] != local_address() and int(os.environ.get("LOCAL_RANK", 0)) == 0:
                    print(said[1], file=sys.stderr, flush=True)
            _tell_torchrun(line)
            code = 2
    finally:
        if code == 0:
            if _watch is not None:
                _watch.done()
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
