"""Test hosts on one machine: network namespaces joined by a bridge, each with its own address.

Each host is a network namespace with one interface (``eth0``) on a bridge that lives in a
namespace of its own (the "switch"), so the machine's own network is never touched. The
hosts share the file system (as NFS would make a run directory shared) and the hostname,
which resolves to 127.0.0.1 on every host, as on many real machines: exactly the trap a
multi-host launch must avoid. Needs root and iproute2 (``ip``); ``tc`` for link limits.

    with TestHosts(2) as hosts:
        subprocess.run(hosts[0].cmd(["python", "-c", "..."]))
        hosts[1].limit("1gbit")
        hosts[1].kill()   # the host is lost: SIGKILL every process in it

Namespaces are named ``cdt<pid>-...`` after the process that made them. ``down`` (also on
an exception) removes them and their processes; namespaces left by a process that no
longer exists (a killed test run) are removed the next time hosts are made.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass

PREFIX = "cdt"
SUBNET = "10.211.0"  # a private /24 that exists only on the test bridge


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], check=check, capture_output=True, text=True)


def unavailable_reason() -> str | None:
    """Why test hosts cannot be made here (None when they can)."""
    if os.geteuid() != 0:
        return "test hosts need root (network namespaces)"
    if shutil.which("ip") is None:
        return "test hosts need iproute2's `ip`"
    probe = f"{PREFIX}{os.getpid()}-probe"
    made = _ip("netns", "add", probe, check=False)
    if made.returncode != 0:
        return f"cannot make a network namespace: {made.stderr.strip()}"
    _ip("netns", "del", probe, check=False)
    return None


def namespace_pids(name: str) -> list[int]:
    out = _ip("netns", "pids", name, check=False).stdout
    return [int(p) for p in out.split()]


def kill_namespace(name: str) -> None:
    """SIGKILL every process in namespace ``name``, until none is left."""
    for _ in range(50):
        pids = namespace_pids(name)
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.05)


def remove_stale() -> None:
    """Remove the namespaces of test-host sets whose owning process is gone."""
    for line in _ip("netns", "list", check=False).stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        if not name.startswith(PREFIX):
            continue
        owner = name[len(PREFIX):].split("-", 1)[0]
        if owner.isdigit() and not os.path.exists(f"/proc/{owner}"):
            kill_namespace(name)
            _ip("netns", "del", name, check=False)


@dataclass(frozen=True)
class Host:
    name: str  # its network namespace
    addr: str  # its address on the test network
    ifname: str = "eth0"

    def cmd(self, argv: list[str]) -> list[str]:
        """``argv`` run on this host."""
        return ["ip", "netns", "exec", self.name, *argv]

    def kill(self) -> None:
        """The host is lost: every process in it is killed at once."""
        kill_namespace(self.name)

    def limit(self, rate: str, burst: str | None = None) -> None:
        """Shape this host's outgoing traffic to ``rate`` (tc tbf, e.g. "1gbit", "10gbit").

        The bucket holds 2 ms at the rate (at least 64 KiB): enough for the kernel's timer
        granularity, so the link runs at the rate rather than below it.
        """
        bits = _rate_bits(rate)
        burst = burst or f"{max(65536, bits // 8 // 500)}b"
        subprocess.run(["ip", "netns", "exec", self.name, "tc", "qdisc", "replace", "dev", self.ifname, "root",
                        "tbf", "rate", rate, "burst", burst, "latency", "50ms"], check=True, capture_output=True)

    def unlimit(self) -> None:
        subprocess.run(["ip", "netns", "exec", self.name, "tc", "qdisc", "del", "dev", self.ifname, "root"],
                       check=False, capture_output=True)

    def link(self, up: bool) -> None:
        """Bring the host's link up or down (down: its peers hear nothing, as when a host dies
        without closing its connections)."""
        _ip("-n", self.name, "link", "set", self.ifname, "up" if up else "down")


def _rate_bits(rate: str) -> int:
    units = {"kbit": 10**3, "mbit": 10**6, "gbit": 10**9, "bit": 1}
    for unit, scale in units.items():
        if rate.endswith(unit):
            return int(float(rate[: -len(unit)]) * scale)
    raise ValueError(f"unknown rate {rate!r}; use e.g. 1gbit, 10gbit, 500mbit")


class TestHosts:
    """``n`` hosts on one bridge; a context manager that always cleans up."""

    __test__ = False  # not a pytest class

    def __init__(self, n: int):
        self.tag = f"{PREFIX}{os.getpid()}-{id(self) % 10_000}"
        self.switch = f"{self.tag}-sw"
        self.hosts = [Host(f"{self.tag}-h{i}", f"{SUBNET}.{i + 1}") for i in range(n)]

    def __enter__(self) -> "TestHosts":
        self.up()
        return self

    def __exit__(self, *exc) -> None:
        self.down()

    def __getitem__(self, i: int) -> Host:
        return self.hosts[i]

    def __len__(self) -> int:
        return len(self.hosts)

    def up(self) -> None:
        remove_stale()
        try:
            _ip("netns", "add", self.switch)
            _ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
            _ip("-n", self.switch, "link", "set", "br0", "up")
            for i, host in enumerate(self.hosts):
                _ip("netns", "add", host.name)
                _ip("-n", host.name, "link", "set", "lo", "up")
                _ip("link", "add", host.ifname, "netns", host.name, "type", "veth", "peer", "name", f"p{i}",
                    "netns", self.switch)
                _ip("-n", self.switch, "link", "set", f"p{i}", "master", "br0")
                _ip("-n", self.switch, "link", "set", f"p{i}", "up")
                _ip("-n", host.name, "addr", "add", f"{host.addr}/24", "dev", host.ifname)
                _ip("-n", host.name, "link", "set", host.ifname, "up")
        except subprocess.CalledProcessError as e:
            self.down()
            raise RuntimeError(f"making test hosts failed: {' '.join(e.cmd)}: {e.stderr.strip()}") from None

    def down(self) -> None:
        for name in [h.name for h in self.hosts] + [self.switch]:
            kill_namespace(name)
            _ip("netns", "del", name, check=False)
