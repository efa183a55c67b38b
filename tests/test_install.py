"""scripts/install.sh's CUDA path, as far as a CPU machine can check it: the plan it prints."""

from __future__ import annotations

import os
import subprocess

from tests.conftest import REPO


def plan(target: str, tmp_path) -> list[str]:
    env = dict(os.environ, CLIPER_TARGET=target, CLIPER_INSTALL_PLAN="1", CLIPER_VENV=str(tmp_path / "venv"))
    result = subprocess.run(["bash", REPO / "scripts" / "install.sh"], env=env, capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 0, result.stderr
    assert not (tmp_path / "venv").exists()  # a plan changes nothing
    return result.stdout.splitlines()


def test_the_cuda_install_removes_the_cpu_stack_first_and_verifies(tmp_path):
    lines = plan("cuda", tmp_path)
    order = [lines.index(x) for x in ("pip uninstall -y fbgemm-gpu-cpu", "pip uninstall -y torch torchvision",
                                      "pip install torch==2.13.0", "pip install --force-reinstall --no-deps "
                                      "fbgemm-gpu==1.8.0", "pip install --no-deps torchrec==1.8.0")]
    assert order == sorted(order)
    assert lines[-1].startswith("verify: torch is a CUDA build and torch.cuda.is_available()")
    assert not any("fbgemm-gpu-cpu==" in x or "+cpu" in x for x in lines)


def test_the_cpu_install_plan_is_the_cpu_stack(tmp_path):
    lines = plan("cpu", tmp_path)
    assert "pip install torch==2.13.0+cpu" in lines and "pip install fbgemm-gpu-cpu==1.8.0" in lines
    assert not any("uninstall" in x or "fbgemm-gpu==" in x or x.startswith("verify") for x in lines)
