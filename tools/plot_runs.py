"""One PNG of training runs: valid Recall@20, valid NDCG@20 and loss per epoch, and each run's phase times.

    python tools/plot_runs.py runs/demo/run-lightgcn "FREEDOM=runs/demo/run" --out runs/demo/runs.png

A run is RUN_DIR or LABEL=RUN_DIR (the label defaults to the directory's name). The curves
come from each run's metrics.jsonl, so a run still training plots its epochs so far; the
phase times (load, knn, graph, steps, eval, checkpoint: rank 0's seconds) from final.json,
when the run has one. Prints the PNG's path.
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

from cliper_dist.config import ToolHelp
from cliper_dist.errors import UserError, run_tool
from cliper_dist.files import read_json, read_jsonl, write_bytes

METRICS, FINAL = "metrics.jsonl", "final.json"
CURVES = (("valid Recall@20", lambda r: r["valid"]["recall@20"]), ("valid NDCG@20", lambda r: r["valid"]["ndcg@20"]),
          ("training loss", lambda r: r["loss"]))


def read_run(arg: str) -> tuple[str, list[dict], dict]:
    """(label, metric lines, phase seconds) of ``LABEL=RUN_DIR`` or ``RUN_DIR``."""
    label, sep, path = arg.rpartition("=")
    run = Path(path if sep else arg)
    if not (run / METRICS).is_file():
        raise UserError(f"{run}: no {METRICS} (not a train run directory, or it has not evaluated yet)")
    lines = list(read_jsonl(run / METRICS))
    if not lines:
        raise UserError(f"{run}: {METRICS} is empty (no evaluation yet)")
    phases = read_json(run / FINAL).get("phase_s", {}) if (run / FINAL).is_file() else {}
    return (label if sep and label else run.name), lines, phases


def plot(runs: list[tuple[str, list[dict], dict]], out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5))
    for ax, (title, value) in zip(axes.flat, CURVES):
        for label, lines, _ in runs:
            ax.plot([r["epoch"] + 1 for r in lines], [value(r) for r in lines], marker=".", label=label)
        ax.set(title=title, xlabel="epoch")
        ax.grid(alpha=0.3)
    axes.flat[0].legend(fontsize="small")
    ax = axes.flat[3]
    names = list(dict.fromkeys(name for _, _, phases in runs for name in phases))
    left = [0.0] * len(runs)
    for name in names:
        seconds = [phases.get(name, 0.0) for _, _, phases in runs]
        ax.barh(range(len(runs)), seconds, left=left, label=name)
        left = [a + b for a, b in zip(left, seconds)]
    ax.set(title="phase times (s, rank 0)", yticks=range(len(runs)), yticklabels=[label for label, _, _ in runs])
    ax.invert_yaxis()
    if names:
        ax.legend(fontsize="small", ncol=3)
    else:
        ax.text(0.5, 0.5, f"no {FINAL} yet", ha="center", va="center", transform=ax.transAxes)
    fig.tight_layout()
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=100)
    plt.close(fig)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_bytes(out, png.getvalue())
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=ToolHelp)
    parser.add_argument("runs", nargs="+", help="RUN_DIR or LABEL=RUN_DIR, one curve each")
    parser.add_argument("--out", default="runs.png", help="the PNG to write")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    print(plot([read_run(r) for r in args.runs], Path(args.out)))
    return 0


if __name__ == "__main__":
    sys.exit(run_tool(main))
