"""Every stage on 2 test hosts x 1 and x 2 ranks against the same world on one host (slow):
convert and encode byte for byte, pretrain, adapt and train within the parity tolerance; an
encode that loses a host resumes without redoing finished shards; a host that goes silent
(its link down, nothing closed) ends both sides within their bounds."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import REPO, run_with_timeout, torchrun_cmd
from tests.convert.helpers import make_catalog, run_convert, tree_bytes
from tests.multihost.conftest import assert_ok
from tests.multihost.test_launch import TRAIN, metric_lines, wait_for
from tests.train._data import make_mmrec_folder

pytestmark = pytest.mark.slow
LAYOUTS = [(2, 1), (2, 2)]  # hosts x ranks per host


def one_host(stage: str, args: list, nproc: int) -> None:
    result = run_with_timeout(torchrun_cmd(nproc, REPO / "launch" / f"{stage}.py", args), timeout=300)
    assert result.returncode == 0, result.stdout[-4000:]


def jsonl(path: Path) -> list[dict]:
    """The records of a metrics file without their timings (keys ending in _s)."""
    return [{k: v for k, v in json.loads(line).items() if not k.endswith("_s")} for line in path.read_text().splitlines()]


def assert_close_records(got: list[dict], want: list[dict], tol: float = 1e-5) -> None:
    assert len(got) == len(want) and [sorted(r) for r in got] == [sorted(r) for r in want]
    for a, b in zip(got, want):
        for key, value in b.items():
            if isinstance(value, float):
                assert a[key] == pytest.approx(value, abs=tol), key
            elif isinstance(value, dict):
                assert_close_records([a[key]], [value], tol)
            else:
                assert a[key] == value, key


@pytest.mark.parametrize("hosts,nproc", LAYOUTS)
def test_convert(cluster, tmp_path, hosts, nproc):
    inputs = [arg for key, path in make_catalog(tmp_path).items() for arg in (f"--{key}", path)]
    assert run_convert("jsonl", *inputs, "--shard-size", "2", "--max-image-side", "128",
                       "--out", tmp_path / "one") == 0
    assert_ok(cluster.run("convert", ["--format", "jsonl", *inputs, "shard_size=2", "max_image_side=128",
                                      "--out", tmp_path / "many"], nproc=nproc))
    one, many = tree_bytes(tmp_path / "one"), tree_bytes(tmp_path / "many")
    assert sorted(many) == sorted(one)
    for name in one:
        assert many[name] == one[name], name


def test_encode_2x2(cluster, demo_dataset, demo_features, tiny_clip, tmp_path):  # 2x1: test_launch.py
    model, ckpt = tiny_clip
    assert_ok(cluster.run("encode", ["--data", demo_dataset, "--out", tmp_path / "f", "--model", model,
                                     "--pretrained", ckpt, "batch_size=16", "workers=1"], nproc=2))
    for path in demo_features.glob("*.npy"):
        assert (tmp_path / "f" / path.name).read_bytes() == path.read_bytes(), path.name


@pytest.mark.parametrize("hosts,nproc", LAYOUTS)
def test_pretrain(cluster, demo_dataset, tiny_clip, tmp_path, hosts, nproc):
    model, ckpt = tiny_clip
    args = ["--data", demo_dataset, "--model", model, "--init", ckpt, "steps=20", "batch_size=8", "eval_items=20",
            "eval_every=10", "workers=1"]
    one_host("pretrain", [*args, "--out", tmp_path / "one"], nproc=hosts * nproc)
    assert_ok(cluster.run("pretrain", [*args, "--out", tmp_path / "many"], nproc=nproc))
    metrics = Path("pretrain") / "metrics.jsonl"
    assert_close_records(jsonl(tmp_path / "many" / metrics),
                         jsonl(tmp_path / "one" / metrics), tol=1e-4)
    one, many = (torch.load(tmp_path / d / "clip.pt", map_location="cpu", weights_only=True) for d in ("one", "many"))
    for key, value in one.items():
        torch.testing.assert_close(many[key], value, rtol=1e-5, atol=5e-5)


@pytest.mark.parametrize("hosts,nproc", LAYOUTS)
def test_adapt(cluster, tmp_path, hosts, nproc):
    data = make_mmrec_folder(tmp_path / "data")
    args = ["--data", data, "epochs=2", "batch_size=16", "pairs_per_step=64", "model.dim=16", "model.id_dim=8"]
    one_host("adapt", [*args, "--out", tmp_path / "one"], nproc=hosts * nproc)
    assert_ok(cluster.run("adapt", [*args, "--out", tmp_path / "many"], nproc=nproc))
    metrics = Path("adapt") / "metrics.jsonl"
    assert_close_records(jsonl(tmp_path / "many" / metrics),
                         jsonl(tmp_path / "one" / metrics))
    for name in ("image_feat.npy", "text_feat.npy"):
        np.testing.assert_allclose(np.load(tmp_path / "many" / name), np.load(tmp_path / "one" / name), atol=1e-5)


@pytest.mark.parametrize("hosts,nproc", LAYOUTS)
def test_train(cluster, demo_dataset, demo_features, tmp_path, hosts, nproc):
    args = ["--config", "configs/train/demo.yaml", "--data", demo_dataset, "--features", demo_features, "epochs=3"]
    one_host("train", [*args, "--out", tmp_path / "one"], nproc=hosts * nproc)
    assert_ok(cluster.run("train", [*args, "--out", tmp_path / "many"], nproc=nproc))
    assert_close_records(metric_lines(tmp_path / "many"), metric_lines(tmp_path / "one"))


def test_an_encode_that_loses_the_store_host_resumes_without_redoing_finished_shards(cluster, demo_dataset,
                                                                                   demo_features, tiny_clip,
                                                                                   tmp_path):
    model, ckpt = tiny_clip
    out = tmp_path / "f"
    args = ["--data", demo_dataset, "--out", out, "--model", model, "--pretrained", ckpt, "batch_size=16",
            "workers=1"]  # the reference's batch: GEMM blocking makes the bytes depend on it
    nodes = cluster.start("encode", args)
    wait_for(lambda: any((out / "parts").glob("*.npz")) if (out / "parts").is_dir() else False, "a finished part")
    cluster.hosts[0].kill()  # node 0: rank 0's agent and the rendezvous store with it
    killed = time.monotonic()
    _, survivor = cluster.wait(nodes, timeout=90)
    assert survivor.code != 0 and time.monotonic() - killed < 45, survivor.out
    assert 1 <= len(survivor.errors()) <= 2 and "Traceback" not in survivor.out, survivor.out
    finished = sorted(p.name for p in (out / "parts").glob("*.npz"))
    assert finished and not (out / "image.npy").exists()

    rerun = cluster.run("encode", args)
    assert_ok(rerun)
    said = rerun[0].out + rerun[1].out
    assert f"{len(finished)} already done" in said, said[-3000:]
    for path in demo_features.glob("*.npy"):
        assert (out / path.name).read_bytes() == path.read_bytes(), path.name


def test_a_host_that_goes_silent_ends_both_sides_within_their_bounds(cluster, demo_dataset, tmp_path):
    out = tmp_path / "run"
    nodes = cluster.start("train", [*TRAIN, "--data", demo_dataset, "--out", out, "epochs=50"],
                          env={"CLIPER_PEER_TIMEOUT": "8", "CLIPER_CONNECT_TIMEOUT": "10"})
    wait_for(lambda: (out / "checkpoints" / "last").exists(), "a checkpoint")
    cluster.hosts[1].link(up=False)  # nothing is closed: the peers hear nothing at all
    cut = time.monotonic()
    ended = cluster.wait(nodes, timeout=120)
    assert all(e.code != 0 for e in ended)
    # host 0: rank 1's heartbeat stops; host 1: the store stops answering, then its agent gives up
    assert "has sent no heartbeat" in ended[0].out or "has not answered" in ended[0].out, ended[0].out
    assert "has not answered" in ended[1].out, ended[1].out
    assert max(e.seconds for e in ended) - (cut - min(n.started for n in nodes)) < 60


def test_ranks_that_cannot_reach_each_other_end_in_one_line_within_the_connect_timeout(cluster, demo_dataset,
                                                                                      tmp_path):
    # every host binds its ranks to loopback: they meet at the store, then cannot connect
    ended = cluster.run("train", [*TRAIN, "--data", demo_dataset, "--out", tmp_path / "run"],
                        env={"SOCKET_IFNAME": "lo", "CLIPER_CONNECT_TIMEOUT": "10"}, timeout=120)
    assert all(e.code != 0 for e in ended)
    said = [line for e in ended for line in e.errors()]
    assert said and all("could not connect to the other 1 rank(s) within 10 s" in line for line in said), said
    assert "GLOO_SOCKET_IFNAME" in said[0] and all("Traceback" not in e.out for e in ended)
    # start-up (~10 s) + the connect timeout (10) + its grace (2) + rank 0's linger (4) + agents' exit
    assert max(e.seconds for e in ended) < 40, [round(e.seconds, 1) for e in ended]
