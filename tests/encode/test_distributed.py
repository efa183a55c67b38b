"""The launcher on 2 real ranks: same arrays as one process, uneven splits, and a killed rank."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import REPO, kill_rank_when, run_with_timeout, torchrun_cmd
from tests.encode.conftest import BATCH

ARRAYS = ("image", "text_views", "similarity", "fused_sum", "fused_sa", "image_feat", "text_feat", "image_status")


def launch_args(data: Path, out: Path, tiny_clip) -> list[str]:
    model, ckpt = tiny_clip
    return ["--data", data, "--out", out, "--model", model, "--pretrained", ckpt, BATCH, "workers=2"]


def encode_2_ranks(data: Path, out: Path, tiny_clip, timeout: float = 180) -> subprocess.CompletedProcess:
    result = run_with_timeout(torchrun_cmd(2, REPO / "launch" / "encode.py", launch_args(data, out, tiny_clip)),
                              timeout)
    assert result.returncode == 0, result.stdout[-6000:]
    return result


@pytest.fixture(scope="module")
def two_rank_features(tmp_path_factory, encode_dataset, tiny_clip) -> Path:
    out = tmp_path_factory.mktemp("two_rank_features")
    encode_2_ranks(encode_dataset, out, tiny_clip)
    return out


def test_two_ranks_give_the_single_process_arrays(two_rank_features, single_features, encode_dataset):
    for name in ARRAYS:
        np.testing.assert_allclose(np.load(two_rank_features / f"{name}.npy"), np.load(single_features / f"{name}.npy"),
                                   rtol=1e-5, atol=1e-5, err_msg=name)
    stats = json.loads((two_rank_features / "stats.json").read_text())
    n = json.loads((encode_dataset / "manifest.json").read_text())["counts"]["items"]
    assert [r["rank"] for r in stats["ranks"]] == [0, 1] and all(r["items"] > 0 for r in stats["ranks"])
    assert sum(r["items"] for r in stats["ranks"]) == n == stats["items_encoded"]
    assert stats["progress_items"] == n  # rank 0's bar counted every rank's items
    assert sum(r["shards"] for r in stats["ranks"]) == 14
    assert sum(r["missing_image"] + r["corrupt_image"] for r in stats["ranks"]) == 2
    m = json.loads((two_rank_features / "manifest.json").read_text())
    assert m["counts"] == json.loads((single_features / "manifest.json").read_text())["counts"]


def test_more_ranks_than_shards(one_shard_dataset, single_features, tiny_clip, tmp_path):
    encode_2_ranks(one_shard_dataset, tmp_path, tiny_clip)
    stats = json.loads((tmp_path / "stats.json").read_text())
    assert [(r["shards"], r["items"]) for r in stats["ranks"]] == [(1, 10), (0, 0)]
    # the shard holds items 0..9 in the same batches as encode_dataset's first shard
    for name in ("image", "text_views"):
        a, b = np.load(tmp_path / f"{name}.npy"), np.load(single_features / f"{name}.npy")
        np.testing.assert_allclose(a, b[:10] if name == "image" else b[:, :10], rtol=1e-5, atol=1e-5)


def test_killed_rank_then_rerun_gives_the_clean_arrays(two_rank_features, encode_dataset, tiny_clip, tmp_path):
    parts = tmp_path / "parts"
    cmd = torchrun_cmd(2, REPO / "launch" / "encode.py", launch_args(encode_dataset, tmp_path, tiny_clip))
    killed = kill_rank_when(cmd, lambda: parts.is_dir() and any(parts.glob("shard-*.npz")), "a part was written")
    done = len(list(parts.glob("shard-*.npz")))
    assert killed.returncode != 0, killed.stdout[-3000:]
    assert 1 <= done < 14, f"the kill did not land mid-run ({done} of 14 parts)"
    assert not (tmp_path / "manifest.json").exists()

    encode_2_ranks(encode_dataset, tmp_path, tiny_clip)
    m = json.loads((tmp_path / "manifest.json").read_text())
    assert m["timing"]["shards_encoded"] == 14 - done
    for name in ARRAYS:  # same batches, same fp32 CPU kernels: bit-identical
        np.testing.assert_array_equal(np.load(tmp_path / f"{name}.npy"), np.load(two_rank_features / f"{name}.npy"),
                                      err_msg=name)
