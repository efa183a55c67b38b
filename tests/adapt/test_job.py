"""The adapt job end to end on tiny data: the launcher at 2 ranks, its outputs and what train
makes of them, resume (at another world size, into the uninterrupted run; refused under a
changed config), and concat_raw on both kinds of feature input."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from cliper_dist import dist
from cliper_dist.adapt.job import AdaptConfig, run
from cliper_dist.adapt.model import AdaptModelConfig
from cliper_dist.data.item_features import load_features
from cliper_dist.errors import UserError
from tests.conftest import REPO, run_python
from tests.train._data import make_encode_dir, make_mmrec_folder

ADAPT, TRAIN = "launch/adapt.py", "launch/train.py"
SMALL = ["batch_size=16", "pairs_per_step=64", "model.dim=16", "model.id_dim=8"]
ITEMS, DIM = 30, 16


def _ok(result):
    assert result.returncode == 0, result.stdout[-5000:]
    return result


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _losses(out: Path) -> list[dict]:
    lines = [json.loads(x) for x in (out / "adapt" / "metrics.jsonl").read_text().splitlines()]
    for r in lines:
        r.pop("epoch_s")  # timings differ between runs
    return lines


def test_adapt_at_two_ranks_then_train_on_its_output(ranks, tmp_path):
    data = make_mmrec_folder(tmp_path / "data")
    out = tmp_path / "adapted"
    _ok(ranks.launch(ADAPT, ["--data", data, "--out", out, "epochs=2", *SMALL]))
    for name in ("image_feat.npy", "text_feat.npy"):
        feat = np.load(out / name)
        assert feat.shape == (ITEMS, DIM) and feat.dtype == np.float32 and np.isfinite(feat).all()
        np.testing.assert_allclose(np.linalg.norm(feat, axis=1), 1.0, atol=1e-5)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config"]["epochs"] == 2 and manifest["config"]["model"]["dim"] == DIM
    assert manifest["arrays"] == {"image_feat.npy": [ITEMS, DIM], "text_feat.npy": [ITEMS, DIM]}
    assert [r["epoch"] for r in manifest["history"]] == [0, 1]
    inputs = manifest["inputs"]
    assert inputs["interactions"]["sha256"] == _sha256(data / "tiny.inter")
    digests = "".join(_sha256(data / n) for n in ("image_feat.npy", "text_feat.npy"))
    assert inputs["features"]["sha256"] == hashlib.sha256(digests.encode()).hexdigest()
    assert [r["epoch"] for r in _losses(out)] == [0, 1]

    run_dir = tmp_path / "run"
    result = _ok(ranks.launch(TRAIN, ["--data", data, "--features", out, "--out", run_dir, "model.name=freedom",
                                      "epochs=2", "batch_size=64", "model.embedding_dim=8", "model.knn_k=4",
                                      "eval_batch_users=16"]))
    assert f"features: {out}: image N x D ({ITEMS}, {DIM}), text N x D ({ITEMS}, {DIM})" in result.stdout
    assert json.loads((run_dir / "final.json").read_text())["epochs"] == 2

    (out / "manifest.json").unlink()  # as while an adapt run is under way
    with pytest.raises(UserError, match="the adapt job has not finished"):
        load_features(out, ITEMS)


@pytest.mark.slow  # the default run resumes train, encode and convert
def test_resume_continues_into_the_straight_run_and_refuses_a_changed_config(ranks, tmp_path):
    """2 epochs at 2 ranks, then 2 more at 1 (DCP reshards the ID columns and their Adam
    moments), equal to 4 epochs at 2 ranks straight."""
    data = make_mmrec_folder(tmp_path / "data")
    straight, split = tmp_path / "straight", tmp_path / "split"
    _ok(ranks.launch(ADAPT, ["--data", data, "--out", straight, "epochs=4", *SMALL]))
    _ok(ranks.launch(ADAPT, ["--data", data, "--out", split, "epochs=2", *SMALL]))
    resumed = _ok(ranks.launch(ADAPT, ["--data", data, "--out", split, "epochs=4", *SMALL], nproc=1))
    assert "resumed from" in resumed.stdout
    got, want = _losses(split), _losses(straight)
    assert [r["epoch"] for r in got] == [0, 1, 2, 3] and [sorted(r) for r in got] == [sorted(r) for r in want]
    for a, b in zip(got, want):
        for key in a:
            assert a[key] == pytest.approx(b[key], abs=1e-5), (a["epoch"], key)
    for name in ("image_feat.npy", "text_feat.npy"):
        np.testing.assert_allclose(np.load(split / name), np.load(straight / name), atol=1e-5)

    before = (split / "adapt" / "metrics.jsonl").read_text()
    refused = run_python([REPO / ADAPT, "--data", data, "--out", split, "epochs=4", "model.w_cooccur=0.5", *SMALL])
    assert refused.returncode != 0
    errors = [x for x in refused.stdout.splitlines() if x.startswith("cliper-dist: error:")]
    assert len(errors) == 1 and "model.w_cooccur: 1.0 -> 0.5" in errors[0], refused.stdout[-3000:]
    assert "Traceback" not in refused.stdout
    assert (split / "adapt" / "metrics.jsonl").read_text() == before and (split / "manifest.json").is_file()


@pytest.mark.parametrize("source", ["mmrec", "encode"])
def test_concat_raw_writes_raw_then_adapted_columns(tmp_path, source):
    """Raw: an MMRec folder's arrays, or an encode output's image and its text views fused by
    fusion=concat (item i's C views side by side)."""
    data = make_mmrec_folder(tmp_path / "data", image=source == "mmrec", text=source == "mmrec")
    feats = data
    if source == "encode":
        feats = make_encode_dir(tmp_path / "feats", num_items=ITEMS)
    cfg = AdaptConfig(data=str(data), features=str(feats), out=str(tmp_path / "out"), epochs=1, batch_size=16,
                      pairs_per_step=32, concat_raw=True, fusion="concat", model=AdaptModelConfig(dim=DIM, id_dim=8))
    manifest = run(cfg, dist.init(device="cpu"))
    if source == "mmrec":
        raws = {name: np.load(data / name) for name in ("image_feat.npy", "text_feat.npy")}
    else:
        views = np.load(feats / "text_views.npy")  # (C, I, D)
        raws = {"image_feat.npy": np.load(feats / "image.npy"),
                "text_feat.npy": views.transpose(1, 0, 2).reshape(ITEMS, -1)}
    for name, raw in raws.items():
        feat = np.load(tmp_path / "out" / name)
        assert feat.shape == (ITEMS, raw.shape[1] + DIM) and manifest["arrays"][name] == list(feat.shape)
        np.testing.assert_array_equal(feat[:, :raw.shape[1]], raw)
        np.testing.assert_allclose(np.linalg.norm(feat[:, raw.shape[1]:], axis=1), 1.0, atol=1e-5)
