"""Every input row accounted for: read = kept + rejected by kind + filtered by reason + merged."""

import io
import gzip
import json
import time

import pytest

from cliper_dist.convert.accounting import AccountingError, FileTally, Ledger
from cliper_dist.errors import UserError
from tests.convert.helpers import (make_amazon2014_sample, make_catalog, read_inter, read_manifest, read_rows,
                                   run_convert, write_lines)


def readable_lines(path) -> int:
    """Complete lines in the part of a cut gzip stream that still decompresses."""
    text = b""
    with gzip.open(path) as f:
        try:
            for line in f:
                text += line
        except EOFError:
            pass
    return sum(1 for line in text.splitlines() if line.strip())


def test_amazon2014_with_every_defect_reconciles(tmp_path, capsys):
    s = make_amazon2014_sample(tmp_path)
    out = tmp_path / "ds"
    assert run_convert("amazon2014", "--meta", s["meta"], "--reviews", s["reviews"], "--out", out, "--download",
                       "--allow-missing-images", "--host-interval", "0") == 0
    printed = capsys.readouterr()
    c = read_manifest(out)["counts"]
    rev, meta = c["accounting"]["reviews"], c["accounting"]["meta"]
    read = readable_lines(s["reviews"])
    tail_read = read - len(s["review_lines"])
    assert 0 < tail_read < len(s["tail"])  # the cut lost part of the tail
    assert rev == {"read": read, "kept": 3000, "merged": 3,
                   "rejected": {"malformed_line": 1, "unknown_item": 7},
                   "filtered": {"k_core_item": 3, "k_core_user": 2 + tail_read}}
    assert meta == {"read": 304, "kept": 300, "rejected": {"duplicate_item": 1, "malformed_line": 1},
                    "filtered": {"outside_k_core": 2}, "merged": 0}
    assert c["duplicate_interactions"] == 3 and c["interactions"]["total"] == 3000
    assert len(read_inter(out / "interactions.inter")) == 3000
    assert c["reviews_outside_k_core"] == 2 + tail_read + 3 + 1  # the filter's work, and BNOMETA002's review
    assert c["meta_items_outside_k_core"] == 2
    # every reject in the file is counted, and the row-removing ones are exactly the ledger's
    rejects = read_rows(out / "rejects.jsonl")
    kinds = {k: sum(r["kind"] == k for r in rejects) for k in {r["kind"] for r in rejects}}
    assert kinds == c["rejects"] == {"malformed_line": 2, "unknown_item": 7, "duplicate_item": 1, "empty_text": 1,
                                     "truncated_file": 1, "image_unavailable": 300}
    assert {r["id"] for r in rejects if r["kind"] == "unknown_item"} == {"BNOMETA001", "BNOMETA002"}
    truncated = next(r for r in rejects if r["kind"] == "truncated_file")
    assert truncated["where"] == f"{s['reviews']}:{read + 1}"
    # each kind is named in the summary
    for word in ("merged duplicates", "unknown_item 7", "k_core_user", "k_core_item 3", "outside_k_core 2",
                 "truncated_file", "image_unavailable", "3 exact duplicate interactions merged"):
        assert word in printed.out, word
    assert "network" in printed.err  # the fetches failed on name resolution: reported once, not retried


def test_keep_duplicates_keeps_and_counts(tmp_path):
    inter = write_lines(tmp_path / "inter.csv", ["user_id,item_id,timestamp", "u1,A,1", "u1,A,1", "u1,A,2", "u2,A,1"])
    catalog = write_lines(tmp_path / "items.jsonl", [json.dumps({"item_id": "A", "title": "a"})])
    for flag, rows, merged in ((), 3, 1), (("--keep-duplicates",), 4, 0):
        out = tmp_path / f"ds{len(flag)}"
        assert run_convert("jsonl", "--catalog", catalog, "--interactions", inter, "--out", out, *flag) == 0
        c = read_manifest(out)["counts"]
        assert c["duplicate_interactions"] == 1 and c["interactions"]["total"] == rows
        assert c["accounting"]["interactions"] == {"read": 4, "kept": rows, "rejected": {}, "filtered": {},
                                                   "merged": merged}


def test_jsonl_catalog_reconciles(tmp_path):
    paths = make_catalog(tmp_path)
    out = tmp_path / "ds"
    assert run_convert("jsonl", *[a for k, v in paths.items() for a in (f"--{k}", v)], "--out", out) == 0
    acc = read_manifest(out)["counts"]["accounting"]
    assert acc["catalog"] == {"read": 10, "kept": 7, "merged": 0, "filtered": {},
                              "rejected": {"duplicate_item": 1, "malformed_line": 1, "missing_item_id": 1}}
    assert acc["interactions"] == {"read": 25, "kept": 24, "merged": 0, "filtered": {},
                                   "rejected": {"unknown_item": 1}}


def test_a_mismatch_is_a_bug():
    ledger = Ledger()
    ledger.tally("f").lines = 3
    ledger.tally("f").kept = 2
    with pytest.raises(AccountingError, match="1 of 3 rows unaccounted"):
        ledger.check()


def test_no_items_names_the_truncated_file(tmp_path):
    reviews = tmp_path / "reviews.json.gz"
    reviews.write_bytes(gzip.compress(b'{"reviewerID": "u", "asin": "a"}\n' * 500, mtime=0)[:20])
    meta = write_lines(tmp_path / "meta.json", [repr({"asin": "a"})])
    with pytest.raises(UserError, match=f"the first: {reviews}:1: truncated_file"):
        from cliper_dist.convert.cli import convert, parse_args
        convert(parse_args(["amazon2014", "--meta", str(meta), "--reviews", str(reviews), "--out",
                            str(tmp_path / "ds")]))


def test_download_without_network_stops_fast_with_one_line(tmp_path, capsys):
    s = make_amazon2014_sample(tmp_path)
    start = time.perf_counter()
    assert run_convert("amazon2014", "--meta", s["meta"], "--reviews", s["reviews"], "--out", tmp_path / "ds",
                       "--download") == 2
    seconds = time.perf_counter() - start
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "the first 16 fetches all failed on the network (host name does not resolve" in err[0]
    assert "--allow-missing-images" in err[0] and "--images DIR" in err[0]
    assert seconds < 10, seconds
