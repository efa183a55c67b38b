"""Shared fixtures: the 2-rank launcher every distributed test uses, and small demo data."""

from __future__ import annotations

import os
import pickle
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

REPO = Path(__file__).resolve().parents[1]
WORKER = Path(__file__).with_name("_rank_worker.py")
# Jobs and helpers that say device=auto run on the CPU here and in every child process, also on
# a GPU host: their inputs and references are CPU tensors. tests/e2e/test_gpu.py asks for cuda.
os.environ.setdefault("CLIPER_DEVICE", "cpu")


@pytest.fixture(scope="session", autouse=True)
def children_tmpdir():
    """Launched processes keep their temporary files in one directory, removed after the session:
    torchrun makes a torchelastic_* log directory per run in TMPDIR and never removes it. A short
    name next to the others: a nested session (scripts/gpu_check.sh runs pytest) puts its own
    temporary tree, sockets included, below it, and an AF_UNIX path holds at most 107 bytes."""
    before = os.environ.get("TMPDIR")
    path = tempfile.mkdtemp(prefix="cliper-")
    os.environ["TMPDIR"] = path
    yield path
    shutil.rmtree(path, ignore_errors=True)
    if before is None:
        os.environ.pop("TMPDIR")
    else:
        os.environ["TMPDIR"] = before


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.setdefault("OMP_NUM_THREADS", "1")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def torchrun_cmd(nproc: int, script: str | Path, args: list[str], nnodes: int = 1, node_rank: int = 0,
                 port: int | None = None) -> list[str]:
    """A real torchrun (c10d rendezvous on 127.0.0.1) command line for ``script``.

    A single node rendezvous on port 0 (torchrun binds a free port itself, as --standalone
    does), so concurrent test sessions cannot race for a port; several nodes need ``port``.
    """
    if port is None:
        port = 0 if nnodes == 1 else free_port()
    return [sys.executable, "-m", "torch.distributed.run", f"--nnodes={nnodes}", f"--nproc_per_node={nproc}",
            "--rdzv_backend=c10d", f"--rdzv_endpoint=127.0.0.1:{port}", f"--rdzv_id=test{os.getpid()}-{port}",
            f"--node_rank={node_rank}", "--max_restarts=0", "--monitor_interval=0.2", str(script), *map(str, args)]


def run_with_timeout(cmd: list[str], timeout: float, cwd: Path = REPO) -> subprocess.CompletedProcess:
    """Run ``cmd`` in its own process group; on timeout kill the whole group and fail."""
    proc = subprocess.Popen(cmd, cwd=cwd, env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"timed out after {timeout}s: {' '.join(cmd)}\n{out[-4000:]}")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, "")


def _children(pid: int) -> list[int]:
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            kids.append(int(stat.parent.name))
    return kids


def kill_rank_when(cmd: list[str], ready: Callable[[], bool], what: str, rank: int = 1,
                   timeout: float = 120) -> subprocess.CompletedProcess:
    """Run torchrun ``cmd``; once ``ready()`` holds, SIGKILL worker ``rank`` (as a crash would)
    and return how the job ended. ``what``: the awaited event, for the failure message."""
    proc = subprocess.Popen(cmd, cwd=REPO, env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while not ready():
            if proc.poll() is not None:
                pytest.fail(f"the run ended before {what} (exit {proc.returncode}):\n{proc.stdout.read()[-4000:]}")
            assert time.monotonic() < deadline, f"no {what} within {timeout}s"
            time.sleep(0.005)
        victim = rank_pid(proc.pid, rank)
        assert victim is not None, f"rank {rank} not found among torchrun's children"
        os.kill(victim, signal.SIGKILL)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    return subprocess.CompletedProcess(cmd, proc.returncode, out, "")


def rank_pid(torchrun_pid: int, rank: int) -> int | None:
    """The pid of torchrun's worker ``rank`` (to kill one rank the way a crash would)."""
    for pid in _children(torchrun_pid):
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"RANK={rank}".encode() in env:
            return pid
    return None


@dataclass
class Ranks:
    """Runs functions or launchers on real ranks (torchrun, gloo) with a timeout."""

    tmp: Path

    def run(self, fn, *args, nproc: int = 2, timeout: float = 120) -> list:
        """Call the module-level ``fn(*args)`` on every rank; returns the per-rank results."""
        spec = self.tmp / f"call-{fn.__name__}.pkl"
        spec.write_bytes(pickle.dumps((fn.__module__, fn.__qualname__, args)))
        result = run_with_timeout(torchrun_cmd(nproc, WORKER, [spec]), timeout)
        if result.returncode != 0:
            pytest.fail(f"{fn.__qualname__} failed on {nproc} ranks (exit {result.returncode}):\n{result.stdout[-6000:]}")
        return [pickle.loads(Path(f"{spec}.rank{r}").read_bytes()) for r in range(nproc)]

    def launch(self, script: str, args: list, nproc: int = 2, timeout: float = 180) -> subprocess.CompletedProcess:
        """``torchrun --nproc_per_node nproc script args``; the caller checks the return code."""
        return run_with_timeout(torchrun_cmd(nproc, REPO / script, args), timeout)


@pytest.fixture
def ranks(tmp_path: Path) -> Ranks:
    return Ranks(tmp_path)


def run_python(args: list, timeout: float = 120) -> subprocess.CompletedProcess:
    return run_with_timeout([sys.executable, *map(str, args)], timeout)


@pytest.fixture
def process_group(tmp_path):
    """A one-process gloo group, for code that builds torchrec modules in the test's process. An
    earlier test of this process may have left its world of one initialised."""
    import torch.distributed as torch_dist

    if torch_dist.is_initialized():
        assert torch_dist.get_world_size() == 1
        yield
        return
    torch_dist.init_process_group("gloo", store=torch_dist.FileStore(str(tmp_path / "store"), 1), rank=0,
                                  world_size=1)
    yield
    torch_dist.destroy_process_group()


@pytest.fixture(scope="session")
def demo_raw(tmp_path_factory) -> dict[str, str]:
    from cliper_dist.data.demo import DemoSpec, make_demo_catalog

    return make_demo_catalog(tmp_path_factory.mktemp("demo_raw"), DemoSpec(num_items=120, num_users=150, seed=1))


@pytest.fixture(scope="session")
def demo_dataset(tmp_path_factory, demo_raw) -> Path:
    """A converted demo dataset of 120 items in 5 shards."""
    from cliper_dist.convert.jsonl import convert_jsonl
    from cliper_dist.convert.writer import DatasetWriter, WriterOptions

    out = tmp_path_factory.mktemp("demo_dataset")
    with DatasetWriter(out, WriterOptions(shard_size=25), image_dir=demo_raw["images"]) as writer:
        convert_jsonl(writer, demo_raw["catalog"], interactions=demo_raw["interactions"])
    return out


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory) -> tuple[str, str]:
    """(model config path, random-init checkpoint path) of the tiny open_clip test model."""
    from cliper_dist.encode.encoder import save_random_checkpoint

    model = str(REPO / "configs" / "models" / "clip-tiny.json")
    ckpt = save_random_checkpoint(model, tmp_path_factory.mktemp("ckpt") / "clip-tiny.pt", seed=0)
    return model, str(ckpt)


@pytest.fixture(scope="session")
def demo_features(demo_dataset, tiny_clip, tmp_path_factory) -> Path:
    """The demo dataset encoded by the real launcher at 2 ranks."""
    model, ckpt = tiny_clip
    out = tmp_path_factory.mktemp("features")
    result = run_with_timeout(torchrun_cmd(2, REPO / "launch" / "encode.py", [
        "--data", demo_dataset, "--out", out, "--model", model, "--pretrained", ckpt, "workers=2", "batch_size=16"]),
        timeout=180)
    assert result.returncode == 0, result.stdout[-4000:]
    return out
