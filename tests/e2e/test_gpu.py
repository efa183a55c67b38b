"""The launchers on CUDA with nccl (encode then train; pretrain in bf16 then encode), on at most 2 GPUs.

Marked ``gpu`` and skipped where torch sees no GPU (CI has none). Every collective of the
training path must then run on device tensors, which nccl requires.
"""

from __future__ import annotations

import json

import pytest
import torch

from tests.conftest import REPO, run_with_timeout, torchrun_cmd

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")]


def test_encode_then_train_on_cuda(demo_dataset, tiny_clip, tmp_path):
    nproc = min(2, torch.cuda.device_count())
    model, ckpt = tiny_clip
    feats = tmp_path / "features"
    encode = run_with_timeout(torchrun_cmd(nproc, REPO / "launch" / "encode.py", [
        "--data", demo_dataset, "--out", feats, "--model", model, "--pretrained", ckpt, "device=cuda",
        "workers=2", "batch_size=16"]), timeout=300)
    assert encode.returncode == 0, encode.stdout[-4000:]
    for name, extra in (("lightgcn", []), ("freedom", ["optim.rows=touched"]), ("freedom", ["model.fusion=mlp"])):
        out = tmp_path / f"run_{name}_{len(extra)}"
        train = run_with_timeout(torchrun_cmd(nproc, REPO / "launch" / "train.py", [
            "--config", REPO / "configs" / "train" / "demo.yaml", "--data", demo_dataset, "--features", feats,
            "--out", out, f"model.name={name}", "epochs=3", "device=cuda", *extra]), timeout=300)
        assert train.returncode == 0, train.stdout[-4000:]
        final = json.loads((out / "final.json").read_text())
        assert final["world_size"] == nproc and final["epochs"] == 3


def test_pretrain_on_cuda_in_bf16_then_encode(demo_dataset, tiny_clip, tmp_path):
    nproc = min(2, torch.cuda.device_count())
    model, ckpt = tiny_clip
    out = tmp_path / "clip"
    pretrain = run_with_timeout(torchrun_cmd(nproc, REPO / "launch" / "pretrain.py", [
        "--data", demo_dataset, "--model", model, "--init", ckpt, "--out", out, "device=cuda", "steps=20",
        "batch_size=16", "eval_items=20", "eval_every=10"]), timeout=300)
    assert pretrain.returncode == 0, pretrain.stdout[-4000:]
    records = [json.loads(line) for line in (out / "pretrain" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [10, 20] and records[-1]["retrieval"]
    encode = run_with_timeout(torchrun_cmd(nproc, REPO / "launch" / "encode.py", [
        "--data", demo_dataset, "--out", tmp_path / "features", "--model", model, "--pretrained", out / "clip.pt",
        "device=cuda"]), timeout=300)
    assert encode.returncode == 0, encode.stdout[-4000:]
