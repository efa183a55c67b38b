"""The 2-rank harness itself and the dist module's guarantees (real torchrun, gloo)."""

from __future__ import annotations

import pickle
import time

import torch
import torch.distributed as torch_dist

from cliper_dist import dist
from cliper_dist.errors import UserError
from tests.conftest import WORKER, run_with_timeout, torchrun_cmd


def gather_ranks(tag: str):
    info = dist.init(device="cpu")  # a CPU tensor all-reduced: gloo on a GPU host too
    t = torch.tensor([info.rank + 1.0])
    torch_dist.all_reduce(t)
    return {"tag": tag, "rank": info.rank, "world": info.world_size, "backend": info.backend,
            "sum": t.item(), "gathered": dist.all_gather_object(info.rank * 10),
            "agreed": dist.broadcast_object(f"from-{info.rank}")}


def test_every_rank_runs_and_talks(ranks):
    results = ranks.run(gather_ranks, "x")
    assert [r["rank"] for r in results] == [0, 1]
    for r in results:
        assert r["world"] == 2 and r["backend"] == "gloo" and r["tag"] == "x"
        assert r["sum"] == 3.0
        assert r["gathered"] == [0, 10]
        assert r["agreed"] == "from-0"


def fail_on_rank_one():
    info = dist.init(device="cpu", collective_timeout_s=300)
    if info.rank == 1:
        raise RuntimeError("rank one broke")
    torch_dist.barrier()  # rank 0 would wait here forever (300 s) if nobody stopped it
    return "unreachable"


def user_error_everywhere():
    dist.init(device="cpu")
    raise UserError("the config names a file that is not there")


def user_error_on_rank_one():
    info = dist.init(device="cpu", collective_timeout_s=300)
    if info.rank == 1:
        raise UserError("shard 7 has a bad image")
    torch_dist.barrier()


def _launch(tmp_path, fn, timeout):
    spec = tmp_path / "spec.pkl"
    spec.write_bytes(pickle.dumps((fn.__module__, fn.__qualname__, ())))
    start = time.monotonic()
    result = run_with_timeout(torchrun_cmd(2, WORKER, [spec]), timeout=timeout)
    return result, time.monotonic() - start


def test_error_on_one_rank_does_not_hang_the_other(tmp_path):
    result, seconds = _launch(tmp_path, fail_on_rank_one, timeout=90)
    assert result.returncode != 0
    assert seconds < 60, f"the surviving rank was not stopped promptly ({seconds:.0f}s)"
    assert "rank 1/2: failed" in result.stdout and "rank one broke" in result.stdout


def test_user_error_is_one_line_from_rank_zero(tmp_path):
    result, _ = _launch(tmp_path, user_error_everywhere, timeout=90)
    assert result.returncode != 0
    lines = [ln for ln in result.stdout.splitlines() if ln.startswith("cliper-dist: error:")]
    assert lines == ["cliper-dist: error: the config names a file that is not there"]
    # torchrun appends its own failure summary; no frame of the project's code may appear.
    assert "cliper_dist/" not in result.stdout and "rank 0/2: failed" not in result.stdout


def test_a_user_error_of_one_other_rank_is_still_said(tmp_path):
    result, seconds = _launch(tmp_path, user_error_on_rank_one, timeout=90)
    assert result.returncode != 0 and seconds < 60
    lines = [ln for ln in result.stdout.splitlines() if ln.startswith("cliper-dist: error:")]
    assert lines == ["cliper-dist: error: shard 7 has a bad image (rank 1)"]
