"""The walking skeleton through its real launchers: shards -> 2-rank encode -> 2-rank train."""

from __future__ import annotations

import json
import typing

import numpy as np
import pytest

from cliper_dist.data.dataset import DatasetDir
from cliper_dist.data.recdata import load_rec_data
from cliper_dist.model.registry import MODELS
from tests.conftest import REPO, run_python, run_with_timeout, torchrun_cmd


def test_encode_launcher_two_ranks(demo_features, demo_dataset):
    ds = DatasetDir.open(demo_dataset)
    manifest = json.loads((demo_features / "manifest.json").read_text())
    n = ds.num_items
    assert manifest["counts"]["items"] == n and manifest["views"] == ["title", "brand", "categories", "description", "global"]
    image = np.load(demo_features / "image.npy")
    views = np.load(demo_features / "text_views.npy")
    sim = np.load(demo_features / "similarity.npy")
    assert image.shape == (n, 64) and views.shape == (5, n, 64) and sim.shape == (n, 5)
    assert np.allclose(sim.sum(1), 1.0, atol=1e-5)
    # Every item encoded exactly once, across both ranks' part files.
    indices = np.concatenate([np.load(p)["index"] for p in sorted((demo_features / "parts").glob("*.npz"))])
    assert np.array_equal(np.sort(indices), np.arange(n))
    stats = json.loads((demo_features / "stats.json").read_text())
    assert sorted(r["rank"] for r in stats["ranks"]) == [0, 1] and sum(r["items"] for r in stats["ranks"]) == n


# every model at 2 ranks; the default run launches two (tests/model/test_parity.py checks all seven)
@pytest.mark.parametrize("model_name", ["lightgcn", "freedom", *(pytest.param(m, marks=pytest.mark.slow) for m in
                                                          ("vbpr", "slmrec", "lattice", "dualgnn", "mmgcn"))])
def test_train_launcher_two_ranks(model_name, demo_features, demo_dataset, tmp_path):
    out = tmp_path / "run"
    # the demo's reg_weight where the model has one (demo.yaml holds only keys every model has)
    reg = ["model.reg_weight=1e-3"] if "reg_weight" in typing.get_type_hints(MODELS[model_name].config_class) else []
    result = run_with_timeout(torchrun_cmd(2, REPO / "launch" / "train.py", [
        "--config", REPO / "configs" / "train" / "demo.yaml", "--data", demo_dataset, "--features", demo_features,
        "--out", out, f"model.name={model_name}", "epochs=12", "batch_size=256", *reg]), timeout=240)
    assert result.returncode == 0, result.stdout[-4000:]
    assert "recall@20" in result.stdout and "torchrec column_wise ID tables" in result.stdout
    final = json.loads((out / "final.json").read_text())
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(lines) == final["epochs"] and final["world_size"] == 2
    assert final["test"] == next(x["test"] for x in lines if x["epoch"] == final["best_epoch"])
    # Learned ranking beats the expected Recall@20 of a random ranking of the unmasked items.
    data = load_rec_data(demo_dataset)
    has_test = np.flatnonzero(data.test.lengths() > 0)
    random_recall = np.mean(20 / (data.num_items - data.train.lengths()[has_test]))
    assert final["test"]["recall@20"] > 1.3 * random_recall, (final["test"], random_recall)


@pytest.mark.slow
def test_bad_config_and_inputs_are_one_clear_line(demo_dataset, tmp_path):
    cases = [
        (["launch/train.py", "--data", demo_dataset, "--out", tmp_path / "r", "model.nmae=x"],
         "unknown config key 'model.nmae'"),
        (["launch/train.py", "--data", demo_dataset, "--out", tmp_path / "r", "epochs=many"],
         "config key 'epochs' must be int"),
        (["launch/train.py", "--config", tmp_path / "nope.yaml"], "config file not found"),
        (["launch/train.py", "--data", tmp_path / "missing", "--out", tmp_path / "r", "model.name=lightgcn"],
         "missing does not exist; --data wants a dataset directory or an MMRec folder"),
        (["launch/train.py", "--data", demo_dataset, "--out", tmp_path / "r"], "model freedom needs features"),
        (["launch/encode.py", "--data", tmp_path / "missing", "--out", tmp_path / "f", "--model", "ViT-B-32"],
         "missing does not exist; --data wants a dataset directory"),
        (["launch/encode.py", "--data", demo_dataset, "--out", tmp_path / "f", "--model", "ViT-B-32",
          "--pretrained", tmp_path / "w.pt"], "checkpoint not found"),
    ]
    for args, message in cases:
        result = run_python([REPO / args[0], *args[1:]], timeout=60)
        lines = result.stdout.strip().splitlines()
        assert result.returncode == 2, result.stdout
        assert len(lines) == 1 and lines[0].startswith("cliper-dist: error:") and message in lines[0], result.stdout


def test_train_runs_as_a_world_of_one_without_torchrun(demo_dataset, tmp_path):
    result = run_python([REPO / "launch" / "train.py", "--config", REPO / "configs" / "train" / "demo.yaml",
                         "--data", demo_dataset, "--out", tmp_path / "run", "model.name=lightgcn", "epochs=2"],
                        timeout=120)
    assert result.returncode == 0, result.stdout[-3000:]
    assert json.loads((tmp_path / "run" / "final.json").read_text())["world_size"] == 1
