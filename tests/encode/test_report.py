"""tools/view_report.py: per-view statistics and the rank heatmap PNG."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

from cliper_dist.encode.report import rank_shares
from tests.conftest import REPO, run_python


def test_rank_shares_rows_sum_to_one_and_count_ranks():
    sim = np.array([[0.5, 0.3, 0.2], [0.1, 0.6, 0.3], [0.2, 0.5, 0.3], [0.7, 0.2, 0.1]])
    shares = rank_shares(sim)
    np.testing.assert_allclose(shares.sum(axis=1), 1.0)
    np.testing.assert_allclose(shares[:, 0], [0.5, 0.5, 0.0])  # view 0 first for items 0 and 3, view 1 for 1 and 2


def test_report_cli_writes_stats_and_png(single_features, tmp_path):
    result = run_python([REPO / "tools" / "view_report.py", single_features, "--tau", "0.2", "--out", tmp_path])
    assert result.returncode == 0, result.stdout
    assert "global" in result.stdout and "tau=0.2" in result.stdout
    report = json.loads((tmp_path / "view_report.json").read_text())
    assert list(report["views"]) == ["title", "brand", "categories", "description", "global"]
    assert abs(sum(v["top1_share"] for v in report["views"].values()) - 1.0) < 1e-9
    with Image.open(tmp_path / "view_ranks.png") as png:
        assert png.format == "PNG" and png.size[0] > 300
    page = (tmp_path / "feature_report.md").read_text()
    assert f"report: {tmp_path / 'feature_report.md'}" in result.stdout
    assert "| image |" in page and "| text view global |" in page and "![variance](variance.png)" in page
    with Image.open(tmp_path / "variance.png") as png:
        assert png.format == "PNG"
