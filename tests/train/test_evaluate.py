"""The sampled-users estimate (``eval_users``) at 2 real ranks: the same metrics as brute force
over exactly the sampled users, and the full evaluation when the sample covers everyone."""

from __future__ import annotations

import numpy as np
import pytest

from cliper_dist import dist
from cliper_dist.data.recdata import load_rec_data
from cliper_dist.model.registry import model_config
from cliper_dist.parallel.comm import gather_columns
from cliper_dist.train.evaluate import evaluate, evaluated_users, sample_users
from cliper_dist.train.job import TrainConfig, build_engine
from tests.train._data import make_mmrec_folder
from tests.train.test_metrics import brute_force


def evaluate_sampled(data_dir: str) -> dict:
    info = dist.init(device="cpu")  # .numpy() of the scores below; tests/e2e/test_gpu.py covers CUDA
    engine = build_engine(TrainConfig(data=data_dir, out="", seed=3, model=model_config("lightgcn")), info)
    data, split = engine.data, engine.split
    users, items = engine.model.embeddings()
    dim = engine.model.cfg.embedding_dim
    sample = sample_users(evaluated_users(data), 25, seed=3)
    return {"sample": sample, "again": sample_users(evaluated_users(data), 25, seed=3),
            "sampled": evaluate(engine.model, data, split, 7, sample),
            "full": evaluate(engine.model, data, split, 7),
            "everyone": evaluate(engine.model, data, split, 7, sample_users(evaluated_users(data), 10**6, seed=3)),
            "scores": (gather_columns(users, dim, split) @ gather_columns(items, dim, split).T).numpy()}


def test_sampled_users_estimate_is_exact_over_the_sample(ranks, tmp_path):
    folder = make_mmrec_folder(tmp_path / "data", num_users=120, num_items=60, image=False, text=False)
    results = ranks.run(evaluate_sampled, str(folder), nproc=2)
    res = results[0]
    assert results[1]["sampled"] == res["sampled"]
    assert len(res["sample"]) == 25 and np.array_equal(res["sample"], res["again"])
    assert res["everyone"] == res["full"] and res["sampled"] != res["full"]
    data = load_rec_data(folder)
    assert set(res["sample"]) <= set(evaluated_users(data))
    train = {u: set(data.train.row(u).tolist()) for u in res["sample"]}
    for split, truth in (("valid", data.valid), ("test", data.test)):
        held = {u: set(truth.row(u).tolist()) for u in res["sample"]}
        for k in (10, 20, 50):
            recall, ndcg = brute_force(res["scores"], train, held, k)
            assert res["sampled"][split][f"recall@{k}"] == pytest.approx(recall, abs=1e-6)
            assert res["sampled"][split][f"ndcg@{k}"] == pytest.approx(ndcg, abs=1e-6)
