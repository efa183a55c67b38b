import json
import os
import signal
import subprocess
import sys
import time

import pytest

import cliper_dist.convert.writer as writer_module
from cliper_dist.convert.shardwork import build_shard
from tests.convert.helpers import ROOT, image_bytes, read_manifest, run_convert, tree_bytes, write_jsonl, write_lines


def make_inputs(tmp_path, n=20, bad_every=7):
    images = tmp_path / "img"
    images.mkdir()
    rows = []
    for i in range(n):
        (images / f"{i}.png").write_bytes(b"junk" if i % bad_every == 3 else image_bytes((30 + i, 20), (i * 9, 50, 80)))
        rows.append({"item_id": f"I{i:03d}", "title": f"item {i}", "image": f"{i}.png"})
    catalog = write_jsonl(tmp_path / "catalog.jsonl", rows)
    inter = write_lines(tmp_path / "inter.csv", ["user_id,item_id"] + [f"u{u},I{(u * 3 + k) % n:03d}"
                                                                        for u in range(6) for k in range(5)])
    return ["jsonl", "--catalog", catalog, "--images", images, "--interactions", inter, "--shard-size", "4"]


def test_interrupted_run_resumes_into_identical_output(tmp_path, monkeypatch):
    args = make_inputs(tmp_path)
    assert run_convert(*args, "--out", tmp_path / "clean") == 0

    built = []

    def crash_after_two(task):
        if len(built) == 2:
            raise KeyboardInterrupt("simulated interruption")
        built.append(task.path)
        return build_shard(task)

    monkeypatch.setattr(writer_module, "build_shard", crash_after_two)
    with pytest.raises(KeyboardInterrupt):
        run_convert(*args, "--out", tmp_path / "resumed")
    assert not (tmp_path / "resumed" / "manifest.json").exists()
    assert len(list((tmp_path / "resumed" / "shards").glob("*.tar"))) == 2

    built.clear()
    monkeypatch.setattr(writer_module, "build_shard", lambda task: built.append(task.path) or build_shard(task))
    assert run_convert(*args, "--out", tmp_path / "resumed") == 0
    assert len(built) == 3  # 5 shards, 2 kept from the interrupted run
    assert tree_bytes(tmp_path / "resumed") == tree_bytes(tmp_path / "clean")

    built.clear()  # a finished directory: nothing to redo, same bytes
    assert run_convert(*args, "--out", tmp_path / "resumed") == 0
    assert built == [] and tree_bytes(tmp_path / "resumed") == tree_bytes(tmp_path / "clean")


def test_damaged_or_stale_shards_are_redone(tmp_path):
    args = make_inputs(tmp_path)
    out = tmp_path / "ds"
    assert run_convert(*args, "--out", out) == 0
    reference = tree_bytes(out)
    shard = out / "shards" / "shard-000001.tar"
    shard.write_bytes(shard.read_bytes()[:-1024])  # damaged in place: checksum differs
    (out / "shards" / "shard-000002.tar").unlink()
    assert run_convert(*args, "--out", out) == 0
    assert tree_bytes(out) == reference
    # Different options change every shard's fingerprint: nothing stale is kept.
    assert run_convert(*args, "--out", out, "--max-image-side", "16") == 0
    assert tree_bytes(out)["shards/shard-000000.tar"] != reference["shards/shard-000000.tar"]


def test_a_shorter_catalog_leaves_no_stale_shards(tmp_path):
    args = make_inputs(tmp_path)
    out = tmp_path / "ds"
    assert run_convert(*args, "--out", out) == 0
    short = write_jsonl(tmp_path / "short.jsonl", [json.loads(line) for line in
                                                   (tmp_path / "catalog.jsonl").read_text().splitlines()[:6]])
    assert run_convert(*args[:2], short, *args[3:4], tmp_path / "img", "--shard-size", "4", "--out", out) == 0
    assert sorted(p.name for p in (out / "shards").iterdir()) == ["shard-000000.tar", "shard-000001.tar"]
    assert sorted(p.name for p in (out / ".progress").iterdir()) == ["shard-000000.json", "shard-000001.json"]
    assert read_manifest(out)["counts"]["items"] == 6


def test_two_workers_write_the_same_bytes_as_one(tmp_path):
    args = make_inputs(tmp_path, n=24)
    assert run_convert(*args, "--out", tmp_path / "one", "--workers", "1") == 0
    assert run_convert(*args, "--out", tmp_path / "two", "--workers", "2") == 0
    assert tree_bytes(tmp_path / "one") == tree_bytes(tmp_path / "two")
    assert read_manifest(tmp_path / "two")["counts"]["corrupt_image"] == 3  # items 3, 10, 17


def test_killed_process_resumes_into_identical_output(tmp_path):
    images = tmp_path / "img"
    images.mkdir()
    for i in range(120):
        (images / f"{i}.jpg").write_bytes(image_bytes((400, 300), (i, 2 * i, 90), fmt="JPEG"))
    catalog = write_jsonl(tmp_path / "c.jsonl", [{"item_id": f"K{i}", "title": f"k {i}", "image": f"{i}.jpg"}
                                                 for i in range(120)])
    args = ["jsonl", "--catalog", catalog, "--images", images, "--shard-size", "4", "--max-image-side", "300"]
    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, str(ROOT / "tools" / "convert.py"), *map(str, args), "--out", str(out)],
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while len(list((out / ".progress").glob("*.json"))) < 3 and time.monotonic() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    if (out / "manifest.json").exists():
        pytest.skip("the conversion finished before it could be killed")
    assert run_convert(*args, "--out", out) == 0
    assert run_convert(*args, "--out", tmp_path / "clean") == 0
    assert tree_bytes(out) == tree_bytes(tmp_path / "clean")


def test_adding_download_later_redoes_only_shards_with_urls(tmp_path, monkeypatch, image_server):
    images = tmp_path / "img"
    images.mkdir()
    (images / "a.png").write_bytes(image_bytes())
    catalog = write_jsonl(tmp_path / "c.jsonl", [
        {"item_id": "L1", "title": "local", "image": "a.png"}, {"item_id": "L2", "title": "none"},
        {"item_id": "U1", "title": "url", "image": f"{image_server.url}/ok/u1.jpg"}])
    args = ["jsonl", "--catalog", catalog, "--images", images, "--shard-size", "2", "--out", tmp_path / "ds"]
    assert run_convert(*args) == 0
    assert read_manifest(tmp_path / "ds")["counts"]["image_urls_not_fetched"] == 1
    built = []
    monkeypatch.setattr(writer_module, "build_shard", lambda task: built.append(task.path) or build_shard(task))
    assert run_convert(*args, "--download", "--host-interval", "0") == 0
    assert [p.rsplit("/", 1)[1] for p in built] == ["shard-000001.tar"]
    assert read_manifest(tmp_path / "ds")["counts"]["with_image"] == 2
