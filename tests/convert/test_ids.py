"""IdCodes against a dict that numbers ids in order of first appearance."""

import numpy as np
import pytest

from cliper_dist.convert import ids as ids_module
from cliper_dist.convert.ids import IdCodes


def random_ids(rng: np.random.Generator, n: int, pool: int) -> list[str]:
    # varied widths (widening the arrays mid-stream), non-ASCII, prefixes of one another
    alphabet = np.array(list("ab\u00e9\u4e2dZ0"))
    words = ["".join(rng.choice(alphabet, size=rng.integers(1, 4 + i // 50))) for i in range(pool)]
    return [words[i] for i in rng.integers(pool, size=n)]


@pytest.mark.parametrize("flush", [3, 1 << 16])
def test_codes_match_first_appearance_numbering(monkeypatch, flush):
    monkeypatch.setattr(ids_module, "FLUSH", flush)
    rng = np.random.default_rng(0)
    reference: dict[str, int] = {}
    codes = IdCodes()
    for chunk in range(6):
        batch = random_ids(rng, int(rng.integers(0, 400)), 300)
        if chunk % 2:  # one at a time, as the writer adds catalog items
            got = [codes.add(i) for i in batch]
        else:
            got = codes.code(batch).tolist()
        assert got == [reference.setdefault(i, len(reference)) for i in batch]
        assert len(codes) == len(reference)
    assert list(codes) == list(reference)
    assert [codes[c] for c in range(len(reference))] == list(reference)
    probe = random_ids(rng, 200, 400)
    assert codes.find(probe).tolist() == [reference.get(i, -1) for i in probe]
    assert [codes.get(i) for i in probe] == [reference.get(i, -1) for i in probe]
    assert ("never seen" in codes, probe[0] in codes) == (False, probe[0] in reference)


def test_take_renumbers_and_names_must_be_distinct():
    codes = IdCodes()
    codes.code(["u9", "u1", "long-user-id", "u1"])
    taken = codes.take(np.array([2, 0]))
    assert list(taken) == ["long-user-id", "u9"]
    assert taken.find(["u9", "u1"]).tolist() == [1, -1]
    with pytest.raises(ValueError, match="distinct"):
        IdCodes(np.array([b"a", b"b", b"a"]))


def test_empty():
    codes = IdCodes()
    assert len(codes) == 0 and list(codes) == [] and codes.find(["x"]).tolist() == [-1]
    assert codes.code([]).tolist() == []
