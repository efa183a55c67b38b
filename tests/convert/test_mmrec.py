import json
import re
from pathlib import Path

import numpy as np
import pytest

from cliper_dist.convert.mmrec import ITEM_NAMES, read_id_map
from cliper_dist.errors import UserError

from tests.convert.helpers import image_bytes, read_inter, read_manifest, read_rows, run_convert, run_tool, write_lines

ASINS = ["B000A", "B000B", "B000C", "B000D", "B000E", "B000F"]


def make_mmrec(tmp_path: Path, with_x_label: bool = True) -> dict[str, Path]:
    """A small MMRec folder shaped like data/amazon/baby (header userID itemID x_label)."""
    rng = np.random.default_rng(3)
    rows = [(u, int(i), int(rng.integers(3))) for u in range(8) for i in rng.choice(6, size=5, replace=False)]
    rows = [rows[k] for k in rng.permutation(len(rows))]  # MMRec files need not be sorted
    header = "userID\titemID\tx_label" if with_x_label else "userID\titemID"
    inter = write_lines(tmp_path / "toy.inter", [header] + [
        "\t".join(map(str, r if with_x_label else r[:2])) for r in rows] + ["3\t17\t0" if with_x_label else "3\t17"])
    item_map = write_lines(tmp_path / "i_id_mapping.csv", ["asin\titemID"] + [
        f"{a}\t{i}" for i, a in reversed(list(enumerate(ASINS)))])  # any row order
    user_map = write_lines(tmp_path / "u_id_mapping.csv", ["user_id\tuserID"] + [f"R{u:03d}\t{u}" for u in range(8)])
    meta = write_lines(tmp_path / "partial_item_text.jsonl", [
        json.dumps({"itemID": 0, "asin": "B000A", "title": "Baby Tracker&reg; - Journal"}),
        json.dumps({"itemID": 2, "asin": "B000C", "title": "Cup", "description": "Spill-proof &amp; light"}),
        json.dumps({"asin": "B999Z", "title": "not in the map"}),
        repr({"asin": "B000D", "title": "Dish", "categories": [["Baby", "Feeding"]],
              "imUrl": "http://example.invalid/D.jpg"}),  # a 2014 meta line works too
    ])
    urls = write_lines(tmp_path / "toy_url.csv", ["itemID,asin,imUrl"] + [
        f"{i},{a},http://example.invalid/{a}.jpg" for i, a in enumerate(ASINS) if i not in (3, 5)])
    images = tmp_path / "images"
    images.mkdir()
    (images / "B000B.jpg").write_bytes(image_bytes(fmt="JPEG"))
    (images / "4.png").write_bytes(image_bytes())
    return {"inter": inter, "item_map": item_map, "user_map": user_map, "meta": meta, "urls": urls,
            "images": images, "rows": rows}


def test_mmrec_keeps_ids_rows_and_splits(tmp_path):
    p = make_mmrec(tmp_path)
    out = tmp_path / "ds"
    assert run_convert("mmrec", "--inter", p["inter"], "--item-map", p["item_map"], "--user-map", p["user_map"],
                       "--meta", p["meta"], "--urls", p["urls"], "--images", p["images"], "--out", out,
                       "--shard-size", "4") == 0
    assert read_inter(out / "interactions.inter") == p["rows"]  # row for row, x_label as given
    items = read_rows(out / "items.jsonl")
    assert [r["item_id"] for r in items] == ASINS  # index = MMRec itemID
    assert items[0]["title"] == "Baby Tracker® - Journal" and items[2]["description"] == "Spill-proof & light"
    assert items[3]["categories"] == "Baby, Feeding" and items[3]["image"] == "http://example.invalid/D.jpg"
    assert [r["has_image"] for r in items] == [False, True, False, False, True, False]
    assert [r["user_id"] for r in read_rows(out / "users.jsonl")] == [f"R{u:03d}" for u in range(8)]
    m = read_manifest(out)
    c = m["counts"]
    assert m["split"] == "source" and c["users"] == 8 and c["items"] == 6
    assert c["interactions"]["total"] == 40
    assert c["without_text"] == 3 and c["image_urls_not_fetched"] == 3  # items B, E, F: counted, not rejected
    assert c["meta_records_outside_item_map"] == 1
    assert c["rejects"] == {"unknown_item": 1}  # itemID 17 is not in the map
    check = run_tool("check_mmrec.py", out, "--inter", p["inter"], "--item-map", p["item_map"],
                     "--user-map", p["user_map"])
    assert check.returncode == 1
    report = json.loads(check.stdout)
    assert not report["rows_identical"]  # the row naming itemID 17 was rejected, and the check sees it
    assert report["items_identical"] and report["users_identical"]


def test_mmrec_without_x_label_is_split_and_check_passes(tmp_path):
    p = make_mmrec(tmp_path, with_x_label=False)
    inter = write_lines(tmp_path / "clean.inter", p["inter"].read_text().splitlines()[:-1])  # drop itemID 17
    out = tmp_path / "ds"
    assert run_convert("mmrec", "--inter", inter, "--item-map", p["item_map"], "--out", out) == 0
    got = read_inter(out / "interactions.inter")
    assert [(u, i) for u, i, _ in got] == [(u, i) for u, i, _ in p["rows"]]
    assert read_manifest(out)["split"] == "random"
    check = run_tool("check_mmrec.py", out, "--inter", inter, "--item-map", p["item_map"])
    assert check.returncode == 0, check.stdout + check.stderr  # ids row for row; the split is new
    for u in range(8):  # 5 events per user: 3/1/1
        assert sorted(s for uu, _, s in got if uu == u) == [0, 0, 0, 1, 2]
    assert [r["user_id"] for r in read_rows(out / "users.jsonl")] == [str(u) for u in range(8)]


def test_mmrec_item_map_defects_are_errors(tmp_path, capsys):
    p = make_mmrec(tmp_path)
    bad_map = write_lines(tmp_path / "bad_map.csv", ["asin\titemID", "B000A\t0", "B000B\t2"])
    assert run_convert("mmrec", "--inter", p["inter"], "--item-map", bad_map, "--out", tmp_path / "o") == 2
    assert f"{bad_map}:3: itemID '2' is not in 0..1" in capsys.readouterr().err


@pytest.mark.parametrize("rows, message", [
    (["B000A\t0", "B000B\tx"], ":3: itemID 'x' is not a non-negative integer"),
    (["B000A\t1", "B000B\t0", "B000C\t1"], ":4: itemID 1 appears twice (first at line 2)"),
    (["B000A\t0", "B000A\t1"], ": repeated asin values"),
])
def test_mmrec_item_map_numbering_errors(tmp_path, capsys, rows, message):
    bad_map = write_lines(tmp_path / "bad_map.csv", ["asin\titemID"] + rows)
    with pytest.raises(UserError, match=re.escape(message)):
        read_id_map(bad_map, ITEM_NAMES, "itemID")
