"""tools/recommend.py's output line: UTF-8 text as is."""

import json

from tools.recommend import json_line


def test_non_ascii_titles_are_written_as_is():
    row = {"user": "A1", "items": ["B1"], "titles": ["日本のおもちゃ – Baby"], "scores": [1.0]}
    line = json_line(row)
    assert "日本のおもちゃ – Baby" in line and "\\u" not in line and json.loads(line) == row
