"""The one crash-safety guarantee of ``cliper_dist/files.py``: whole file or the old one, never half."""

from __future__ import annotations

import pytest

from cliper_dist import files


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "manifest.json"
    files.write_json(target, {"version": 1})
    with pytest.raises(RuntimeError):
        with files.atomic_open(target, "w") as f:
            f.write('{"version": 2, "half')
            raise RuntimeError("killed mid-write")
    assert files.read_json(target) == {"version": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.json"]


def test_streamed_rows_appear_only_when_complete(tmp_path):
    target = tmp_path / "items.jsonl"

    def rows():
        yield {"index": 0}
        assert not target.exists()  # nothing under the final name while rows are still coming
        yield {"index": 1}

    files.write_jsonl(target, rows())
    assert list(files.read_jsonl(target)) == [{"index": 0}, {"index": 1}]


def test_leftover_temporaries_are_removed_and_targets_kept(tmp_path):
    files.write_bytes(tmp_path / "part.npz", b"done")
    (tmp_path / ".part.npz.tmp-123-456").write_bytes(b"half")  # what a killed writer leaves
    files.remove_temporaries(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["part.npz"]
    with pytest.raises(ValueError, match="whole files"):
        with files.atomic_open(tmp_path / "x", "a"):
            pass
