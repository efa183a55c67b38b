"""tools/plan.py's predictions against measured runs: peak RSS per rank and time per epoch.

    python benchmarks/plan_check.py --calibrate --cases baby:lightgcn:1x1,baby:lightgcn:1x2,x10:freedom:2x1@1gbit

A case is SIZE:MODEL:HOSTSxRANKS[@RATE] (sizes and data from train_scale.py). One host runs
train_scale's worker (the real engine, one thread per rank, ``--max-steps`` projected to an
epoch, one full evaluation unless ``--skip-eval`` or size x60); two hosts run it on test
hosts (network namespaces, ``tc`` at RATE; needs root), as benchmarks/multihost.py does; the
prediction then counts every rank as sharing this machine's cores and memory bandwidth.
``--calibrate`` measures the machine first (tools/plan.py --calibrate), in the same run; else
``--machine FILE``. One JSON line per case: predicted and measured peak RSS (the larger rank)
and s/epoch, with their ratio; the summary counts the cases within 20% (memory) and 30% (time).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.multihost import run_two_hosts  # noqa: E402
from benchmarks.train_scale import make_folder, run_layout  # noqa: E402
from cliper_dist.capacity import Layout, Machine, Workload, calibrate, plan  # noqa: E402

MAX_STEPS = {"baby": 30, "x10": 20, "x60": 5}
FEATURES = (4096, 384)  # train_scale's MMRec-shaped features


def counts(folder: Path) -> dict:
    from cliper_dist.data.recdata import load_rec_data

    data = load_rec_data(str(folder))
    return {"users": data.num_users, "items": data.num_items, "interactions": len(data.train_user),
            "held_out": int(data.valid.lengths().sum() + data.test.lengths().sum())}


def measure(folder: Path, model: str, hosts: int, ranks: int, rate: str | None, steps: int, with_eval: bool,
            port: int) -> dict:
    args = argparse.Namespace(model=model, dim=64, max_steps=steps, rows="all", skip_eval=not with_eval)
    if hosts == 1:
        return run_layout(folder, ranks, 1, args)
    from cliper_dist.testing.hosts import TestHosts

    with TestHosts(hosts) as test_hosts:
        for host in test_hosts.hosts:
            host.limit(rate) if rate else None
        return run_two_hosts(test_hosts, folder, model, args, port)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", required=True, help="SIZE:MODEL:HOSTSxRANKS[@RATE], comma-separated")
    parser.add_argument("--machine", help="tools/plan.py --calibrate output")
    parser.add_argument("--calibrate", action="store_true", help="calibrate first, in this run")
    parser.add_argument("--skip-eval", action="store_true")
    parser.add_argument("--workdir", default=None, help="keeps the generated data between runs")
    args = parser.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="plan_check_"))
    if args.calibrate:
        machine = calibrate((1, 2))
        machine.save(work / "machine.json")
        print(json.dumps({"bench": "plan_calibration", **machine.rates, "runtime_mb": machine.runtime_mb,
                          "loopback": machine.loopback}), flush=True)
    else:
        machine = Machine.load(args.machine)
    rows = []
    for n, case in enumerate(args.cases.split(",")):
        size, model, layout = case.split(":")
        shape, _, rate = layout.partition("@")
        hosts, ranks = (int(x) for x in shape.split("x"))
        folder = make_folder(size, work, model)
        with_eval = not args.skip_eval and size != "x60"
        workload = Workload(**counts(folder), model=model, feature_widths=FEATURES if model == "freedom" else (),
                            evaluate=with_eval)
        gbit = float(rate.removesuffix("gbit")) if rate else 10.0
        # the test hosts share this machine: its cores and memory bandwidth serve every rank
        predicted = plan(workload, Layout(hosts, ranks, link_gbit=gbit, procs_per_machine=hosts * ranks), machine)
        measured = measure(folder, model, hosts, ranks, rate or None, MAX_STEPS[size], with_eval, 29900 + n)
        rss, pred_rss = max(measured["peak_rss_mb"]), predicted["memory_mb"]["peak"]
        row = {"bench": "plan_check", "case": case, "with_eval": with_eval,
               "rss_mb": {"measured": rss, "predicted": pred_rss, "ratio": round(pred_rss / rss, 3)},
               "s_per_epoch": {"measured": measured["s_per_epoch"], "predicted": predicted["epoch_s"]["total"],
                               "ratio": round(predicted["epoch_s"]["total"] / measured["s_per_epoch"], 3)},
               "comm_s_per_step": {"measured": max(measured["comm_s_per_step"]),
                                   "predicted": predicted["epoch_s"]["step_comm"]},
               "predicted_memory_mb": predicted["memory_mb"]}
        rows.append(row)
        print(json.dumps(row), flush=True)
    within = {"memory_20pct": sum(abs(r["rss_mb"]["ratio"] - 1) <= 0.2 for r in rows),
              "time_30pct": sum(abs(r["s_per_epoch"]["ratio"] - 1) <= 0.3 for r in rows), "cases": len(rows)}
    print(json.dumps({"bench": "plan_check_summary", **within}), flush=True)


if __name__ == "__main__":
    main()
