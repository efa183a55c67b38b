"""The train job end to end on tiny data: real torchrun ranks, outputs, resume after a kill
and at another world size, 8 oversubscribed ranks, multi-node, the recommend tool, and bad
input (one clear error before training starts)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from cliper_dist import checkpoint
from cliper_dist.dist import DistInfo
from cliper_dist.errors import UserError
from cliper_dist.model.registry import model_config
from cliper_dist.train.job import TrainConfig, build_engine
from tests.conftest import REPO, child_env, free_port, run_python, torchrun_cmd
from tests.train._data import make_encode_dir, make_mmrec_folder

TRAIN = "launch/train.py"
SMALL_ID = ["batch_size=64", "model.embedding_dim=8", "eval_batch_users=16"]  # keys every model has
SMALL = [*SMALL_ID, "model.knn_k=4"]  # FREEDOM's


def _metrics(run: Path) -> list[dict]:
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    for r in lines:  # timings differ between runs
        r.pop("epoch_s")
        r.pop("eval_s")
    return lines


def _ok(result):
    assert result.returncode == 0, result.stdout[-5000:]
    return result


def test_freedom_on_an_mmrec_folder_then_recommend(ranks, tmp_path):
    data = make_mmrec_folder(tmp_path / "data")
    run = tmp_path / "run"
    result = _ok(ranks.launch(TRAIN, ["--data", data, "--out", run, "model.name=freedom", "epochs=3", *SMALL]))
    assert "torchrec column_wise ID tables" in result.stdout  # the layout, logged by rank 0
    lines = _metrics(run)
    assert [r["epoch"] for r in lines] == [0, 1, 2]
    final = json.loads((run / "final.json").read_text())
    assert final["world_size"] == 2 and final["model"] == "freedom"
    for split in ("valid", "test"):
        assert set(final[split]) == {f"{m}@{k}" for m in ("recall", "ndcg") for k in (10, 20, 50)}
    assert final["valid"] == next(r["valid"] for r in lines if r["epoch"] == final["best_epoch"])
    assert final["s_per_epoch"] > 0 and final["wall_s"] > 0
    phases = final["phase_s"]  # where the run's time went, summed over the run
    assert set(phases) == {"load", "knn", "graph", "steps", "eval", "checkpoint"} and min(phases.values()) >= 0
    assert phases["steps"] <= final["wall_s"]

    rec = _ok(run_python([REPO / "tools/recommend.py", run, "--users", "0,5,39", "--k", "7"]))
    recs = [json.loads(x) for x in rec.stdout.splitlines() if x.startswith("{")]
    assert [r["user"] for r in recs] == [0, 5, 39]
    inter = np.loadtxt(next(data.glob("*.inter")), dtype=np.int64, skiprows=1)
    for r in recs:
        train_items = set(inter[(inter[:, 0] == r["user"]) & (inter[:, 2] == 0), 1].tolist())
        assert len(r["items"]) == 7 and not train_items & set(r["items"])
        assert r["scores"] == sorted(r["scores"], reverse=True)
    bad = run_python([REPO / "tools/recommend.py", run, "--users", "40", "--k", "5"])
    assert bad.returncode != 0 and "out of range" in bad.stdout


def _assert_same_training(run: Path, reference: Path) -> None:
    """The same losses and metrics, up to float summation order."""
    losses, metrics = _losses_and_metrics(run)
    ref_losses, ref_metrics = _losses_and_metrics(reference)
    assert losses == pytest.approx(ref_losses, rel=1e-5)
    for a, b in zip(metrics, ref_metrics):
        for split in ("valid", "test"):
            assert a[split] == pytest.approx(b[split], abs=1e-6)


def _losses_and_metrics(run: Path) -> tuple[list[float], list[dict]]:
    lines = _metrics(run)
    return [r.pop("loss") for r in lines], lines


def test_a_killed_run_resumes_into_the_uninterrupted_one(ranks, tmp_path):
    data = make_mmrec_folder(tmp_path / "data", image=False, text=False)
    feats = make_encode_dir(tmp_path / "feats")
    common = ["--data", data, "--features", feats, "model.name=freedom", "model.fusion=mlp", "epochs=30",
              "patience=30", "optim.rows=touched", *SMALL]
    _ok(ranks.launch(TRAIN, [*common, "--out", tmp_path / "whole"]))
    split = tmp_path / "split"
    proc = subprocess.Popen(torchrun_cmd(2, REPO / TRAIN, [*common, "--out", split]), cwd=REPO, env=child_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline and not (checkpoint.resolve(split) is not None
                                          and len((split / "metrics.jsonl").read_text().splitlines()) >= 3):
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the whole torchrun tree, mid-epoch or mid-save
    proc.wait()
    assert not (split / "final.json").exists(), "the run finished before it was killed"
    resumed = _ok(ranks.launch(TRAIN, [*common, "--out", split]))
    assert "resumed from" in resumed.stdout
    assert _metrics(split) == _metrics(tmp_path / "whole")
    whole = json.loads((tmp_path / "whole" / "final.json").read_text())
    final = json.loads((split / "final.json").read_text())
    for key in ("best_epoch", "valid", "test", "epochs"):
        assert final[key] == whole[key]


@pytest.mark.slow
def test_a_run_resumes_at_another_world_size(ranks, tmp_path):
    """DCP reshards the column blocks: 2 ranks for 2 epochs, then 3 ranks for 2 more, equal
    (up to float summation order) to 1 rank for all 4."""
    data = make_mmrec_folder(tmp_path / "data")
    common = ["--data", data, "model.name=freedom", "patience=10", *SMALL]
    _ok(ranks.launch(TRAIN, [*common, "--out", tmp_path / "one", "epochs=4"], nproc=1))
    _ok(ranks.launch(TRAIN, [*common, "--out", tmp_path / "moved", "epochs=2"], nproc=2))
    resumed = _ok(ranks.launch(TRAIN, [*common, "--out", tmp_path / "moved", "epochs=4"], nproc=3))
    assert "resumed from" in resumed.stdout
    _assert_same_training(tmp_path / "moved", tmp_path / "one")


@pytest.mark.slow
def test_eight_oversubscribed_ranks_train_like_one(ranks, tmp_path):
    data = make_mmrec_folder(tmp_path / "data")
    common = ["--data", data, "model.name=freedom", "epochs=2", "checkpoint_every=0", "save_best=false", *SMALL]
    _ok(ranks.launch(TRAIN, [*common, "--out", tmp_path / "one"], nproc=1))
    result = _ok(ranks.launch(TRAIN, [*common, "--out", tmp_path / "eight"], nproc=8, timeout=300))
    assert "rank 0 holds columns [0, 1)" in result.stdout  # d = 8: one column per rank
    _assert_same_training(tmp_path / "eight", tmp_path / "one")
    assert json.loads((tmp_path / "eight" / "final.json").read_text())["world_size"] == 8


def test_two_nodes_of_one_process(tmp_path):
    data = make_mmrec_folder(tmp_path / "data")
    port = free_port()
    procs = []
    for node in (0, 1):
        env = child_env() | {"NNODES": "2", "NODE_RANK": str(node), "NPROC_PER_NODE": "1",
                             "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RDZV_ID": f"t{port}",
                             "PYTHON": sys.executable}
        procs.append(subprocess.Popen(
            ["bash", str(REPO / "launch/multinode.sh"), "train", "--data", str(data), "--out", str(tmp_path / "run"),
             "model.name=lightgcn", "epochs=2", *SMALL_ID],
            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True))
    outs = []
    try:
        for p in procs:
            outs.append(p.communicate(timeout=150)[0])
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, 9)
    assert all(p.returncode == 0 for p in procs), "\n".join(o[-3000:] for o in outs)
    final = json.loads((tmp_path / "run" / "final.json").read_text())
    assert final["world_size"] == 2 and final["epochs"] == 2


# ---- bad input: one clear error, raised before any training -------------------------------
def _trainer(data, features="", model="freedom", **keys):
    cfg = TrainConfig(data=str(data), features=str(features), out="", model=model_config(model, embedding_dim=4, **keys))
    return build_engine(cfg, DistInfo(0, 0, 1, __import__("torch").device("cpu"), "gloo"))


def test_features_with_the_wrong_row_count(tmp_path):
    data = make_mmrec_folder(tmp_path / "d", image=False, text=False)
    feats = make_encode_dir(tmp_path / "f", num_items=29)
    with pytest.raises(UserError, match=r"image.npy has 29 item rows, but the dataset has 30 items"):
        _trainer(data, feats)


def test_nan_features(tmp_path):
    data = make_mmrec_folder(tmp_path / "d")
    arr = np.load(data / "text_feat.npy")
    arr[17, 3] = np.nan
    np.save(data / "text_feat.npy", arr)
    with pytest.raises(UserError, match=r"text_feat.npy contains NaN or infinite values.*first at item 17"):
        _trainer(data)


def test_identical_image_rows_are_refused_unless_accepted(tmp_path, caplog, process_group):
    data = make_mmrec_folder(tmp_path / "d")
    image = np.load(data / "image_feat.npy")
    np.save(data / "image_feat.npy", np.broadcast_to(image[:1], image.shape).copy())  # one image for every item
    with pytest.raises(UserError) as e:
        _trainer(data)
    assert str(e.value) == (f"image features of {data} are degenerate: 30 of 30 items share their row with another "
                            "item (30 the same one) and 16 of 16 dimensions are constant; a kNN graph over them is "
                            "arbitrary (no images reached the encode job? its missing_images.txt lists them). Set "
                            "model.accept_degenerate_features=true to train on them anyway")
    with caplog.at_level("WARNING", logger="cliper_dist"):
        _trainer(data, accept_degenerate_features=True)
    assert "(accepted: model.accept_degenerate_features=true)" in caplog.text


def _dataset_dir(path: Path, rows: list[tuple[int, int, int]], users: int, items: int) -> Path:
    path.mkdir(parents=True)
    (path / "manifest.json").write_text(json.dumps({"counts": {"users": users, "items": items}, "shards": []}))
    text = "userID\titemID\tx_label\n" + "".join(f"{u}\t{i}\t{s}\n" for u, i, s in rows)
    (path / "interactions.inter").write_text(text)
    return path


def test_items_out_of_range(tmp_path):
    rows = [(0, 0, 0), (0, 1, 1), (0, 2, 2), (1, 9, 0)]
    with pytest.raises(UserError, match=r"1 item ids outside \[0, 5\), first 9 at row 4"):
        _trainer(_dataset_dir(tmp_path / "d", rows, users=2, items=5), model="lightgcn")


def test_users_out_of_range(tmp_path):
    rows = [(0, 0, 0), (0, 1, 1), (0, 2, 2), (-1, 3, 0)]
    with pytest.raises(UserError, match=r"user ids outside"):
        _trainer(_dataset_dir(tmp_path / "d", rows, users=2, items=5), model="lightgcn")


def test_empty_split(tmp_path):
    rows = [(0, 0, 0), (0, 1, 0), (1, 2, 2)]
    with pytest.raises(UserError, match=r"the valid split is empty"):
        _trainer(_dataset_dir(tmp_path / "d", rows, users=2, items=5), model="lightgcn")


def test_freedom_without_features(tmp_path):
    data = make_mmrec_folder(tmp_path / "d", image=False, text=False)
    with pytest.raises(UserError, match=r"model freedom needs features"):
        _trainer(data)


@pytest.mark.parametrize("model", ["slmrec", "dualgnn"])
def test_models_of_both_modalities_refuse_one(tmp_path, process_group, model):
    data = make_mmrec_folder(tmp_path / "d", text=False)
    with pytest.raises(UserError, match=rf"model.name={model} needs image and text features"):
        _trainer(data, model=model)


@pytest.mark.parametrize("model", ["vbpr", "slmrec", "lattice", "dualgnn", "mmgcn"])
def test_models_of_fixed_text_refuse_a_trained_fusion(tmp_path, process_group, model):
    data = make_mmrec_folder(tmp_path / "d", image=False, text=False)
    feats = make_encode_dir(tmp_path / "f")
    with pytest.raises(UserError, match=rf"model.name={model} takes frozen content features; model.fusion=mlp"):
        _trainer(data, feats, model=model, fusion="mlp")


def test_bad_input_under_torchrun_is_one_line(ranks, tmp_path):
    data = make_mmrec_folder(tmp_path / "d")
    arr = np.load(data / "image_feat.npy")
    np.save(data / "image_feat.npy", arr[:-2])
    result = ranks.launch(TRAIN, ["--data", data, "--out", tmp_path / "run", "model.name=freedom", *SMALL])
    assert result.returncode != 0
    errors = [x for x in result.stdout.splitlines() if x.startswith("cliper-dist: error:")]
    assert errors == [f"cliper-dist: error: {data / 'image_feat.npy'} has 28 item rows, but the dataset has 30 "
                      f"items (features must be aligned by item index)"]
    assert not (tmp_path / "run" / "metrics.jsonl").exists()  # nothing trained


def test_mmgcn_is_initialised_and_frozen_as_mmrec_runs_it(tmp_path, process_group):
    """Which tensors train, the widths and layer count, and each layer's init (MMRec's code:
    Xavier-normal conv, linear and first g-layer; nn.Linear's default for the later g-layers;
    Xavier-normal ids over (U + I) x d and preferences over U x width)."""
    import torch

    data = make_mmrec_folder(tmp_path / "d", num_users=400, num_items=300)
    cfg = TrainConfig(data=str(data), out="", model=model_config("mmgcn", embedding_dim=64, n_ui_layers=3))
    engine = build_engine(cfg, DistInfo(0, 0, 1, torch.device("cpu"), "gloo"))
    p = engine.params
    frozen = {"user_table", "item_table", "towers.image.preference", "towers.text.preference"}
    assert {n for n, t in p.items() if not t.requires_grad} == frozen
    assert frozen.isdisjoint(engine.optimizer.params)
    assert p["towers.image.mlp.weight"].shape == (256, 16) and p["towers.image.conv.0.weight"].shape == (256, 256)
    assert p["towers.text.conv.0.weight"].shape == (24, 24) and "towers.text.mlp.weight" not in p
    assert len([n for n in p if n.startswith("towers.image.conv.")]) == 3

    def std_is(name, want):
        got = p[name].detach().std().item()
        assert abs(got / want - 1) < 0.05, (name, got, want)

    std_is("towers.image.conv.0.weight", (2 / 512) ** 0.5)
    std_is("towers.image.conv.1.weight", (2 / 128) ** 0.5)
    std_is("towers.image.linear.0.weight", (2 / 320) ** 0.5)
    std_is("towers.image.gate.0.parts.0.weight", (2 / 384) ** 0.5)
    std_is("towers.image.gate.0.parts.1.weight", (2 / 384) ** 0.5)
    std_is("towers.image.gate.1.parts.0.weight", 128 ** -0.5 / 3 ** 0.5)  # U(+-1/sqrt(fan_in 128))
    assert p["towers.image.gate.1.parts.1.weight"].abs().max() <= 128 ** -0.5
    std_is("user_table", (2 / (700 + 64)) ** 0.5)
    std_is("item_table", (2 / (700 + 64)) ** 0.5)
    std_is("towers.image.preference", (2 / (400 + 256)) ** 0.5)
