import json

from tests.convert.helpers import (image_bytes, read_inter, read_manifest, read_rows, run_convert, write_jsonl,
                                   write_lines)

CORE_USERS, CORE_ITEMS = [f"U{u}" for u in range(6)], [f"P{i}" for i in range(5)]


def review_rows():
    """Users U0-U5 x items P0-P4 (a 5-core), plus U6 with one review and P9 with two (filtered)."""
    rows = [(u, p) for u in CORE_USERS for p in CORE_ITEMS] + [("U6", "P0"), ("U0", "P9"), ("U1", "P9")]
    return [(u, p, 1_400_000_000 + 86400 * k) for k, (u, p) in enumerate(rows)]


def test_amazon2014_python_literal_meta_and_5_core(tmp_path):
    meta_rows = [
        {"asin": "P2", "title": "Bottle &amp; Nipple", "brand": "Acme", "categories": [["Baby", "Feeding"]],
         "imUrl": "http://example.invalid/P2.jpg", "salesRank": {"Baby": 5}},
        {"asin": "P0", "title": "Rattle", "description": "<p>Loud&reg;</p>", "imUrl": "http://example.invalid/P0.jpg"},
        {"asin": "P7", "title": "never reviewed"},
        {"asin": "P3", "categories": [["Baby", "Toys"], ["Toys"]], "related": {"also_bought": ["P0"]}},
        {"asin": "P1", "title": "Bib"},
        {"asin": "P1", "title": "Bib again"},
    ]
    meta_lines = [repr(r) for r in meta_rows]  # 2014 metadata: Python literals, single quotes
    meta_lines.insert(3, "{'asin': 'P5', 'title': ")  # malformed
    meta = write_lines(tmp_path / "meta_Baby.json.gz", meta_lines, gz=True)
    reviews = write_lines(tmp_path / "reviews_Baby_5.json.gz", [json.dumps(
        {"reviewerID": u, "asin": p, "overall": 5.0, "reviewText": "fine", "unixReviewTime": t})
        for u, p, t in review_rows()] + ['{"reviewerID": "U0"}'], gz=True)
    images = tmp_path / "images"
    images.mkdir()
    (images / "P2.jpg").write_bytes(image_bytes(fmt="JPEG"))
    out = tmp_path / "ds"
    assert run_convert("amazon2014", "--meta", meta, "--reviews", reviews, "--images", images, "--out", out) == 0

    m = read_manifest(out)
    c = m["counts"]
    items = read_rows(out / "items.jsonl")
    assert [r["item_id"] for r in items] == ["P2", "P0", "P3", "P1"]  # metadata order, core items only
    assert items[0]["title"] == "Bottle & Nipple" and items[0]["has_image"]  # local file wins over the URL
    assert items[1]["description"] == "Loud®" and items[1]["image"] == "http://example.invalid/P0.jpg"
    assert items[2]["categories"] == "Baby, Toys" and items[3]["title"] == "Bib"
    assert items[2]["category_paths"] == [["Baby", "Toys"], ["Toys"]] and items[3]["category_paths"] == []
    assert c["reviews_outside_k_core"] == 3 and c["meta_items_outside_k_core"] == 1
    # P4 (in the core) and P9 (outside it) have no metadata: their reviews are unknown_item either way
    assert c["rejects"] == {"duplicate_item": 1, "malformed_line": 2, "unknown_item": 8}
    assert c["accounting"]["reviews"] == {"read": 34, "kept": 24, "rejected": {"malformed_line": 1, "unknown_item": 8},
                                          "filtered": {"k_core_user": 1}, "merged": 0}  # U6: one review
    assert c["accounting"]["meta"] == {"read": 7, "kept": 4, "rejected": {"duplicate_item": 1, "malformed_line": 1},
                                       "filtered": {"outside_k_core": 1}, "merged": 0}
    assert c["users"] == 6 and c["interactions"]["total"] == 24
    unknown = [r for r in read_rows(out / "rejects.jsonl") if r["kind"] == "unknown_item"]
    assert {r["id"] for r in unknown} == {"P4", "P9"} and all(r["where"].startswith(str(reviews)) for r in unknown)
    users = [r["user_id"] for r in read_rows(out / "users.jsonl")]
    assert users == CORE_USERS
    assert {(users[u], items[i]["item_id"]) for u, i, _ in read_inter(out / "interactions.inter")} == {
        (u, p) for u in CORE_USERS for p in ("P0", "P1", "P2", "P3")}
    # unixReviewTime and overall are kept (sequential and CTR tasks read them)
    lines = (out / "interactions.inter").read_text().splitlines()
    assert lines[0] == "userID\titemID\trating\ttimestamp\tx_label"
    times = {(u, p): t for u, p, t in review_rows()}
    assert sorted(int(line.split("\t")[3]) for line in lines[1:]) == sorted(
        times[(u, p)] for u in CORE_USERS for p in ("P0", "P1", "P2", "P3"))
    assert {line.split("\t")[2] for line in lines[1:]} == {"5"}


def test_amazon2023_jsonl_with_downloads(tmp_path, image_server):
    def meta(i, **extra):
        return {"main_category": "Baby", "title": f"Item {i}", "features": [f"feature {i}"],
                "description": [f"description {i}"], "store": "Shop", "details": {"Brand": "Acme"},
                "categories": ["Baby", "Feeding"], "parent_asin": f"P{i}", **extra}
    metas = [meta(0, images=[{"thumb": "t", "large": f"{image_server.url}/ok/p0-large.jpg", "variant": "PT01"},
                             {"large": f"{image_server.url}/ok/p0-main.jpg", "hi_res": None, "variant": "MAIN"}]),
             meta(1, images={"large": [f"{image_server.url}/404"], "hi_res": [None], "variant": ["MAIN"]}),
             meta(2, images=[], store="Fallback", details={}),
             meta(3, images=[{"hi_res": f"{image_server.url}/ok/p3.jpg", "variant": "MAIN"}]),
             meta(4)]
    meta_path = write_jsonl(tmp_path / "meta_Baby_Products.jsonl", metas)
    reviews = write_jsonl(tmp_path / "Baby_Products.jsonl.gz", [
        {"rating": 5.0, "text": "ok", "asin": f"C{p}", "parent_asin": p, "user_id": u, "timestamp": t * 1000}
        for u, p, t in review_rows()], gz=True)
    out = tmp_path / "ds"
    assert run_convert("amazon2023", "--meta", meta_path, "--reviews", reviews, "--out", out, "--download",
                       "--host-interval", "0", "--retries", "0", "--split", "temporal") == 0
    items = read_rows(out / "items.jsonl")
    assert [r["item_id"] for r in items] == CORE_ITEMS
    assert items[0]["image"].endswith("/ok/p0-main.jpg") and items[0]["has_image"]
    assert items[0]["description"] == "description 0 feature 0" and items[0]["brand"] == "Acme"
    assert items[2]["brand"] == "Fallback" and items[2]["categories"] == "Baby, Feeding"
    assert items[2]["category_paths"] == [["Baby", "Feeding"]]  # 2023: a flat list is one path
    assert [r["has_image"] for r in items] == [True, False, False, True, False]
    c = read_manifest(out)["counts"]
    assert (c["with_image"], c["unavailable_image"], c["without_image"]) == (2, 1, 2)
    assert c["rejects"] == {"image_unavailable": 1, "unknown_item": 2}  # P9's reviews: no metadata
    assert image_server.hits["/404"] == 1 and image_server.hits["/ok/p0-large.jpg"] == 0
    # Temporal split: each user's reviews were written oldest first, so the last one is test.
    inter = read_inter(out / "interactions.inter")
    assert [s for u, _, s in inter if u == 0] == [0, 0, 0, 1, 2]
