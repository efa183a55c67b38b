"""The sequential task end to end: ``launch/train.py`` with ``model.name=sasrec`` on real ranks,
1 rank = 2 ranks, a resume that repeats the uninterrupted run (fused optimizer state included),
the recommend tool, and the refusals (one line, nothing written)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cliper_dist import config
from cliper_dist.data.interactions import write_inter
from cliper_dist.dist import DistInfo
from cliper_dist.errors import UserError
from cliper_dist.train.job import TrainConfig, run
from tests.conftest import REPO, run_python
from tests.seq._data import stride_walks

TRAIN = "launch/train.py"
USERS, ITEMS = 48, 30
# dropout 0: runs at different world sizes draw different dropout masks (docs/sequential.md)
SMALL = ["model.name=sasrec", "model.embedding_dim=8", "model.max_len=6", "model.heads=2", "model.dropout=0",
         "model.softmax_block=16", "batch_size=16", "eval_batch_users=8", "optim.lr=0.01", "model.table_lr=0.1"]


def make_sequence_folder(path: Path, features: bool = True, timestamps: bool = True) -> Path:
    """An MMRec folder of users walking through items in strides (an order to learn), split
    leave-one-out by time, with image and text features."""
    g = np.random.default_rng(0)
    inter = stride_walks(USERS, ITEMS, (4, 12), g)
    if not timestamps:
        inter.timestamp = None
    path.mkdir(parents=True)
    write_inter(path / "seq.inter", inter)
    if features:
        np.save(path / "image_feat.npy", g.normal(size=(ITEMS, 6)).astype(np.float32))
        np.save(path / "text_feat.npy", g.normal(size=(ITEMS, 4)).astype(np.float32))
    return path


def _records(run_dir: Path) -> list[dict]:
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in ("epoch_s", "eval_s")} for r in lines]


def _same_training(run_dir: Path, reference: Path) -> None:
    got, expected = _records(run_dir), _records(reference)
    assert [r["epoch"] for r in got] == [r["epoch"] for r in expected]
    assert [r["loss"] for r in got] == pytest.approx([r["loss"] for r in expected], rel=1e-5)
    for a, b in zip(got, expected):
        for split in ("valid", "test"):
            assert a[split] == pytest.approx(b[split], abs=1e-6)


def one_rank_equals_two_resumed(ranks, tmp_path: Path, common: list, epochs: int) -> tuple[str, dict]:
    """``launch/train.py`` at 1 rank for ``epochs`` = at 2 ranks for ``epochs - 2``, resumed for 2 more
    (runs ``one`` and ``two`` under ``tmp_path``); the 1-rank run's output and the 2-rank final.json."""
    one = ranks.launch(TRAIN, [*common, "--out", tmp_path / "one", f"epochs={epochs}"], nproc=1)
    assert one.returncode == 0, one.stdout[-5000:]
    first = ranks.launch(TRAIN, [*common, "--out", tmp_path / "two", f"epochs={epochs - 2}"])
    assert first.returncode == 0, first.stdout[-5000:]
    resumed = ranks.launch(TRAIN, [*common, "--out", tmp_path / "two", f"epochs={epochs}"])
    assert resumed.returncode == 0 and "resumed from" in resumed.stdout, resumed.stdout[-5000:]
    _same_training(tmp_path / "two", tmp_path / "one")
    return one.stdout, json.loads((tmp_path / "two" / "final.json").read_text())


def test_one_rank_equals_two_ranks_stopped_and_resumed_then_recommend(ranks, tmp_path):
    """1 rank for 4 epochs = 2 ranks for 2 epochs, resumed for 2 more: the row-sharded table, its
    fused row-wise Adagrad state and Adam's come back from the checkpoint exactly."""
    data = make_sequence_folder(tmp_path / "data")
    common = ["--data", data, *SMALL, "model.item_input=id+features", "patience=10"]
    one, final = one_rank_equals_two_resumed(ranks, tmp_path, common, epochs=4)
    assert "torchrec row_wise item table 30 x 8" in one and "ndcg@10" in one
    assert (final["model"], final["task"], final["primary"], final["world_size"]) == ("sasrec", "seq", "ndcg@10", 2)
    assert list(final["test"]) == ["hr@10", "hr@20", "ndcg@10", "ndcg@20"]
    assert final["valid"] == next(r["valid"] for r in _records(tmp_path / "two") if r["epoch"] == final["best_epoch"])
    assert {"load", "steps", "eval", "checkpoint"} <= set(final["phase_s"])

    rec = run_python([REPO / "tools/recommend.py", tmp_path / "two", "--users", "0,7", "--k", "5"])
    assert rec.returncode == 0, rec.stdout[-3000:]
    rows = [json.loads(x) for x in rec.stdout.splitlines() if x.startswith("{")]
    inter = np.loadtxt(data / "seq.inter", dtype=np.int64, skiprows=1)
    for row in rows:
        seen = set(inter[inter[:, 0] == row["user"], 1].tolist())  # train, valid and test: the whole history
        assert len(row["items"]) == 5 and not seen & set(row["items"])
        assert row["scores"] == sorted(row["scores"], reverse=True)


def _cfg(data: Path, out: Path, *overrides: str) -> TrainConfig:
    return config.load(TrainConfig, None, [f"data={data}", f"out={out}", *SMALL, "epochs=1", *overrides])


def _refused(cfg: TrainConfig, match: str) -> None:
    import torch

    with pytest.raises(UserError, match=match):
        run(cfg, DistInfo(0, 0, 1, torch.device("cpu"), "gloo"))
    assert not Path(cfg.out).exists()  # nothing written


def test_bad_input_is_one_line_with_nothing_written(tmp_path, process_group):
    data = make_sequence_folder(tmp_path / "data")
    _refused(_cfg(data, tmp_path / "a", "model.max_len=0"), r"model.max_len must be >= 1; got 0")
    _refused(_cfg(make_sequence_folder(tmp_path / "untimed", timestamps=False), tmp_path / "b"),
             r"no timestamp column; sequential recommendation orders each user's items by time")
    np.save(data / "text_feat.npy", np.zeros((ITEMS - 2, 4), dtype=np.float32))
    _refused(_cfg(data, tmp_path / "c", "model.item_input=features"),
             r"text_feat.npy has 28 item rows, but the dataset has 30 items")
    _refused(_cfg(data, tmp_path / "d", "optim.rows=touched"), r"optim.rows applies to the graph models")


def test_a_changed_config_is_refused_and_a_resume_with_dropout_repeats_the_whole_run(tmp_path, process_group):
    """Dropout masks derive from (seed, epoch, rank): a run resumed with a larger epoch budget
    repeats the uninterrupted one (features only here: the path without an ID table)."""
    import torch

    data = make_sequence_folder(tmp_path / "data")
    info = DistInfo(0, 0, 1, torch.device("cpu"), "gloo")
    keys = ["model.dropout=0.3", "model.item_input=features", "model.loss=bce", "patience=10"]
    run(_cfg(data, tmp_path / "run", *keys), info)
    with pytest.raises(UserError, match=r"model.loss: 'bce' -> 'ce'"):
        run(_cfg(data, tmp_path / "run", *keys, "model.loss=ce"), info)
    assert run(_cfg(data, tmp_path / "run", *keys, "epochs=3"), info)["epochs"] == 3
    run(_cfg(data, tmp_path / "whole", *keys, "epochs=3"), info)
    _same_training(tmp_path / "run", tmp_path / "whole")
