"""Per-view similarity statistics and a heatmap of view importance ranks (CLIPER Figure 5).

    python tools/view_report.py FEATURES_DIR [--tau 0.2] [--out DIR]

Writes ``view_report.json``, ``view_ranks.png`` and a one-page ``feature_report.md`` with
``variance.png`` (identical and constant rows, constant dimensions and per-dimension
variance of the image and each text view: what train checks before its kNN graph) into
FEATURES_DIR unless --out, and prints the table. ``--tau`` recomputes eq. 2 from the raw
embeddings instead of reading the stored similarity.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cliper_dist.config import ToolHelp
from cliper_dist.files import write_json
from cliper_dist.encode.report import feature_report, rank_heatmap, rank_shares, similarity, view_stats
from cliper_dist.data.features import FeatureStore
from cliper_dist.errors import UserError, run_tool


def report(features_dir: str, tau: float | None = None, out: str | None = None) -> dict:
    features = FeatureStore.open(features_dir, flag="view_report")
    names = features.manifest.views
    sim = similarity(features, tau)
    shares = rank_shares(sim)
    used_tau = tau if tau is not None else features.manifest.tau
    result = {"features": str(features.path), "items": len(sim), "tau": used_tau,
              "views": view_stats(sim, names), "rank_shares": {n: shares[j].tolist() for j, n in enumerate(names)}}
    target = Path(out) if out else features.path
    target.mkdir(parents=True, exist_ok=True)
    write_json(target / "view_report.json", result)
    rank_heatmap(shares, names, target / "view_ranks.png",
                 f"view importance ranks, {len(sim)} items, tau={used_tau:g} (share of items per rank)")
    result["page"] = str(feature_report(features, result, target))
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=ToolHelp)
    parser.add_argument("features", help="feature directory written by launch/encode.py")
    parser.add_argument("--tau", type=float, default=None,
                        help="recompute the similarity with this temperature (None: the encode run's)")
    parser.add_argument("--out", default=None,
                        help="directory for view_report.json and view_ranks.png (None: FEATURES)")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if args.tau is not None and not args.tau > 0:
        raise UserError(f"--tau must be > 0; got {args.tau:g}")
    result = report(args.features, args.tau, args.out)
    print(f"{'view':<14}{'mean':>8}{'std':>8}{'min':>8}{'median':>8}{'max':>8}{'top-1':>8}{'rank':>7}")
    for name, s in result["views"].items():
        print(f"{name:<14}{s['mean']:>8.3f}{s['std']:>8.3f}{s['min']:>8.3f}{s['median']:>8.3f}{s['max']:>8.3f}"
              f"{100 * s['top1_share']:>7.1f}%{s['mean_rank']:>7.2f}")
    print(f"{result['items']} items, tau={result['tau']:g} -> {args.out or args.features}/view_ranks.png")
    print(f"report: {result['page']}")
    return 0


if __name__ == "__main__":
    sys.exit(run_tool(main))
