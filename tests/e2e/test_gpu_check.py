"""scripts/gpu_check.sh end to end with the CPU as the device (--cpu): every step but CUDA itself."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.conftest import REPO, child_env


@pytest.mark.slow
def test_gpu_check_runs_every_step_on_the_cpu(tmp_path):
    env = child_env() | {"OUT": str(tmp_path), "GPU_CHECK_ITEMS": "200", "GPU_CHECK_PRETRAIN_STEPS": "20",
                         "GPU_CHECK_EPOCHS": "3", "GPU_CHECK_BUDGET_S": "900",
                         "GPU_CHECK_TESTS": "lightgcn or resumes or adapt"}
    result = subprocess.run(["bash", REPO / "scripts" / "gpu_check.sh", "--cpu"], env=env, capture_output=True,
                            text=True, timeout=1200)
    summary = json.loads((tmp_path / "gpu_check.json").read_text())
    log = (tmp_path / "gpu_check.log").read_text()
    assert result.returncode == 0 and summary["ok"], (result.stderr, log[-4000:])
    assert [s["step"] for s in summary["steps"]] == ["imports", "demo_catalog", "demo_convert", "demo_checkpoint",
                                                     "demo_pretrain", "demo_encode", "demo_train", "train_cpu",
                                                     "agreement", "gpu_tests"]
    assert summary["not_run"] == []
    assert summary["agreement"]["agree"] and summary["agreement"]["max_loss_rel"] == 0.0
    assert summary["gpu_tests"]["passed"] == 3 and summary["gpu_tests"]["failed"] == 0
    assert summary["encode_dtype"] == "float32"
