"""One torchrun agent per host, given the addresses a multi-host run needs (launch/multinode.sh).

torchrun run on several hosts as its documentation shows fails in two ways wherever the
hostname resolves to a loopback address (``127.0.1.1 myhost`` in /etc/hosts is common):

- c10d decides which agent hosts the rendezvous store by matching the endpoint against the
  hostname's addresses, so no agent hosts it and every agent times out;
- the ranks' process group listens on the hostname's address, so the other hosts connect to
  themselves and wait, silently, until the collective timeout.

So each node derives its own address from the route to ``MASTER_ADDR`` (the interface
that holds the source address the kernel picks), hosts the store when ``MASTER_ADDR`` is
one of its own addresses and it is node 0, and hands that address and interface to
torchrun (``--local_addr``) and to the ranks (``GLOO_SOCKET_IFNAME``, ``NCCL_SOCKET_IFNAME``).
It logs what it chose; ``LOCAL_ADDR`` and ``SOCKET_IFNAME`` override. A node that cannot
reach the store, a rendezvous that does not complete and a lost peer each end in bounded
time with one ``cliper-dist: error:`` line; docs/multinode.md is the runbook.
"""

from __future__ import annotations

import fcntl
import logging
import os
import socket
import struct
import sys
import threading
import time
from dataclasses import dataclass, fields
from pathlib import Path

from cliper_dist.errors import UserError

LAUNCH = Path(__file__).resolve().parents[1] / "launch"
STAGES = ("convert", "pretrain", "encode", "adapt", "train")
SIOCGIFADDR = 0x8915


@dataclass(frozen=True)
class NodeConfig:
    """A node's launch settings, from the environment variables named in the comments."""

    nnodes: int = 1  # NNODES
    nproc_per_node: int = 1  # NPROC_PER_NODE: ranks on this host
    node_rank: int = 0  # NODE_RANK (or SLURM_NODEID): node 0 hosts the rendezvous store
    master_addr: str = "127.0.0.1"  # MASTER_ADDR: node 0's address (or name) as the other nodes reach it
    master_port: int = 29500  # MASTER_PORT: the rendezvous store's TCP port on node 0
    rdzv_id: str = "cliper"  # RDZV_ID (or SLURM_JOB_ID): the same on every node of one job
    rdzv_timeout: int = 300  # RDZV_TIMEOUT: seconds for every node to join
    connect_timeout: float = 120.0  # CLIPER_CONNECT_TIMEOUT: seconds to reach the store (and ranks to meet)
    max_restarts: int = 0  # MAX_RESTARTS: torchrun restarts the ranks this often after a failure
    local_addr: str = ""  # LOCAL_ADDR: this node's address (default: the source address toward MASTER_ADDR)
    socket_ifname: str = ""  # SOCKET_IFNAME: the interface the ranks bind (default: the one holding LOCAL_ADDR)

    @classmethod
    def from_env(cls, env: dict[str, str]) -> "NodeConfig":
        aliases = {"node_rank": ("NODE_RANK", "SLURM_NODEID"), "rdzv_id": ("RDZV_ID", "SLURM_JOB_ID"),
                   "connect_timeout": ("CLIPER_CONNECT_TIMEOUT",)}
        values = {}
        for f in fields(cls):
            for name in aliases.get(f.name, (f.name.upper(),)):
                if env.get(name):
                    try:
                        values[f.name] = type(f.default)(env[name])
                    except ValueError:
                        raise UserError(f"{name}={env[name]!r} is not a valid {type(f.default).__name__}") from None
                    break
        cfg = cls(**values)
        if cfg.nnodes < 1 or cfg.nproc_per_node < 1:
            raise UserError(f"NNODES and NPROC_PER_NODE must be >= 1; got {cfg.nnodes} and {cfg.nproc_per_node}")
        return cfg


@dataclass(frozen=True)
class NodeNetwork:
    master_ip: str  # MASTER_ADDR resolved
    local_addr: str  # this node's address on the route to it
    ifname: str  # the interface holding local_addr
    hosts_store: bool  # this node's agent hosts the rendezvous store

    def describe(self, cfg: NodeConfig) -> str:
        where = "hosted here" if self.hosts_store else "on node 0"
        return (f"node {cfg.node_rank} of {cfg.nnodes}: address {self.local_addr} on {self.ifname}, rendezvous "
                f"{self.master_ip}:{cfg.master_port} ({where}), {cfg.nproc_per_node} rank(s) here, "
                f"GLOO_SOCKET_IFNAME=NCCL_SOCKET_IFNAME={self.ifname}, max_restarts {cfg.max_restarts} "
                "(override: LOCAL_ADDR, SOCKET_IFNAME)")


def resolve(host: str) -> str:
    """``host`` as an IPv4 address (a name is looked up once, here, for every later use)."""
    try:
        return socket.getaddrinfo(host, None, socket.AF_INET, socket.SOCK_STREAM)[0][4][0]
    except (socket.gaierror, IndexError) as e:
        raise UserError(f"MASTER_ADDR {host!r} does not resolve to an IPv4 address ({e}); set it to node 0's "
                        "address or a name every node resolves") from None


def source_address(ip: str) -> str:
    """The address this host sends from toward ``ip`` (a UDP connect picks the route; nothing is sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect((ip, 9))
        except OSError as e:
            raise UserError(f"no route from this host to MASTER_ADDR {ip} ({e.strerror or e}); check the address "
                            "and this host's network, or set LOCAL_ADDR and SOCKET_IFNAME") from None
        return s.getsockname()[0]


def interface_addresses() -> dict[str, str]:
    """Each interface's (primary) IPv4 address, by name."""
    found = {}
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for _, name in socket.if_nameindex():
            try:
                raw = fcntl.ioctl(s.fileno(), SIOCGIFADDR, struct.pack("256s", name.encode()[:15]))
            except OSError:
                continue  # no IPv4 address
            found[name] = socket.inet_ntoa(raw[20:24])
    return found


def plan_network(cfg: NodeConfig) -> NodeNetwork:
    master_ip = resolve(cfg.master_addr)
    addresses = interface_addresses()
    local = cfg.local_addr or source_address(master_ip)
    ifname = cfg.socket_ifname or next((name for name, addr in addresses.items() if addr == local), "")
    if not ifname:
        raise UserError(f"no interface holds this node's address {local} (interfaces: "
                        f"{', '.join(f'{n}={a}' for n, a in addresses.items())}); set SOCKET_IFNAME")
    if cfg.nnodes > 1 and local.startswith("127.") and not master_ip.startswith("127."):
        raise UserError(f"this node would reach MASTER_ADDR {master_ip} through loopback; set LOCAL_ADDR to its "
                        "address on the network the nodes share")
    is_mine = master_ip.startswith("127.") or master_ip in addresses.values()
    return NodeNetwork(master_ip, local, ifname, hosts_store=is_mine and cfg.node_rank == 0)


def wait_for_store(ip: str, port: int, timeout: float, local: str) -> None:
    """Return once ``ip:port`` accepts a TCP connection; one line after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: OSError | None = None
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((ip, port), timeout=min(5.0, max(deadline - time.monotonic(), 0.1))):
                return
        except OSError as e:
            last = e
            time.sleep(0.5)
    reason = (last.strerror or str(last)) if last else "no answer"
    raise UserError(f"cannot reach the rendezvous store at {ip}:{port} from {local} within {timeout:g} s "
                    f"({reason}): start node 0 (the host whose address is {ip}) with the same command, check that "
                    f"MASTER_ADDR is that host's address as this one reaches it and that TCP port {port} is open "
                    "between the hosts (CLIPER_CONNECT_TIMEOUT sets the wait)")


def torchrun_argv(cfg: NodeConfig, net: NodeNetwork, script: Path, args: list[str]) -> list[str]:
    conf = (f"is_host={int(net.hosts_store)},timeout={cfg.rdzv_timeout},join_timeout={cfg.rdzv_timeout},"
            f"read_timeout={int(cfg.connect_timeout)}")
    return [f"--nnodes={cfg.nnodes}", f"--nproc_per_node={cfg.nproc_per_node}", "--rdzv_backend=c10d",
            f"--rdzv_endpoint={net.master_ip}:{cfg.master_port}", f"--rdzv_id={cfg.rdzv_id}", f"--rdzv_conf={conf}",
            f"--local_addr={net.local_addr}", f"--max_restarts={cfg.max_restarts}", "--monitor_interval=0.5",
            str(script), *args]


def worker_env(net: NodeNetwork, verbose: bool) -> dict[str, str]:
    """What the ranks (and this agent) need: the interface to bind, the address to report."""
    env = {"GLOO_SOCKET_IFNAME": net.ifname, "NCCL_SOCKET_IFNAME": net.ifname, "CLIPER_LOCAL_ADDR": net.local_addr}
    if not verbose:
        env["TORCH_CPP_LOG_LEVEL"] = "ERROR"  # c10d's warnings that a peer's hostname has no reverse DNS entry
    return env


def launch(stage: str, args: list[str], env: dict[str, str]) -> int:
    """Run ``stage`` on this node; returns the exit code (one error line on failure)."""
    if stage not in STAGES:
        raise UserError(f"name the stage first: launch/multinode.sh STAGE [ARGS...], STAGE one of {', '.join(STAGES)}"
                        f"; got {stage!r}")
    cfg = NodeConfig.from_env(env)
    net = plan_network(cfg)
    verbose = bool(env.get("CLIPER_VERBOSE"))
    print(f"multinode: {stage} {net.describe(cfg)}", file=sys.stderr, flush=True)
    if not net.hosts_store:
        wait_for_store(net.master_ip, cfg.master_port, cfg.connect_timeout, net.local_addr)
    os.environ.update(worker_env(net, verbose))
    return _run_torchrun(torchrun_argv(cfg, net, LAUNCH / f"{stage}.py", args), cfg, net, verbose)


def _live_children() -> list[int]:
    """This process's child processes that still run (a rank the blocked agent has not reaped
    is a zombie)."""
    live = []
    for task in Path("/proc/self/task").iterdir():
        try:
            children = (task / "children").read_text().split()
        except OSError:
            continue
        for pid in children:
            try:
                state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except (OSError, IndexError):
                continue
            if state != "Z":
                live.append(int(pid))
    return live


def _guard_agent_exit(ip: str, port: int, timeout: float, local: str) -> None:
    """End this process once its ranks have ended and the rendezvous store has been out of
    reach for ``timeout`` seconds. torchrun's agent closes the rendezvous in the store after
    its ranks end (or waits there for the other nodes to finish), and behind a dead link
    that call blocks while TCP retransmits, for many minutes."""
    def watch() -> None:
        unreachable_since = None
        while True:
            time.sleep(2.0)
            if _live_children():
                unreachable_since = None
                continue
            try:
                socket.create_connection((ip, port), timeout=5.0).close()
                unreachable_since = None
            except OSError:
                unreachable_since = unreachable_since or time.monotonic()
                if time.monotonic() - unreachable_since > timeout:
                    print(f"cliper-dist: error: this node's ranks have ended, and the rendezvous store at {ip}:{port} "
                          f"has been out of reach from {local} for {timeout:g} s: node 0 died or the network between "
                          "the hosts failed; rerun the same command on every node to continue from what was saved",
                          file=sys.stderr, flush=True)
                    os._exit(1)

    threading.Thread(target=watch, name="cliper-agent-guard", daemon=True).start()


def _run_torchrun(argv: list[str], cfg: NodeConfig, net: NodeNetwork, verbose: bool) -> int:
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.elastic.rendezvous.api import RendezvousError, RendezvousTimeoutError
    from torch.distributed.run import parse_args, run

    if not verbose:
        # The agent logs each failure again, with a pointer to torch's docs: the ranks' lines,
        # and this function's, say it already.
        logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)
    store = f"{net.master_ip}:{cfg.master_port}"
    _guard_agent_exit(net.master_ip, cfg.master_port, cfg.connect_timeout, net.local_addr)
    try:
        run(parse_args(argv))
    except RendezvousTimeoutError:
        raise UserError(f"the rendezvous at {store} did not complete within RDZV_TIMEOUT={cfg.rdzv_timeout} s: not "
                        f"all {cfg.nnodes} nodes joined; start every node with the same MASTER_ADDR, MASTER_PORT "
                        f"and RDZV_ID ({cfg.rdzv_id}) and NNODES={cfg.nnodes}") from None
    except RendezvousError as e:
        cause = e.__cause__ or e
        raise UserError(f"lost the rendezvous store at {store} ({str(cause).splitlines()[0][:200]}): node 0's "
                        "agent stopped or the network between the hosts failed; rerun the same command on every "
                        "node to continue from what was saved") from None
    except ChildFailedError as e:
        rank, failure = e.get_first_failure()
        if not failure.error_file_data:  # a rank that reported no line of its own (a crash)
            how = f"signal {failure.signal_name()}" if failure.exitcode < 0 else f"exit code {failure.exitcode}"
            print(f"cliper-dist: error: rank {rank} on {net.local_addr} ended with {how}; its output above says "
                  "why", file=sys.stderr, flush=True)
        return 1
    return 0


def main(argv: list[str]) -> int:
    from cliper_dist.errors import error_line

    try:
        if not argv:
            raise UserError(f"usage: launch/multinode.sh STAGE [ARGS...], STAGE one of {', '.join(STAGES)}")
        return launch(argv[0], argv[1:], dict(os.environ))
    except UserError as e:
        print(error_line(e), file=sys.stderr, flush=True)
        return 2
