import gzip

import numpy as np
import pytest

from cliper_dist.convert.interactions import ITEM_BELOW_K, KEPT, USER_BELOW_K, InteractionBuilder, k_core, read_table
from cliper_dist.convert.rejects import Rejects
from cliper_dist.convert.sources import iter_lines, parse_record
from cliper_dist.data.text import category_paths, clean_categories, clean_text, text_fields
from cliper_dist.errors import UserError
from tests.convert.helpers import write_lines


@pytest.fixture
def rejects(tmp_path):
    r = Rejects(tmp_path, strict=False)
    yield r
    r.close()


def test_text_is_cleaned():
    assert clean_text("Baby Tracker&reg; - Log &amp;amp; more") == "Baby Tracker® - Log & more"
    assert clean_text("<b>Soft</b>\n  blanket&nbsp;!") == "Soft blanket !"
    assert clean_text(["a ", None, "<i>b</i>"]) == "a b"
    assert clean_categories([["Baby", "Feeding"], ["Baby", "Bibs"]]) == "Baby, Feeding, Bibs"
    assert clean_categories("Toys &amp; Games") == "Toys & Games"
    assert category_paths([["Baby", "Feeding"], ["Baby", "Feeding"], ["Baby", " "]]) == [["Baby", "Feeding"], ["Baby"]]
    assert category_paths(["Baby", "Feeding &amp; Bibs"]) == [["Baby", "Feeding & Bibs"]]
    assert category_paths("Baby, Feeding") == [["Baby", "Feeding"]] and category_paths(None) == []
    assert text_fields({"title": "T", "extra": 1}) == {"title": "T", "brand": "", "categories": "", "description": ""}


def test_parse_record_json_python_literal_and_bad():
    assert parse_record('{"asin": "A1", "ok": true}') == {"asin": "A1", "ok": True}
    assert parse_record("{'asin': 'A1', 'categories': [['Baby']], 'price': 3.5}")["categories"] == [["Baby"]]
    for bad in ("{'asin': ", "[1, 2]", "__import__('os')"):
        with pytest.raises(ValueError):
            parse_record(bad)


def test_iter_lines_rejects_bad_bytes_and_truncated_gzip(tmp_path, rejects):
    path = tmp_path / "x.txt"
    path.write_bytes(b"one\n\xff\xfebad\n\nthree\n")
    assert list(iter_lines(path, rejects)) == [(1, "one\n"), (4, "three\n")]
    gz = tmp_path / "x.gz"
    gz.write_bytes(gzip.compress(b"".join(b"line %d\n" % i for i in range(5000)))[:-300])
    lines = list(iter_lines(gz, rejects))
    assert 0 < len(lines) < 5000
    assert rejects.counts == {"malformed_line": 1, "truncated_file": 1}
    with pytest.raises(UserError, match=r"x.txt:2: malformed_line"):
        list(iter_lines(path, None))


def test_read_table_csv_tsv_inter_and_bad_rows(tmp_path, rejects):
    csv_path = write_lines(tmp_path / "i.csv", ["user_id,item_id,timestamp,rating", "u1,A,10,5", "u2,B,x,4",
                                                "u1,B,12", "u2,A,11,3"])
    t = read_table(csv_path, rejects)
    assert list(t.user_ids) == ["u1", "u2"] and list(t.item_ids) == ["A"]
    assert [(t.user_ids[u], t.item_ids[i]) for u, i in zip(t.user, t.item)] == [("u1", "A"), ("u2", "A")]
    assert t.line.tolist() == [2, 5] and t.timestamp.tolist() == [10.0, 11.0] and t.split is None
    assert rejects.counts["malformed_line"] == 2  # bad timestamp, missing field
    inter = write_lines(tmp_path / "x.inter", ["userID:token\titemID:token\tx_label", "0\t3\t0", "0\t4\t7", "1\t3\t2"])
    t = read_table(inter, rejects)
    assert t.split.tolist() == [0, 2] and t.timestamp is None
    with pytest.raises(UserError, match="header must name user_id and item_id"):
        read_table(write_lines(tmp_path / "bad.csv", ["who,what", "a,b"]), rejects)


def test_k_core_is_iterative():
    # Users 0-5 review items 0-4. User 6 reviews items 0-3 and item 5, item 5's only review:
    # dropping item 5 leaves user 6 with 4 reviews, so user 6 goes in the second round.
    user = np.array([u for u in range(6) for _ in range(5)] + [6] * 5)
    item = np.array([i for _ in range(6) for i in range(5)] + [0, 1, 2, 3, 5])
    keep, why = k_core(user, item, 5)
    assert (keep == (user < 6)).all()
    # item 5 left in round 1 for its own count; user 6's other rows in round 2 for the user's
    assert why.tolist() == [KEPT] * 30 + [USER_BELOW_K] * 4 + [ITEM_BELOW_K]
    assert k_core(user, item, 0)[0].all()


def test_read_table_codes_ids_the_same_across_chunk_boundaries(tmp_path, rejects, monkeypatch):
    """Ids are coded a chunk of rows at a time: a chunk of 3 rows must give the codes of one
    chunk, first appearance order included, with ids that widen the arrays mid-file."""
    rng = np.random.default_rng(0)
    users = [f"user{'x' * int(rng.integers(0, 9))}{rng.integers(20)}" for _ in range(40)]
    rows = [f"{u},item\u00e9{rng.integers(15)},{t}" for t, u in enumerate(users)]
    path = write_lines(tmp_path / "i.csv", ["user_id,item_id,timestamp"] + rows)
    whole = read_table(path, rejects)
    monkeypatch.setattr(InteractionBuilder, "CHUNK", 3)
    chunked = read_table(path, rejects)
    assert list(chunked.user_ids) == list(whole.user_ids) == list(dict.fromkeys(users))
    assert list(chunked.item_ids) == list(whole.item_ids)
    assert np.array_equal(chunked.user, whole.user) and np.array_equal(chunked.item, whole.item)
    assert [chunked.user_ids[c] for c in chunked.user] == users
    assert chunked.timestamp.tolist() == list(range(40)) and chunked.line.tolist() == list(range(2, 42))
