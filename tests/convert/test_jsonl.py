import io
import json
from pathlib import Path

import pytest
from PIL import Image

from cliper_dist.convert.cli import convert, parse_args
from cliper_dist.data.dataset import DatasetDir
from cliper_dist.data.shards import read_shard
from cliper_dist.data.verify import verify
from cliper_dist.errors import UserError
from tests.convert.helpers import (make_catalog, read_inter, read_manifest, read_rows, run_convert, write_jsonl,
                                   write_lines)


def convert_args(paths: dict, out: Path, *extra: str) -> list[str]:
    return ["jsonl", "--catalog", paths["catalog"], "--images", paths["images"], "--interactions",
            paths["interactions"], "--out", out, "--shard-size", "3", "--max-image-side", "128", *extra]


def test_jsonl_counts_and_lists_every_bad_input(tmp_path):
    paths = make_catalog(tmp_path)
    out = tmp_path / "ds"
    assert run_convert(*convert_args(paths, out)) == 0
    m = read_manifest(out)
    c = m["counts"]
    assert c["items"] == 7 and c["users"] == 4
    assert (c["with_image"], c["without_image"], c["corrupt_image"], c["unavailable_image"]) == (3, 2, 1, 1)
    assert c["image_urls_not_fetched"] == 1 and c["without_text"] == 1
    assert c["rejects"] == {"bad_image": 1, "duplicate_item": 1, "empty_text": 1, "image_unavailable": 1,
                            "malformed_line": 1, "missing_item_id": 1, "unknown_item": 1}
    rejects = read_rows(out / "rejects.jsonl")
    assert len(rejects) == sum(c["rejects"].values())
    by_kind = {r["kind"]: r for r in rejects}
    assert by_kind["malformed_line"]["where"] == f"{paths['catalog']}:3"
    assert by_kind["duplicate_item"]["where"] == f"{paths['catalog']}:4" and by_kind["duplicate_item"]["id"] == "A"
    assert by_kind["bad_image"]["id"] == "C" and by_kind["image_unavailable"]["id"] == "D"
    assert by_kind["unknown_item"]["where"] == f"{paths['interactions']}:26"

    items = read_rows(out / "items.jsonl")
    assert [r["item_id"] for r in items] == ["A", "B", "C", "D", "E", "F", "G"]
    assert [r["index"] for r in items] == list(range(7))
    assert items[0]["title"] == "Baby Tracker® log" and items[0]["categories"] == "Baby, Nursery, Books"
    assert items[0]["category_paths"] == [["Baby", "Nursery"], ["Baby", "Books"]]
    assert items[1]["category_paths"] == [["Feeding"]]
    assert items[0]["description"] == "Line one. Line two."
    assert items[5]["image"] == "https://example.invalid/f.jpg" and not items[5]["has_image"]
    assert [r["has_image"] for r in items] == [True, True, False, False, True, False, False]

    # Shards: deterministic boundaries of 3 indices, keys = indices, JPEG with a bounded side.
    assert [(s["first_index"], s["last_index"], s["samples"]) for s in m["shards"]] == [(0, 2, 3), (3, 5, 3), (6, 6, 1)]
    shard = out / "shards" / m["shards"][0]["name"]
    samples = {s["__key__"]: s for s in read_shard(shard)}
    assert list(samples) == ["000000000", "000000001", "000000002"]
    # the WebDataset library reads the same samples
    import webdataset

    assert [{k: v for k, v in s.items() if not k.startswith("__") or k == "__key__"} for s in webdataset.WebDataset(str(shard), shardshuffle=False)] \
        == list(samples.values())
    assert json.loads(samples["000000000"]["json"])["item_id"] == "A" and "jpg" not in samples["000000002"]
    with Image.open(io.BytesIO(samples["000000000"]["jpg"])) as img:
        assert img.format == "JPEG" and max(img.size) == 128
    assert verify(DatasetDir.open(out)) == []

    # Interactions in index space, split per user by MMRec's rule (6 events: 4/1/1).
    inter = read_inter(out / "interactions.inter")
    assert len(inter) == 24 and m["split"] == "random"
    assert c["interactions"] == {"total": 24, "train": 16, "valid": 4, "test": 4}
    assert {(u, i) for u, i, _ in inter} == {(u, i) for u in range(4) for i in (0, 1, 2, 3, 4, 6)}


def test_strict_stops_at_the_first_bad_input_with_file_and_line(tmp_path, capsys):
    paths = make_catalog(tmp_path)
    assert run_convert(*convert_args(paths, tmp_path / "ds", "--strict")) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"cliper-dist: error: {paths['catalog']}:3: malformed_line:")
    assert not (tmp_path / "ds" / "manifest.json").exists()


def test_strict_reports_image_problems_from_the_shard_worker(tmp_path):
    images = tmp_path / "img"
    images.mkdir()
    (images / "x.jpg").write_bytes(b"not an image")
    catalog = write_jsonl(tmp_path / "c.jsonl", [{"item_id": "X", "title": "x", "image": "x.jpg"}])
    args = parse_args(["jsonl", "--catalog", str(catalog), "--images", str(images), "--out", str(tmp_path / "o"),
                       "--strict"])
    with pytest.raises(UserError, match=r"c.jsonl:1: bad_image: undecodable image"):
        convert(args)


def test_temporal_split_and_source_x_label(tmp_path):
    catalog = write_jsonl(tmp_path / "c.jsonl", [{"item_id": f"I{i}", "title": f"t{i}"} for i in range(12)])
    inter = write_lines(tmp_path / "i.tsv", ["user_id\titem_id\ttimestamp"] + [f"u\tI{i}\t{100 - i}" for i in range(12)])
    out = tmp_path / "t"
    assert run_convert("jsonl", "--catalog", catalog, "--interactions", inter, "--out", out, "--split", "temporal") == 0
    split = [s for _, _, s in read_inter(out / "interactions.inter")]
    assert split == [2, 1] + [0] * 10  # 12 events: 10/1/1; the file lists the newest first

    labelled = write_lines(tmp_path / "l.csv", ["user_id,item_id,x_label"] + [f"u,I{i},{i % 3}" for i in range(12)])
    out2 = tmp_path / "l"
    assert run_convert("jsonl", "--catalog", catalog, "--interactions", labelled, "--out", out2) == 0
    assert [s for _, _, s in read_inter(out2 / "interactions.inter")] == [i % 3 for i in range(12)]
    assert read_manifest(out2)["split"] == "source"

    no_time = write_lines(tmp_path / "n.csv", ["user_id,item_id", "u,I1"])
    assert run_convert("jsonl", "--catalog", catalog, "--interactions", no_time, "--out", tmp_path / "n",
                       "--split", "temporal") == 2


def test_catalog_without_items_is_an_error(tmp_path, capsys):
    catalog = write_lines(tmp_path / "c.jsonl", ["garbage"])
    assert run_convert("jsonl", "--catalog", catalog, "--out", tmp_path / "o") == 2
    assert "no items were converted" in capsys.readouterr().err


def test_an_input_error_leaves_an_earlier_dataset_intact(tmp_path):
    paths = make_catalog(tmp_path)
    out = tmp_path / "ds"
    assert run_convert(*convert_args(paths, out)) == 0
    before = (out / "manifest.json").read_bytes()
    assert run_convert("jsonl", "--catalog", tmp_path / "typo.jsonl", "--out", out) == 2
    assert (out / "manifest.json").read_bytes() == before


def test_rating_and_timestamp_are_kept_and_loo_splits_by_time(tmp_path, capsys):
    """A CSV's rating and timestamp columns reach interactions.inter; --split loo holds out each
    user's last interaction (test) and the one before (valid), ties in time kept in file order."""
    catalog = write_jsonl(tmp_path / "c.jsonl", [{"item_id": f"I{i}", "title": f"t{i}"} for i in range(6)])
    rows = [("a", 0, 30, 5), ("a", 1, 10, 4), ("a", 2, 20, 3), ("a", 3, 20, 2), ("b", 4, 5, 1), ("b", 5, 6, 2)]
    inter = write_lines(tmp_path / "i.csv", ["user_id,item_id,timestamp,rating"]
                        + [f"{u},I{i},{t},{r}" for u, i, t, r in rows])
    out = tmp_path / "loo"
    assert run_convert("jsonl", "--catalog", catalog, "--interactions", inter, "--out", out, "--split", "loo") == 0
    lines = (out / "interactions.inter").read_text().splitlines()
    assert lines[0] == "userID\titemID\trating\ttimestamp\tx_label"
    assert [line.split("\t")[2:] for line in lines[1:]] == [
        ["5", "30", "2"], ["4", "10", "0"], ["3", "20", "0"], ["2", "20", "1"],  # a: 20 then 20 (file order), 30
        ["1", "5", "0"], ["2", "6", "0"]]  # b: 2 events, all train
    assert read_manifest(out)["split"] == "loo"

    no_time = write_lines(tmp_path / "n.csv", ["user_id,item_id", "u,I1"])
    capsys.readouterr()
    assert run_convert("jsonl", "--catalog", catalog, "--interactions", no_time, "--out", tmp_path / "n",
                       "--split", "loo") == 2
    assert "--split loo needs timestamps" in capsys.readouterr().err
