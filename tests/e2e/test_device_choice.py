"""device=cuda where torch sees no GPU (CUDA hidden): one line, not a silent CPU run."""

from __future__ import annotations

from tests.conftest import REPO, run_with_timeout, torchrun_cmd


def test_device_cuda_without_a_visible_gpu_is_one_line(demo_dataset, tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    result = run_with_timeout(torchrun_cmd(1, REPO / "launch" / "train.py", [
        "--config", REPO / "configs" / "train" / "demo.yaml", "--data", demo_dataset, "--out", tmp_path / "run",
        "model.name=lightgcn", "epochs=1", "device=cuda"]), timeout=120)
    assert result.returncode != 0
    lines = [ln for ln in result.stdout.splitlines() if ln.startswith("cliper-dist: error:")]
    assert len(lines) == 1 and lines[0].startswith("cliper-dist: error: device=cuda, but torch sees no usable GPU"), \
        result.stdout[-3000:]
    # torchrun's own failure summary follows the line; no frame of the project's code may appear
    assert "cliper_dist/" not in result.stdout and not (tmp_path / "run").exists()
