"""2 hosts x 1 rank against 1 host x 2 ranks, over links of a given bandwidth (test hosts).

    sudo python benchmarks/multihost.py --size x10 --models lightgcn,freedom --links 10gbit,1gbit \
        --max-steps 30 --rounds 3

Two network namespaces joined by a bridge stand for two hosts (``cliper_dist.testing.hosts``);
``tc``'s token bucket (tbf) shapes each host's outgoing link to the rate. Each layout runs
``train_scale.py``'s worker (the real engine, ``--max-steps`` steps projected to an epoch, no
evaluation) in its own torchrun: ``1x2`` inside one host (loopback), ``2x1@RATE`` one rank per
host with the c10d rendezvous and interfaces that launch/multinode.sh derives. The layouts
alternate ``--rounds`` times (the machine drifts over minutes); each round prints one JSON line
per layout and the summary the medians and ``slowdown_vs_1x2``. Per step and rank: seconds in
the collectives, bytes sent as the collectives count them and, on 2 hosts, bytes that left the
host's interface (tx counter, the store's heartbeats included). Needs root (namespaces, tc).
Both layouts share the machine's cores, so the difference is the network alone.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.train_scale import SIZES, make_folder, worker_args  # noqa: E402
from cliper_dist.multinode import NodeConfig, NodeNetwork, torchrun_argv, worker_env  # noqa: E402
from cliper_dist.testing.hosts import TestHosts, unavailable_reason  # noqa: E402

WORKER = REPO / "benchmarks" / "train_scale.py"


def result_line(outputs: list[str], cmd: str) -> dict:
    for out in outputs:
        for line in reversed(out.strip().splitlines()):
            if line.startswith("{"):
                return json.loads(line)
    raise SystemExit(f"{cmd} printed no result:\n" + "\n---\n".join(o[-3000:] for o in outputs))


def run_one_host(hosts: TestHosts, folder: Path, model: str, args) -> dict:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(WORKER),
           *worker_args(folder, model, args)]
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    proc = subprocess.run(hosts[0].cmd(cmd), env=env, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"1x2 failed:\n{proc.stderr[-4000:]}")
    return result_line([proc.stdout], "1x2")


def run_two_hosts(hosts: TestHosts, folder: Path, model: str, args, port: int) -> dict:
    procs = []
    for i, host in enumerate(hosts.hosts):
        net = NodeNetwork(master_ip=hosts[0].addr, local_addr=host.addr, ifname=host.ifname, hosts_store=i == 0)
        cfg = NodeConfig(nnodes=2, node_rank=i, master_addr=hosts[0].addr, master_port=port, rdzv_id=f"bench{port}")
        cmd = [sys.executable, "-m", "torch.distributed.run",
               *torchrun_argv(cfg, net, WORKER, worker_args(folder, model, args))]
        env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", **worker_env(net, verbose=False))
        procs.append(subprocess.Popen(host.cmd(cmd), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True))
    outs = []
    for proc in procs:
        out, err = proc.communicate()
        if proc.returncode:
            raise SystemExit(f"2x1 failed:\n{err[-4000:]}")
        outs.append(out)
    return result_line(outs, "2x1")


def summarise(rows: list[dict]) -> list[dict]:
    summary = []
    for model in dict.fromkeys(r["model"] for r in rows):
        mine = [r for r in rows if r["model"] == model]
        base = statistics.median(r["s_per_epoch"] for r in mine if r["layout"] == "1x2")
        for layout in dict.fromkeys(r["layout"] for r in mine):
            these = [r for r in mine if r["layout"] == layout]
            med = statistics.median(r["s_per_epoch"] for r in these)
            summary.append({"bench": "multihost_summary", "model": model, "layout": layout,
                            "s_per_epoch_median": round(med, 2), "slowdown_vs_1x2": round(med / base, 3),
                            "rounds_slowdown": [round(r["s_per_epoch"] / o["s_per_epoch"], 3) for r, o in
                                                zip(these, [x for x in mine if x["layout"] == "1x2"])],
                            "comm_s_per_step": round(statistics.median(max(r["comm_s_per_step"]) for r in these), 5),
                            "comm_bytes_per_step": these[0]["comm_bytes_per_step"],
                            "wire_bytes_per_step": these[0].get("wire_bytes_per_step")})
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", choices=SIZES, default="x10")
    parser.add_argument("--models", default="lightgcn,freedom")
    parser.add_argument("--links", default="10gbit,1gbit", help="comma-separated tc rates for the 2x1 layouts (unlimited: the bare veth)")
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--max-steps", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--knn", choices=("exact", "hnsw"), default="hnsw",
                        help="freedom: the item graph's search (built before the timed steps; hnsw builds faster)")
    parser.add_argument("--workdir", default=None, help="keeps the generated data between runs")
    args = parser.parse_args()
    reason = unavailable_reason()
    if reason:
        raise SystemExit(f"multihost.py: {reason}")
    work = Path(args.workdir or tempfile.mkdtemp(prefix="multihost_"))
    rows = []
    port = 29700
    with TestHosts(2) as hosts:
        for model in args.models.split(","):
            folder = make_folder(args.size, work, model)
            for r in range(args.rounds):
                layouts = [("1x2", None)] + [(f"2x1@{rate}", rate) for rate in args.links.split(",")]
                for layout, rate in layouts:
                    for host in hosts.hosts:
                        host.unlimit() if rate in (None, "unlimited") else host.limit(rate)
                    port += 1
                    result = run_one_host(hosts, folder, model, args) if layout == "1x2" else \
                        run_two_hosts(hosts, folder, model, args, port)
                    row = {"bench": "multihost", "size": args.size, "model": model, "layout": layout, "round": r,
                           **{k: result[k] for k in ("s_per_epoch", "steps", "comm_s_per_step", "comm_bytes_per_step",
                                                     "comm_calls_per_step", "peak_rss_mb")},
                           **({"wire_bytes_per_step": result["wire_bytes_per_step"]}
                              if "wire_bytes_per_step" in result else {})}
                    rows.append(row)
                    print(json.dumps(row), flush=True)
    for line in summarise(rows):
        print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
