"""tools/plot_runs.py as users call it: one PNG of runs' curves and phase times."""

from __future__ import annotations

from PIL import Image

from cliper_dist.files import write_json, write_jsonl
from tests.conftest import REPO, run_python


def fake_run(path, epochs: int, final: bool) -> None:
    metrics = {"recall@20": 0.0, "ndcg@20": 0.0}
    write_jsonl(path / "metrics.jsonl", [{"epoch": e, "loss": 1.0 / (e + 1), "valid": {**metrics, "recall@20": 0.01 * e},
                                          "test": metrics} for e in range(epochs)])
    if final:
        write_json(path / "final.json", {"phase_s": {"load": 1.5, "steps": 12.0, "eval": 3.0}})


def test_writes_one_png_of_every_run_and_prints_its_path(tmp_path):
    for name, final in (("a", True), ("b", False)):  # b still training: curves, no phase times
        (tmp_path / name).mkdir()
        fake_run(tmp_path / name, 5, final)
    out = tmp_path / "plots" / "runs.png"
    done = run_python([REPO / "tools/plot_runs.py", tmp_path / "a", f"second={tmp_path / 'b'}", "--out", out])
    assert done.returncode == 0 and done.stdout.strip() == str(out), done.stdout
    with Image.open(out) as png:
        assert png.format == "PNG" and png.size[0] > 500


def test_a_directory_without_metrics_is_one_error_line(tmp_path):
    done = run_python([REPO / "tools/plot_runs.py", tmp_path, "--out", tmp_path / "x.png"])
    assert done.returncode != 0 and "no metrics.jsonl" in done.stdout and not (tmp_path / "x.png").exists()
