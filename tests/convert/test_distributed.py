"""launch/convert.py on 2 real ranks (torchrun, gloo): the bytes of one process, a killed rank
that resumes without redoing finished shards, and a strict error from rank 1 as one line."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from cliper_dist.convert.job import ConvertConfig
from cliper_dist.errors import UserError
from tests.conftest import REPO, kill_rank_when, torchrun_cmd
from tests.convert.helpers import image_bytes, make_catalog, run_convert, tree_bytes, write_jsonl

LAUNCHER = "launch/convert.py"


def test_two_ranks_write_the_bytes_of_one_process(tmp_path, ranks):
    # shard_size 2 over items A..G: rank 0 builds [A,B] and [E,F], rank 1 [C,D] (corrupt and
    # unavailable image) and [G]; the reader's rejects and an unknown-item interaction as well.
    inputs = [arg for key, path in make_catalog(tmp_path).items() for arg in (f"--{key}", path)]
    assert run_convert("jsonl", *inputs, "--shard-size", "2", "--max-image-side", "128",
                       "--out", tmp_path / "one") == 0
    result = ranks.launch(LAUNCHER, ["--format", "jsonl", *inputs, "shard_size=2", "max_image_side=128",
                                     "--out", tmp_path / "two"])
    assert result.returncode == 0, result.stdout[-4000:]
    assert "convert: 7 items (3 with image, 1 corrupt, 1 unavailable, 1 without text)" in result.stdout
    assert "on 2 ranks" in result.stdout
    one, two = tree_bytes(tmp_path / "one"), tree_bytes(tmp_path / "two")
    assert sorted(two) == sorted(one) and "shards/shard-000003.tar" in two and "rejects.jsonl" in two
    for name in one:  # items, users, interactions, rejects, manifest, tars and done records
        assert two[name] == one[name], name


def slow_catalog(tmp_path: Path, n: int = 120) -> list:
    """n items whose large PNGs take ~30 ms each to re-encode: long enough to kill a rank mid-run."""
    images = tmp_path / "img"
    images.mkdir()
    for c in range(4):
        (images / f"{c}.png").write_bytes(image_bytes((1200, 900), (60 * c, 120, 200 - 40 * c)))
    catalog = write_jsonl(tmp_path / "c.jsonl", [{"item_id": f"K{i}", "title": f"k {i}", "image": f"{i % 4}.png"}
                                                 for i in range(n)])
    return ["--catalog", catalog, "--images", images]


def test_a_killed_rank_resumes_without_redoing_finished_shards(tmp_path, ranks):
    inputs = slow_catalog(tmp_path)
    args = ["--format", "jsonl", *inputs, "--out", tmp_path / "ds", "shard_size=4", "max_image_side=128"]
    records = tmp_path / "ds" / ".progress"
    killed = kill_rank_when(torchrun_cmd(2, REPO / LAUNCHER, args), lambda: records.is_dir() and any(
        int(p.stem[-6:]) % 2 for p in records.glob("shard-*.json")), "rank 1 built a shard")
    assert killed.returncode != 0, killed.stdout[-3000:]
    assert not (tmp_path / "ds" / "manifest.json").exists()
    finished = {p.stem: os.stat(tmp_path / "ds" / "shards" / f"{p.stem}.tar") for p in records.glob("shard-*.json")}
    assert 1 <= len(finished) < 30, f"the kill did not land mid-run ({len(finished)} of 30 shards)"

    rerun = ranks.launch(LAUNCHER, args)
    assert rerun.returncode == 0, rerun.stdout[-4000:]
    assert f"; {len(finished)}/30 shards kept from an earlier run" in rerun.stdout, rerun.stdout[-2000:]
    for name, before in finished.items():  # not rewritten: same file, same mtime
        after = os.stat(tmp_path / "ds" / "shards" / f"{name}.tar")
        assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns), name
    assert run_convert("jsonl", *inputs, "--out", tmp_path / "clean", "--shard-size", "4",
                       "--max-image-side", "128") == 0
    assert tree_bytes(tmp_path / "ds") == tree_bytes(tmp_path / "clean")


def test_a_strict_error_on_rank_one_is_one_line_from_rank_zero(tmp_path, ranks, capsys):
    images = tmp_path / "img"
    images.mkdir()
    for i in range(8):
        (images / f"{i}.png").write_bytes(b"junk" if i in (3, 4) else image_bytes((20, 20), (30 * i, 9, 9)))
    catalog = write_jsonl(tmp_path / "c.jsonl", [{"item_id": f"S{i}", "title": f"s {i}", "image": f"{i}.png"}
                                                 for i in range(8)])
    # shard_size 2: item 3 is in shard 1 (rank 1), item 4 in shard 2 (rank 0); shard 1 comes first.
    assert run_convert("jsonl", "--catalog", catalog, "--images", images, "--shard-size", "2", "--strict",
                       "--out", tmp_path / "one") == 2
    expected = capsys.readouterr().err.strip()
    assert expected.startswith(f"cliper-dist: error: {catalog}:4: bad_image: undecodable image")
    start = time.monotonic()
    result = ranks.launch(LAUNCHER, ["--catalog", catalog, "--images", images, "--out", tmp_path / "two",
                                     "shard_size=2", "strict=true"], timeout=120)
    assert time.monotonic() - start < 60, "the ranks were not stopped promptly"
    assert result.returncode != 0, result.stdout[-3000:]
    errors = [ln for ln in result.stdout.splitlines() if ln.startswith("cliper-dist: error:")]
    assert errors == [expected], result.stdout[-3000:]
    assert "cliper_dist/" not in result.stdout and not (tmp_path / "two" / "manifest.json").exists()


def test_the_config_names_missing_and_foreign_inputs():
    with pytest.raises(UserError, match="format mmrec needs 'item_map'"):
        ConvertConfig(format="mmrec", out="o", inter="x.inter").validate()
    with pytest.raises(UserError, match=r"format jsonl does not read 'reviews' \(its inputs: catalog, images, "
                                        r"interactions\)"):
        ConvertConfig(out="o", catalog="c.jsonl", reviews="r.json").validate()
    with pytest.raises(UserError, match="'out' is required"):
        ConvertConfig(catalog="c.jsonl").validate()
    assert ConvertConfig(format="amazon2023", out="o", meta="m", reviews="r").inputs() == {
        "meta": "m", "reviews": "r", "images": None}


def test_an_output_being_created_is_a_dataset_at_every_moment(tmp_path, monkeypatch):
    """Ranks check --out while another rank may be creating it: each directory the writer adds
    must leave --out recognisable as a dataset (the rank that checked a half-made one refused it)."""
    from cliper_dist import dirs
    from cliper_dist.convert.writer import DatasetWriter

    out = tmp_path / "out"
    kinds = []
    mkdir = Path.mkdir

    def watched(self, *args, **kwargs):
        mkdir(self, *args, **kwargs)
        if self.parent == out:
            kinds.append((self.name, dirs.kind(out)))

    monkeypatch.setattr(Path, "mkdir", watched)
    with DatasetWriter(out, rank=1, world_size=2):
        pass
    assert kinds and all(kind == dirs.DATASET for _, kind in kinds), kinds
