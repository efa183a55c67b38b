"""Test hosts (network namespaces, each its own address; tests skip where none can be made)
and ``Cluster``, which runs a stage on several of them through launch/multinode.sh."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from cliper_dist.testing.hosts import TestHosts, unavailable_reason
from tests.conftest import REPO, child_env

LAUNCHER = REPO / "launch" / "multinode.sh"
# Short bounds, so a failure shows in seconds (the defaults are minutes).
TEST_TIMEOUTS = {"CLIPER_CONNECT_TIMEOUT": "20", "CLIPER_PEER_TIMEOUT": "15", "CLIPER_COLLECTIVE_TIMEOUT": "120",
                 "RDZV_TIMEOUT": "60"}


@dataclass
class Ended:
    code: int
    out: str
    seconds: float

    def errors(self) -> list[str]:
        return [line for line in self.out.splitlines() if line.startswith("cliper-dist: error:")]


@dataclass
class Node:
    proc: subprocess.Popen
    log: Path
    started: float


class Cluster:
    """Stages on test hosts: ``run`` one on every host (or a subset) and wait for all."""

    def __init__(self, hosts: TestHosts, logs: Path):
        self.hosts, self.logs = hosts, logs
        self._ports = itertools.count(29400)
        self._runs = itertools.count()

    def start(self, stage: str, args: list, nproc: int = 1, on: list[int] | None = None, env: dict | None = None,
              wrap: dict[int, list[str]] | None = None) -> list[Node]:
        """``stage`` on hosts ``on`` (default all), ``nproc`` ranks each; ``wrap[i]`` prefixes host
        i's command (e.g. another mount namespace)."""
        on = list(range(len(self.hosts))) if on is None else on
        port, run = next(self._ports), next(self._runs)
        nodes = []
        for node_rank, i in enumerate(on):
            node_env = {**child_env(), **TEST_TIMEOUTS, "NNODES": str(len(on)), "NODE_RANK": str(node_rank),
                        "NPROC_PER_NODE": str(nproc), "MASTER_ADDR": self.hosts[on[0]].addr,
                        "MASTER_PORT": str(port), "RDZV_ID": f"test{run}", **(env or {})}
            log = self.logs / f"run{run}-host{i}.log"
            argv = [*(wrap or {}).get(i, []), "bash", str(LAUNCHER), stage, *map(str, args)]
            with log.open("w") as f:
                proc = subprocess.Popen(self.hosts[i].cmd(argv), cwd=REPO, env=node_env, stdout=f,
                                        stderr=subprocess.STDOUT, start_new_session=True)
            nodes.append(Node(proc, log, time.monotonic()))
        return nodes

    def wait(self, nodes: list[Node], timeout: float = 180) -> list[Ended]:
        deadline = time.monotonic() + timeout
        ended = []
        for node in nodes:
            try:
                node.proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                for n in nodes:
                    if n.proc.poll() is None:
                        os.killpg(n.proc.pid, signal.SIGKILL)
                logs = "\n".join(f"--- {n.log.name}\n{n.log.read_text()[-3000:]}" for n in nodes)
                pytest.fail(f"not ended within {timeout:.0f}s:\n{logs}")
            ended.append(Ended(node.proc.returncode, node.log.read_text(), time.monotonic() - node.started))
        return ended

    def run(self, stage: str, args: list, timeout: float = 180, **kw) -> list[Ended]:
        return self.wait(self.start(stage, args, **kw), timeout)


def assert_ok(ended: list[Ended]) -> None:
    failed = [e for e in ended if e.code != 0]
    assert not failed, "\n".join(f"--- exit {e.code}\n{e.out[-4000:]}" for e in failed)


def read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text())


@pytest.fixture
def cluster(tmp_path: Path):
    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    with TestHosts(2) as hosts:
        yield Cluster(hosts, tmp_path)
