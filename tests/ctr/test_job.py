"""The CTR task end to end: ``launch/train.py`` with ``model.name=dlrm|dcn`` on real ranks, 1 rank =
2 ranks stopped after 1 epoch and resumed (fbgemm's row-wise Adagrad state and Adam's come back exactly), the
run directory's files, and the refusals (one line, nothing written)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cliper_dist import config
from cliper_dist.ctr.synthetic import synthetic_ctr, write_dataset, write_features
from cliper_dist.dist import DistInfo
from cliper_dist.errors import UserError
from cliper_dist.train.job import TrainConfig, run
from tests.seq.test_job import one_rank_equals_two_resumed
from tools.recommend import recommend

SMALL = ["model.name=dlrm", "model.embedding_dim=4", "model.bottom_mlp=[8]", "model.top_mlp=[8,4]",
         "model.negatives=2", "model.eval_batch=64", "batch_size=64", "optim.lr=0.01", "model.table_lr=0.1"]


def make_data(tmp_path: Path, rating: bool = True) -> tuple[Path, Path]:
    s = synthetic_ctr(num_users=50, num_items=60, per_user=8, seed=3, feature_dim=6)
    return (write_dataset(s, tmp_path / ("data" if rating else "unrated"), with_rating=rating),
            write_features(s.features, tmp_path / "features"))


def test_one_rank_equals_two_ranks_stopped_and_resumed(ranks, tmp_path):
    data, features = make_data(tmp_path)
    common = ["--data", data, "--features", features, *SMALL, "model.sharding=row_wise", "patience=10"]
    one, final = one_rank_equals_two_resumed(ranks, tmp_path, common, epochs=3)
    assert "row_wise" in one and "valid auc" in one
    assert (final["model"], final["task"], final["primary"], final["world_size"]) == ("dlrm", "ctr", "auc", 2)
    assert set(final["test"]) == {"auc", "logloss", "samples", "ctr"}
    assert {"load", "steps", "eval", "checkpoint"} <= set(final["phase_s"])


def _cfg(data: Path, out: Path, *overrides: str) -> TrainConfig:
    return config.load(TrainConfig, None, [f"data={data}", f"out={out}", *SMALL, "epochs=1", *overrides])


def _refused(cfg: TrainConfig, match: str) -> None:
    import torch

    with pytest.raises(UserError, match=match) as e:
        run(cfg, DistInfo(0, 0, 1, torch.device("cpu"), "gloo"))
    assert "\n" not in str(e.value)
    assert not Path(cfg.out).exists()  # nothing written


def test_bad_input_is_one_line_with_nothing_written(tmp_path, process_group):
    data, features = make_data(tmp_path)
    unrated, _ = make_data(tmp_path, rating=False)
    _refused(_cfg(unrated, tmp_path / "a", "model.labels=explicit"), r"needs a rating column")
    _refused(_cfg(data, tmp_path / "b", "model.labels=explicit", "model.rating_threshold=0.5"),
             r"model.rating_threshold=0.5 is outside the ratings' range \(1..5\)")
    (tmp_path / "nobrand").mkdir()
    for name in ("manifest.json", "interactions.inter"):
        (tmp_path / "nobrand" / name).write_bytes((data / name).read_bytes())
    (tmp_path / "nobrand" / "items.jsonl").write_text("".join(f'{{"index": {i}}}\n' for i in range(60)))
    _refused(_cfg(tmp_path / "nobrand", tmp_path / "c"), r"no item of the catalog has a 'brand' value")
    np.save(features / "text_feat.npy", np.zeros((58, 6), dtype=np.float32))
    _refused(_cfg(data, tmp_path / "d", f"features={features}"), r"text_feat.npy has 58 item rows, but the dataset has 60")


def test_a_changed_config_is_refused_and_the_budget_may_grow(tmp_path, process_group):
    import torch

    data, _ = make_data(tmp_path)
    info = DistInfo(0, 0, 1, torch.device("cpu"), "gloo")
    run(_cfg(data, tmp_path / "run", "model.name=dcn", "model.dcn_rank=2"), info)
    with pytest.raises(UserError, match=r"model.negatives: 2 -> 3"):
        run(_cfg(data, tmp_path / "run", "model.name=dcn", "model.dcn_rank=2", "model.negatives=3"), info)
    final = run(_cfg(data, tmp_path / "run", "model.name=dcn", "model.dcn_rank=2", "epochs=2"), info)
    assert final["epochs"] == 2 and final["task"] == "ctr"
    with pytest.raises(UserError, match=r"a CTR run \(dcn\) scores given \(user, item\) pairs"):
        recommend(tmp_path / "run", ["0"], 5, by_index=True)
