"""Each benchmark runs end to end at a tiny size (slow: ``bash scripts/test.sh -m slow``), so
an API change cannot break one unnoticed."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.conftest import REPO, run_python
from tests.train._data import make_mmrec_folder

pytestmark = pytest.mark.slow


def _rows(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def test_train_scale_two_layouts(tmp_path):
    result = run_python([REPO / "benchmarks/train_scale.py", "--size", "baby", "--layouts", "1x1,2x1",
                         "--max-steps", "3", "--workdir", tmp_path], timeout=300)
    assert result.returncode == 0, result.stdout[-3000:]
    rows = _rows(result.stdout)
    assert [(r["ranks"], r["threads"]) for r in rows] == [(1, 1), (2, 1)]
    assert rows[1]["projected"] and rows[1]["speedup_vs_1x1"] > 0 and len(rows[1]["peak_rss_mb"]) == 2


def test_train_scale_whole_job_on_clustered_features(tmp_path):
    result = run_python([REPO / "benchmarks/train_scale.py", "--size", "baby", "--job", "--layouts", "1x1",
                         "--batch", "16384", "--eval-users", "2000", "--workdir", tmp_path], timeout=300)
    assert result.returncode == 0, result.stdout[-3000:]
    (row,) = _rows(result.stdout)
    assert {"load", "knn", "steps", "eval"} <= set(row["phase_s"]) and len(row["peak_rss_mb"]) == 1
    assert len(row["knn_recall_log"]) == 2  # one logged recall per modality's graph
    views = np.load(tmp_path / "baby_features" / "text_views.npy", mmap_mode="r")
    assert views.shape == (5, 7050, 768)


def test_train_epoch_against_its_references(tmp_path):
    data = make_mmrec_folder(tmp_path / "data", num_users=300, num_items=200, image=False, text=False)
    result = run_python([REPO / "benchmarks/train_epoch.py", "--data", data, "--epochs", "2", "--ref-epochs", "2",
                         "--layouts", "1x1", "--ref-threads", "1", "--workdir", tmp_path], timeout=300)
    assert result.returncode == 0, result.stdout[-3000:]
    rows = _rows(result.stdout)
    assert {(r["impl"], r["model"]) for r in rows} == {(i, m) for i in ("reference-mmrec-style", "cliper-dist")
                                                       for m in ("lightgcn", "freedom", "vbpr", "slmrec", "lattice",
                                                                 "dualgnn", "mmgcn")}
    assert all(r["epoch_speedup_vs_ref"] > 0 for r in rows if r["impl"] == "cliper-dist")


def test_train_epoch_rounds_alternate_and_summarise_medians(tmp_path):
    data = make_mmrec_folder(tmp_path / "data", num_users=300, num_items=200, image=False, text=False)
    result = run_python([REPO / "benchmarks/train_epoch.py", "--data", data, "--epochs", "2", "--ref-epochs", "2",
                         "--models", "lightgcn", "--layouts", "1x1", "--ref-threads", "1", "--rounds", "2",
                         "--workdir", tmp_path], timeout=300)
    assert result.returncode == 0, result.stdout[-3000:]
    assert [(r["impl"], r["round"]) for r in _rows(result.stdout)] == [
        ("reference-mmrec-style", 0), ("cliper-dist", 0), ("reference-mmrec-style", 1), ("cliper-dist", 1)]
    assert "x the reference (rounds: " in result.stdout


def test_large_batch_rules(tmp_path):
    data = make_mmrec_folder(tmp_path / "data", num_users=300, num_items=200, image=False, text=False)
    result = run_python([REPO / "benchmarks/large_batch.py", "--data", data, "--runs", "256:none,1024:sqrt",
                         "--threads", "1", "--workdir", tmp_path / "work", "--train", "epochs=3"], timeout=300)
    assert result.returncode == 0, result.stdout[-3000:]
    rows = _rows(result.stdout)
    assert [(r["batch"], r["rule"]) for r in rows[:2]] == [(256, "none"), (1024, "sqrt")]
    # the config's own batch is 2048: sqrt scales both by sqrt(1024 / 2048)
    assert rows[1]["lr"] == pytest.approx(1e-3 * 0.5 ** 0.5, rel=1e-5)
    assert rows[1]["reg_weight"] == pytest.approx(1e-4 * 0.5 ** 0.5, rel=1e-5)
    assert rows[2]["wall_to_best_speedup_vs_first"] > 0


def test_convert_throughput_and_memory():
    result = run_python([REPO / "benchmarks/convert_throughput.py", "--items", "8", "--side", "64",
                         "--shard-size", "4", "--repeats", "1"])
    assert result.returncode == 0, result.stdout[-3000:]
    (row,) = _rows(result.stdout)
    assert row["items"] == 8 and row["identical_output"] and row["ratio_2_to_1"] > 0
    result = run_python([REPO / "benchmarks/convert_throughput.py", "--memory", "20"])
    assert result.returncode == 0, result.stdout[-3000:]
    assert _rows(result.stdout)[0]["peak_rss_mb_20_items"] > 0


def test_encode_throughput_at_one_and_two_ranks():
    result = run_python([REPO / "benchmarks/encode_throughput.py", "--items", "16", "--batch-size", "8",
                         "--workers", "0"], timeout=300)
    assert result.returncode == 0, result.stdout[-3000:]
    (row,) = _rows(result.stdout)
    assert row["model"] == "clip-tiny" and row["items"] == 16
    assert row["e2e_1rank_items_per_s"] > 0 and row["e2e_2rank_items_per_s"] > 0 and row["ceiling_items_per_s"] > 0


def test_knn_recall_of_hnsw_against_exact():
    result = run_python([REPO / "benchmarks/knn_recall.py", "--items", "600", "--dim", "16", "--centres", "12",
                         "--sample", "100", "--blocks", "1,2"], timeout=300)
    assert result.returncode == 0, result.stdout[-3000:]
    rows = _rows(result.stdout)
    assert [r["blocks"] for r in rows[:2]] == [1, 2] and all(r["recall@11"] > 0.9 for r in rows[:2])
    assert rows[2]["exact_sample_s"] >= 0


def test_adapt_quality_three_variants(tmp_path):
    data = make_mmrec_folder(tmp_path / "data", num_users=60, num_items=40)
    result = run_python([REPO / "benchmarks/adapt_quality.py", "--data", data, "--features", data,
                         "--train-config", REPO / "configs/train/demo.yaml", "--seeds", "0",
                         "--adapt", "epochs=2", "batch_size=16", "model.dim=8", "model.id_dim=8",
                         "--train", "epochs=2", "model.embedding_dim=8", "--freedom", "model.knn_k=3",
                         "--threads", "1", "--workdir", tmp_path / "work"], timeout=300)
    assert result.returncode == 0, result.stdout[-3000:]
    rows = _rows(result.stdout)
    assert {r["variant"] for r in rows if "seed" in r} == {"lightgcn", "freedom-raw", "freedom-adapted"}
    assert rows[-1]["adapted_vs_raw_test_recall@20"] > 0


def test_demo_signal_one_seed(tmp_path):
    """The whole demo (README command 1) once: three runs on one split, and their ratios."""
    result = run_python([REPO / "benchmarks/demo_signal.py", "--seeds", "0", "--out", tmp_path], timeout=900)
    assert result.returncode == 0, result.stdout[-3000:]
    rows = _rows(result.stdout)
    assert [r["name"] for r in rows[-3:]] == ["lightgcn", "freedom_random_clip", "freedom_catalog_clip"]
    assert all(0 < r["test_recall@20_mean"] <= 1 for r in rows[-3:])
    assert rows[2]["held_out_i2t_r1"]["title"] > rows[2]["chance_r1"]["title"]


def test_seq_step_reference_and_four_layouts():
    result = run_python([REPO / "benchmarks/seq_step.py", "--items", "600", "--users", "400", "--batch", "32",
                         "--steps", "2", "--loss", "bce"], timeout=300)
    assert result.returncode == 0, result.stdout[-3000:]
    *rows, summary = _rows(result.stdout)
    assert [(r["impl"], r["ranks"]) for r in rows] == [("reference", 1), ("sharded", 1), ("sharded", 2),
                                                       ("pipelined", 1), ("pipelined", 2)]
    assert rows[2]["table_rows_per_rank"] == [300, 300] and summary["table_2_over_1"] == 0.5


def test_seq_scale_epoch_and_table_at_one_and_two_ranks():
    result = run_python([REPO / "benchmarks/seq_scale.py", "--users", "200", "--items", "100", "--epochs", "2",
                         "--batch", "64", "--table-items", "20000", "--steps", "2"], timeout=300)
    assert result.returncode == 0, result.stdout[-3000:]
    *rows, summary = _rows(result.stdout)
    assert [(r["mode"], r["ranks"]) for r in rows] == [("epoch", 1), ("epoch", 2), ("table", 1), ("table", 2)]
    assert rows[3]["rows"] == [10000, 10000] and summary["table_per_rank_2_over_1"] == pytest.approx(0.5, abs=0.01)
    assert summary["epoch_speedup_2x1_over_1x1"] > 0 and len(rows[3]["peak_rss_mb"]) == 2


def test_seq_recbole_side_by_side_on_one_split(tmp_path):
    """Makes RecBole's venv once (benchmarks/.peers/recbole, from PyPI), then every side for 2 epochs:
    RecBole's SASRec as shipped and with our encoder in it, each with its own optimizer and with our
    table's; ours both forms x both norms."""
    result = run_python([REPO / "benchmarks/seq_recbole.py", "--users", "150", "--items", "60", "--epochs", "2",
                         "--patience", "1", "--workdir", tmp_path, "--peer-blocks", "recbole,paper",
                         "--peer-table", "adam,rowwise_adagrad", "--norms", "pre,post", "--seeds", "3"], timeout=900)
    assert result.returncode == 0, result.stdout[-3000:]
    peer, peer_table, paper, paper_table, *ours, summary = _rows(result.stdout)
    assert [r["impl"] for r in (peer, peer_table, paper, paper_table)] == [
        "recbole-1.2.1", "recbole-1.2.1+rowwise-adagrad-table@0.01", "recbole-1.2.1+paper-blocks",
        "recbole-1.2.1+paper-blocks+rowwise-adagrad-table@0.01"]
    assert summary["split_identical"] and summary["seeds"] == [3] and {r["seed"] for r in ours} == {3}
    assert [(r["examples"], r["norm"]) for r in ours] == [("window", "pre"), ("window", "post"), ("prefix", "pre"),
                                                          ("prefix", "post")]
    assert ours[0]["batch"] < summary["batch"] == ours[2]["batch"]  # window batches count users, prefix events
    assert peer["test_users"] == 150 and peer["num_items_ranked"] == ours[0]["num_items_ranked"] == 60
    for r in ours:
        for side, suffix in ((peer, ""), (peer_table, "_vs_rowwise_adagrad_table"), (paper, "_vs_paper_blocks"),
                             (paper_table, "_vs_paper_blocks_vs_rowwise_adagrad_table")):
            key = r["examples"] + ("_post" if r["norm"] == "post" else "") + suffix
            ratio = r["test"]["ndcg@10"] / side["test"]["ndcg@10"]
            assert summary[f"ndcg_ratio_{key}"] == pytest.approx(ratio, abs=1e-3)
            assert summary[f"ndcg_ratio_{key}_per_seed"] == [pytest.approx(ratio, abs=1e-3)]
            assert summary[f"epoch_speedup_{key}"] == pytest.approx(side["s_per_epoch"] / r["s_per_epoch"], abs=0.01)


def test_ctr_auc_picks_each_sides_setting_on_mean_valid_auc():
    """Makes DeepCTR-Torch's venv once (benchmarks/.peers/deepctr, from PyPI), then a small grid per side (4
    settings each), 2 seeds."""
    result = run_python([REPO / "benchmarks/ctr_auc.py", "--users", "120", "--items", "80", "--per-user", "10",
                         "--epochs", "1", "--dims", "4,8", "--bottom-mlps", "none", "8", "--seeds", "0,1",
                         "--peers", "dcnv2"], timeout=900)
    assert result.returncode == 0, result.stdout[-3000:]
    *runs, summary = _rows(result.stdout)
    assert len(runs) == 2 * 2 * 2 * (2 + 2)  # inputs x seeds x widths x (ours' 2 MLPs + the peer's 2 nets)
    for inputs in ("id_only", "features"):
        for side in ("ours_dlrm", "deepctr_torch_dcnv2"):
            settings: dict = {}
            for r in runs:
                if (r["inputs"], r["side"]) == (inputs, side):
                    settings.setdefault((r["dim"], str(r.get("bottom_mlp", r.get("net")))), []).append(r)
            assert len(settings) == 4
            best = max(settings.values(), key=lambda rs: sum(r["valid_auc"] for r in rs))
            assert [r["seed"] for r in best] == [0, 1]
            got = summary[f"{side}_{inputs}"]
            second = f"bottom_mlp={best[0]['bottom_mlp']}" if side == "ours_dlrm" else f"net={best[0]['net']}"
            assert got["setting"] == f"dim={best[0]['dim']} {second}"
            assert got["test_auc"][0] == pytest.approx(sum(r["test_auc"] for r in best) / 2, abs=1e-5)
        diffs = summary[f"ours_minus_deepctr_torch_dcnv2_{inputs}"]["per_seed"]
        assert len(diffs) == 2 and all(-1 <= d <= 1 for d in diffs)


def test_seq_demo_table_rows_over_two_seeds(tmp_path):
    """The demo's pipeline at a tiny size (loo dataset, catalog-trained CLIP, CLIPER and adapted features), then
    two of the table's rows over two seeds, one epoch each."""
    result = run_python([REPO / "benchmarks/seq_demo_table.py", "--items", "60", "--users", "80", "--seeds", "0,1",
                         "--inputs", "SASRec features-only (CLIPER),SASRec ID + adapted", "--train", "epochs=1",
                         "--pretrain", "steps=4", "batch_size=8", "eval_items=8", "eval_every=4", "checkpoint_every=4",
                         "--adapt", "epochs=2", "batch_size=16", "pairs_per_step=32", "--threads", "1", "--workdir", tmp_path], timeout=900)
    assert result.returncode == 0, result.stdout[-3000:]
    rows = _rows(result.stdout)
    assert [(r["input"], r["seed"]) for r in rows[:4]] == [
        ("SASRec features-only (CLIPER)", 0), ("SASRec ID + adapted", 0),
        ("SASRec features-only (CLIPER)", 1), ("SASRec ID + adapted", 1)]
    assert all(r["seeds"] == 2 and 0 <= r["test_ndcg@10_mean"] <= 1 for r in rows[4:])
    assert "| SASRec ID + adapted |" in result.stdout


def test_ctr_step_three_sides_and_two_ranks():
    result = run_python([REPO / "benchmarks/ctr_step.py", "--users", "300", "--items", "200", "--per-user", "8",
                         "--batch", "64", "--dim", "8", "--steps", "2", "--warmup", "1", "--ranks", "2"], timeout=300)
    assert result.returncode == 0, result.stdout[-3000:]
    *rows, summary = _rows(result.stdout)
    assert [(r["side"], r["ranks"]) for r in rows] == [("ours", 1), ("torchrec_example", 1), ("plain", 1), ("ours", 2)]
    assert summary["ours_over_plain"] > 0 and "ours_2_ranks_over_1" in summary


def test_ctr_scale_profiled_at_one_and_two_ranks_with_the_large_tables_row_wise():
    result = run_python([REPO / "benchmarks/ctr_scale.py", "--largest", "20000", "--rows", "2048", "--rows-1", "1024",
                         "--batch", "512", "--dim", "8", "--profile", "--sharding", "table_wise",
                         "--row-wise-min-rows", "2000", "--bottom-mlp", "16,12", "--top-mlp", "10"], timeout=300)
    assert result.returncode == 0, result.stdout[-3000:]
    one, two, summary = _rows(result.stdout)
    assert (one["ranks"], two["ranks"], two["samples"]) == (1, 2, 2048)
    assert one["mlps"] == two["mlps"] == [[16, 12, 8], [10, 1]]
    assert two["plan"] == {"row_wise": 5, "table_wise": 21}  # 20,000 down to 4,348 rows; then 564 and fewer
    assert one["profile_ms_per_step"] and two["profile_ms_per_step"]
    assert summary["table_per_rank_2_over_1"] <= 0.55 and summary["throughput_2_over_1"] > 0


def test_comm_floor_times_four_collectives():
    result = run_python([REPO / "benchmarks/comm_floor.py", "--batch", "64", "--features", "4", "--dim", "8",
                         "--repeats", "2"], timeout=120)
    assert result.returncode == 0, result.stdout[-3000:]
    rows = _rows(result.stdout)
    assert [r["collective"] for r in rows] == ["reduce_scatter_tensor", "all_reduce", "all_to_all_single_then_sum",
                                               "all_gather_single"]
    assert all(r["ranks"] == 2 and r["ms"] >= 0 for r in rows)


def test_sync_cost_steps_at_one_and_two_ranks_and_latency():
    result = run_python([REPO / "benchmarks/sync_cost.py", "--syncs", "0,2", "--segments", "4", "--rows", "32",
                         "--items", "16", "--steps", "2", "--repeats", "1"], timeout=120)
    assert result.returncode == 0, result.stdout[-3000:]
    one, two, summary = _rows(result.stdout)
    assert [(r["ranks"], r["syncs_per_step"]) for r in one["rows"]] == [(1, 0), (1, 2)]
    assert [r.get("syncs_per_step", r.get("latency")) for r in two["rows"]] == [0, 2, "back_to_back",
                                                                                "after_5ms_compute"]
    at_0, at_2 = (r["ms_per_step"] for r in two["rows"][:2])
    assert summary["ms_per_sync_2_ranks"]["2"] == round((at_2 - at_0) / 2, 2)
