"""Plan a train job before running it: memory per rank by part, time per epoch (compute, communication).

    # once per machine kind (about a minute): measure its rates with 1 and 2 ranks per host
    .venv/bin/python tools/plan.py --calibrate machine.json --ranks-per-host 1,2
    # then, for any size and layout
    .venv/bin/python tools/plan.py --machine machine.json --users 1000000 --items 300000 \
        --interactions 8000000 --model freedom --features 4096,384 --layout 2x1 --link-gbit 1

``--data DIR`` (a dataset directory or MMRec folder) reads the counts from the data instead.
``--layout HOSTSxRANKS``: hosts, and ranks on each. Between hosts the link's bandwidth and
one-way latency (``--link-gbit``, ``--latency-us``) set the communication time; ranks of one
host talk over loopback at the calibrated rates. See cliper_dist/capacity.py for the model
and docs/multinode.md for how well it predicted measured runs.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cliper_dist.capacity import Layout, Machine, Workload, calibrate, plan  # noqa: E402
from cliper_dist.errors import UserError, run_tool  # noqa: E402

PARTS = ("runtime", "data", "graph", "tables", "optimizer", "features", "workspace", "step", "evaluation", "build")


def workload_from_data(path: str, args) -> dict:
    from cliper_dist.data.recdata import load_rec_data

    data = load_rec_data(path)
    return {"users": data.num_users, "items": data.num_items, "interactions": len(data.train_user),
            "held_out": int(data.valid.lengths().sum() + data.test.lengths().sum())}


def parse_layout(text: str) -> tuple[int, int]:
    try:
        hosts, ranks = (int(x) for x in text.lower().split("x"))
    except ValueError:
        raise UserError(f"--layout wants HOSTSxRANKS (e.g. 2x1); got {text!r}") from None
    return hosts, ranks


def report(result: dict) -> str:
    mem, t, w = result["memory_mb"], result["epoch_s"], result["workload"]
    lay = result["layout"]
    lines = [f"{w['model']}: {w['users']:,} users, {w['items']:,} items, {w['interactions']:,} training interactions, "
             f"d={w['dim']}, batch {w['batch']}; {lay['hosts']} host(s) x {lay['ranks_per_host']} rank(s)"
             + (f", {lay['link_gbit']:g} Gbit/s and {lay['link_latency_us']:g} us between hosts"
                if lay["hosts"] > 1 else ""),
             "memory per rank (MB):"]
    lines += [f"  {part:<11}{mem[part]:>10,.0f}" for part in PARTS if mem[part]]
    lines.append(f"  {'peak':<11}{mem['peak']:>10,.0f}   (runtime + the larger of the build and the steady "
                 "state with a step or an evaluation)")
    lines.append(f"time per epoch: {t['total']:,.1f} s = compute {t['compute']:,.1f} s + communication "
                 f"{t['comm']:,.1f} s ({t['steps']:,} steps of {t['step_compute'] * 1e3:.1f} + "
                 f"{t['step_comm'] * 1e3:.2f} ms)")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calibrate", metavar="OUT", help="measure this machine and write its constants to OUT")
    parser.add_argument("--ranks-per-host", default="1,2", help="--calibrate: process counts to measure with")
    parser.add_argument("--threads", type=int, default=1, help="--calibrate: torch threads per rank")
    parser.add_argument("--machine", help="constants written by --calibrate")
    parser.add_argument("--data", help="read users, items and interactions from this dataset or MMRec folder")
    parser.add_argument("--users", type=int)
    parser.add_argument("--items", type=int)
    parser.add_argument("--interactions", type=int, help="training interactions")
    parser.add_argument("--held-out", type=int, default=0, help="valid + test interactions")
    parser.add_argument("--model", choices=("lightgcn", "freedom"), default="lightgcn")
    parser.add_argument("--features", default="4096,384", help="freedom: feature table widths, comma-separated")
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--batch", type=int, default=2048)
    parser.add_argument("--layout", default="1x1", help="HOSTSxRANKS")
    parser.add_argument("--link-gbit", type=float, default=10.0)
    parser.add_argument("--latency-us", type=float, default=50.0)
    parser.add_argument("--procs-per-machine", type=int, default=0,
                        help="ranks that share one machine's cores and memory (default: a host's ranks; test hosts "
                             "that are network namespaces of one machine: all ranks)")
    parser.add_argument("--no-eval", action="store_true", help="the peak without an evaluation")
    parser.add_argument("--json", action="store_true", help="print the plan as JSON")
    args = parser.parse_args()
    if args.calibrate:
        machine = calibrate(tuple(int(x) for x in args.ranks_per_host.split(",")), args.threads)
        machine.save(args.calibrate)
        print(json.dumps({"calibration": args.calibrate, **machine.rates}), flush=True)
        return 0
    if not args.machine:
        raise UserError("--machine FILE is required (write one with --calibrate FILE)")
    counts = workload_from_data(args.data, args) if args.data else {
        "users": args.users, "items": args.items, "interactions": args.interactions, "held_out": args.held_out}
    missing = [k for k, v in counts.items() if v is None]
    if missing:
        raise UserError(f"give --{' --'.join(missing)} (or --data DIR)")
    widths = tuple(int(x) for x in args.features.split(",")) if args.model == "freedom" else ()
    workload = Workload(**counts, model=args.model, dim=args.dim, batch=args.batch, feature_widths=widths,
                        evaluate=not args.no_eval)
    hosts, ranks = parse_layout(args.layout)
    layout = Layout(hosts, ranks, args.link_gbit, args.latency_us, args.procs_per_machine)
    result = plan(workload, layout, Machine.load(args.machine))
    print(json.dumps(result) if args.json else report(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(run_tool(main))
