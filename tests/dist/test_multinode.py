"""launch/multinode.sh's decisions, without any network: settings from the environment, the
node's address and interface, who hosts the store, what torchrun is told; dist's timeouts."""

from __future__ import annotations

import socket

import pytest

from cliper_dist import dist, peers
from cliper_dist.errors import UserError
from cliper_dist.multinode import NodeConfig, NodeNetwork, interface_addresses, plan_network, torchrun_argv
from cliper_dist.multinode import worker_env


def test_settings_come_from_the_environment_with_slurm_fallbacks():
    cfg = NodeConfig.from_env({"NNODES": "4", "NPROC_PER_NODE": "2", "SLURM_NODEID": "3", "SLURM_JOB_ID": "77",
                               "MASTER_ADDR": "node0", "MASTER_PORT": "29600", "CLIPER_CONNECT_TIMEOUT": "30"})
    assert (cfg.nnodes, cfg.nproc_per_node, cfg.node_rank, cfg.rdzv_id) == (4, 2, 3, "77")
    assert (cfg.master_addr, cfg.master_port, cfg.connect_timeout) == ("node0", 29600, 30.0)
    assert NodeConfig.from_env({"NODE_RANK": "1", "SLURM_NODEID": "3"}).node_rank == 1  # explicit wins
    with pytest.raises(UserError, match="NNODES='two' is not a valid int"):
        NodeConfig.from_env({"NNODES": "two"})
    with pytest.raises(UserError, match="must be >= 1"):
        NodeConfig.from_env({"NPROC_PER_NODE": "0"})


def test_one_node_on_loopback_hosts_the_store_on_lo():
    net = plan_network(NodeConfig())
    assert net.master_ip == "127.0.0.1" and net.local_addr == "127.0.0.1"
    assert net.ifname == next(n for n, a in interface_addresses().items() if a == "127.0.0.1")
    assert net.hosts_store
    assert not plan_network(NodeConfig(node_rank=1)).hosts_store  # a second agent on the same machine


def test_overrides_win_and_an_unknown_address_is_explained():
    net = plan_network(NodeConfig(local_addr="127.0.0.1", socket_ifname="custom0"))
    assert net.ifname == "custom0"
    with pytest.raises(UserError, match="no interface holds this node's address 192.0.2.77"):
        plan_network(NodeConfig(local_addr="192.0.2.77"))
    with pytest.raises(UserError, match="does not resolve"):
        plan_network(NodeConfig(master_addr="no-such-host.invalid"))


def test_torchrun_is_told_the_address_the_store_host_and_the_bounds():
    cfg = NodeConfig(nnodes=2, nproc_per_node=3, master_port=29601, rdzv_id="job", rdzv_timeout=40,
                     connect_timeout=15, max_restarts=2)
    net = NodeNetwork(master_ip="10.0.0.1", local_addr="10.0.0.2", ifname="eth1", hosts_store=False)
    argv = torchrun_argv(cfg, net, "launch/train.py", ["--out", "x"])
    assert argv[-3:] == ["launch/train.py", "--out", "x"]
    assert "--rdzv_endpoint=10.0.0.1:29601" in argv and "--local_addr=10.0.0.2" in argv
    assert "--rdzv_conf=is_host=0,timeout=40,join_timeout=40,read_timeout=15" in argv
    assert "--max_restarts=2" in argv and "--nnodes=2" in argv and "--nproc_per_node=3" in argv
    env = worker_env(net, verbose=False)
    assert env["GLOO_SOCKET_IFNAME"] == env["NCCL_SOCKET_IFNAME"] == "eth1" and env["CLIPER_LOCAL_ADDR"] == "10.0.0.2"


def test_timeouts_read_the_environment(monkeypatch):
    assert dist.Timeouts.from_env(collective_s=99.0).collective_s == 99.0
    monkeypatch.setenv("CLIPER_PEER_TIMEOUT", "7")
    monkeypatch.setenv("CLIPER_COLLECTIVE_TIMEOUT", "30")
    t = dist.Timeouts.from_env(collective_s=99.0)
    assert (t.peer_s, t.collective_s, t.connect_s) == (7.0, 30.0, dist.Timeouts.connect_s)
    monkeypatch.setenv("CLIPER_CONNECT_TIMEOUT", "soon")
    with pytest.raises(UserError, match="CLIPER_CONNECT_TIMEOUT must be a number of seconds"):
        dist.Timeouts.from_env()


def test_a_multi_host_world_on_a_loopback_hostname_is_refused(monkeypatch):
    monkeypatch.setattr(socket, "gethostbyname", lambda host: "127.0.1.1")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")
    monkeypatch.delenv("GLOO_SOCKET_IFNAME", raising=False)
    monkeypatch.delenv("NCCL_SOCKET_IFNAME", raising=False)
    with pytest.raises(UserError, match="resolves to 127.0.1.1, which the other hosts cannot reach"):
        dist._refuse_unreachable_hostname(world_size=2)
    dist._refuse_unreachable_hostname(world_size=1)  # one host: nothing to refuse
    monkeypatch.setenv("GLOO_SOCKET_IFNAME", "eth0")
    dist._refuse_unreachable_hostname(world_size=2)  # an interface named: the ranks bind it


def test_lost_peers_are_told_apart_from_other_failures(monkeypatch):
    monkeypatch.setattr(peers.dist, "is_initialized", lambda: True)
    monkeypatch.setattr(peers.dist, "get_rank", lambda: 1)
    reset = RuntimeError("[/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:537] Read error "
                         "[10.1.0.2]:5802: Connection reset by peer. This is typically caused by a remote worker")
    line = peers.peer_failure(reset, collective_timeout_s=600)
    assert line.startswith("rank 1: lost the connection to a peer at 10.1.0.2 during a collective (Read error")
    assert "This is typically" not in line and "pair.cc" not in line
    timeout = RuntimeError("[../gloo/transport/tcp/unbound_buffer.cc:78] Timed out waiting 25000ms for recv")
    assert "waited longer than CLIPER_COLLECTIVE_TIMEOUT=600 s" in peers.peer_failure(timeout, 600)
    assert peers.peer_failure(RuntimeError("shape mismatch"), 600) is None
    assert peers.peer_failure(ValueError("Connection reset by peer"), 600) is None


def test_ranks_and_gpus_agree_or_the_job_says_why():
    cpu = dist.torch.device("cpu")
    assert dist.choose_device("auto", 1, 2, gpus=2) == (dist.torch.device("cuda", 1), None)
    assert dist.choose_device("auto", 0, 1, gpus=0) == (cpu, None)
    device, warning = dist.choose_device("auto", 1, 2, gpus=1)  # README command 1 on a 1-GPU machine
    assert device == cpu and "2 ranks on this host but 1 GPU(s): running on the CPU with gloo" in warning
    assert dist.choose_device("cpu", 0, 8, gpus=8) == (cpu, None)
    assert dist.choose_device("cuda", 3, 4, gpus=4) == (dist.torch.device("cuda", 3), None)
    with pytest.raises(UserError, match="device=cuda, but torch sees no usable GPU"):
        dist.choose_device("cuda", 0, 1, gpus=0)
    with pytest.raises(UserError, match="device=cuda with 2 ranks on this host but 1 GPU"):
        dist.choose_device("cuda", 0, 2, gpus=1)


def test_init_applies_the_rule_to_the_gpus_torch_reports(monkeypatch):
    """dist.init on a faked GPU count: refused in one line before any process group exists."""
    if dist.torch.distributed.is_initialized():  # an earlier test's world of one (made again where needed)
        dist.shutdown()
    monkeypatch.setattr(dist.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(dist.torch.cuda, "device_count", lambda: 1)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    with pytest.raises(UserError, match=r"device=cuda with 2 ranks on this host but 1 GPU\(s\)"):
        dist.init("cuda")
    monkeypatch.setenv("CLIPER_DEVICE", "cuda")  # what device=auto defers to
    with pytest.raises(UserError, match="device=cuda with 2 ranks"):
        dist.init("auto")
    monkeypatch.setenv("CLIPER_DEVICE", "gpu")
    with pytest.raises(UserError, match="CLIPER_DEVICE must be auto, cpu or cuda; got 'gpu'"):
        dist.init("auto")
    monkeypatch.setattr(dist.torch.cuda, "is_available", lambda: False)
    with pytest.raises(UserError, match="device=cuda, but torch sees no usable GPU"):
        dist.init("cuda")
    assert not dist.torch.distributed.is_initialized()
