"""The dataset report (tools/inspect_dataset.py --report): one Markdown page and its PNGs."""

from __future__ import annotations

from PIL import Image

from tests.convert.helpers import make_amazon2014_sample, run_convert, run_tool


def check_page(out) -> str:
    page = (out / "report.md").read_text()
    for section in ("## Interactions per user and per item", "## Split", "## Text and images", "## Rejects",
                    "## Where every input row went"):
        assert section in page, section
    for png in ("degrees.png", "fields.png"):
        assert f"]({png})" in page
        with Image.open(out / png) as image:
            assert image.format == "PNG" and image.size[0] > 400
    return page


def test_report_of_the_demo_dataset(demo_dataset, tmp_path):
    result = run_tool("inspect_dataset.py", demo_dataset, "--report", tmp_path / "r")
    assert result.returncode == 0, result.stderr
    assert f"report: {tmp_path / 'r' / 'report.md'}" in result.stdout
    page = check_page(tmp_path / "r")
    assert "| present | 120 | 100.0% |" in page


def test_report_of_a_converted_amazon2014_sample(tmp_path):
    s = make_amazon2014_sample(tmp_path)
    assert run_convert("amazon2014", "--meta", s["meta"], "--reviews", s["reviews"], "--out", tmp_path / "ds") == 0
    result = run_tool("inspect_dataset.py", tmp_path / "ds", "--report", tmp_path / "r")
    assert result.returncode == 0, result.stderr
    page = check_page(tmp_path / "r")
    assert "| never fetched | 300 | 100.0% |" in page and "| title | 1 | 0.3% |" in page
    assert "**unknown_item** (7), e.g.:" in page and "**truncated_file** (1)" in page
    assert "| reviews | " in page and "k_core_item 3" in page and "merged" in page
    assert "k-core filter (k = 5)" in page and "Exact duplicate interactions: 3" in page
