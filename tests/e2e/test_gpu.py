"""The launchers on CUDA with nccl, and 1-rank CUDA runs against the same runs on the CPU.

Marked ``gpu`` and skipped where torch sees no GPU (CI has none). Every collective of the
training path must then run on device tensors, which nccl requires. The agreement cases run
each job once on the CPU and once on the device, at 1 rank, and compare within the
tolerances of ``cliper_dist/testing/devices.py`` (docs/gpu.md says why they are not 0):
every backbone (FREEDOM with its HNSW kNN graph), adapt, encode (fp32 and bf16), and a DCP
checkpoint written on the CPU and resumed on the device.

``CLIPER_TEST_DEVICE=cpu`` runs the same cases with the CPU as "the device" (the CPU mode of
scripts/gpu_check.sh): no CUDA is checked then, only that the cases themselves work.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from cliper_dist.testing.devices import BF16_COSINE_MIN, compare_arrays, compare_train_runs
from tests.conftest import REPO, run_python, run_with_timeout, torchrun_cmd

DEVICE = os.environ.get("CLIPER_TEST_DEVICE", "cuda")
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(DEVICE == "cuda" and not torch.cuda.is_available(),
                                                  reason="no CUDA device")]
NPROC = min(2, torch.cuda.device_count()) if DEVICE == "cuda" else 1
MODELS = ("lightgcn", "freedom", "vbpr", "slmrec", "lattice", "dualgnn", "mmgcn")
EPOCHS = 3


def _ok(result):
    assert result.returncode == 0, result.stdout[-4000:]
    return result


def _agree(report: dict):
    assert report["agree"], json.dumps(report, indent=1)


def test_encode_then_train_on_the_device(demo_dataset, demo_features, tiny_clip, tmp_path):
    """encode (bf16 autocast on CUDA) and train at up to 2 ranks; the bf16 features stay close
    to the CPU's fp32 ones."""
    model, ckpt = tiny_clip
    feats = tmp_path / "features"
    _ok(run_with_timeout(torchrun_cmd(NPROC, REPO / "launch" / "encode.py", [
        "--data", demo_dataset, "--out", feats, "--model", model, "--pretrained", ckpt, f"device={DEVICE}",
        "workers=2", "batch_size=16"]), timeout=300))
    _agree(compare_arrays(feats, demo_features, ["image.npy", "text_views.npy"], cosine_min=BF16_COSINE_MIN))
    for i, (name, extra) in enumerate((("lightgcn", []), ("freedom", ["optim.rows=touched"]),
                                       ("freedom", ["model.fusion=mlp"]))):
        out = tmp_path / f"run{i}_{name}"  # one --out per run (the two FREEDOM runs shared one, never run before)
        _ok(run_with_timeout(torchrun_cmd(NPROC, REPO / "launch" / "train.py", [
            "--config", REPO / "configs" / "train" / "demo.yaml", "--data", demo_dataset, "--features", feats,
            "--out", out, f"model.name={name}", "epochs=3", f"device={DEVICE}", *extra]), timeout=300))
        final = json.loads((out / "final.json").read_text())
        assert final["world_size"] == NPROC and final["epochs"] == 3


def test_pretrain_in_bf16_then_encode(demo_dataset, tiny_clip, tmp_path):
    model, ckpt = tiny_clip
    out = tmp_path / "clip"
    _ok(run_with_timeout(torchrun_cmd(NPROC, REPO / "launch" / "pretrain.py", [
        "--data", demo_dataset, "--model", model, "--init", ckpt, "--out", out, f"device={DEVICE}", "steps=20",
        "batch_size=16", "eval_items=20", "eval_every=10"]), timeout=300))
    records = [json.loads(line) for line in (out / "pretrain" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [10, 20] and records[-1]["retrieval"]
    _ok(run_with_timeout(torchrun_cmd(NPROC, REPO / "launch" / "encode.py", [
        "--data", demo_dataset, "--out", tmp_path / "features", "--model", model, "--pretrained", out / "clip.pt",
        f"device={DEVICE}"]), timeout=300))


def test_encode_at_fp32_agrees_with_the_cpu(demo_dataset, demo_features, tiny_clip, tmp_path):
    model, ckpt = tiny_clip
    _ok(run_python([REPO / "launch" / "encode.py", "--data", demo_dataset, "--out", tmp_path / "features",
                    "--model", model, "--pretrained", ckpt, f"device={DEVICE}", "precision=fp32", "workers=2",
                    "batch_size=16"], timeout=300))
    _agree(compare_arrays(tmp_path / "features", demo_features))


def _train(demo_dataset, features, out: Path, model: str, device: str, *extra: str, epochs: int = EPOCHS):
    return _ok(run_python([
        REPO / "launch" / "train.py", "--config", REPO / "configs" / "train" / f"{model}.yaml",
        "--config", REPO / "configs" / "train" / "demo.yaml", "--data", demo_dataset, "--features", features,
        "--out", out, f"epochs={epochs}", f"device={device}", *extra], timeout=300))


@pytest.mark.parametrize("model", MODELS)
def test_one_rank_on_the_device_agrees_with_the_cpu(demo_dataset, demo_features, tmp_path, model):
    """Per-epoch loss and every metric, within the stated tolerances (FREEDOM: HNSW kNN graph)."""
    extra = ["model.knn=hnsw"] if model == "freedom" else []
    for out, device in (("ref", "cpu"), ("dev", DEVICE)):  # two directories even when DEVICE is the CPU
        _train(demo_dataset, demo_features, tmp_path / out, model, device, *extra)
    _agree(compare_train_runs(tmp_path / "dev", tmp_path / "ref"))


def test_a_cpu_checkpoint_resumes_on_the_device(demo_dataset, demo_features, tmp_path):
    """DCP: 2 epochs on the CPU, resumed on the device to EPOCHS + 1, against the CPU's
    uninterrupted run."""
    _train(demo_dataset, demo_features, tmp_path / "whole", "freedom", "cpu", epochs=EPOCHS + 1)
    _train(demo_dataset, demo_features, tmp_path / "resumed", "freedom", "cpu", epochs=2)
    result = _train(demo_dataset, demo_features, tmp_path / "resumed", "freedom", DEVICE, epochs=EPOCHS + 1)
    assert "resumed from" in result.stdout
    _agree(compare_train_runs(tmp_path / "resumed", tmp_path / "whole"))


def test_adapt_on_the_device_agrees_with_the_cpu(demo_dataset, demo_features, tmp_path):
    for out, device in (("ref", "cpu"), ("dev", DEVICE)):  # two directories even when DEVICE is the CPU
        _ok(run_python([REPO / "launch" / "adapt.py", "--config", REPO / "configs" / "adapt" / "demo.yaml",
                        "--data", demo_dataset, "--features", demo_features, "--out", tmp_path / out,
                        "epochs=2", f"device={device}"], timeout=300))
    _agree(compare_arrays(tmp_path / "dev", tmp_path / "ref", ["image_feat.npy", "text_feat.npy"]))
