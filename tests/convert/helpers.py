"""Input builders shared by the converter tests: images, catalogs, a local HTTP server.

Every test writes its own small inputs under tmp_path; nothing outside it is read, and the
only network peer is the server below on 127.0.0.1.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from PIL import Image

from cliper_dist.convert.cli import main as convert_main
from cliper_dist import errors


def image_bytes(size: tuple[int, int] = (40, 30), color: tuple[int, int, int] = (200, 30, 30), fmt: str = "PNG") -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, format=fmt)
    return out.getvalue()


def write_lines(path: Path, lines: list[str], gz: bool = False) -> Path:
    data = "".join(line + "\n" for line in lines).encode()
    path.write_bytes(gzip.compress(data, mtime=0) if gz else data)
    return path


def write_jsonl(path: Path, rows: list[dict], gz: bool = False) -> Path:
    return write_lines(path, [json.dumps(r) for r in rows], gz)


def make_catalog(tmp_path: Path) -> dict[str, Path]:
    """Six good items and one of each bad input: every kind must be counted and listed."""
    images = tmp_path / "images"
    images.mkdir()
    (images / "a.png").write_bytes(image_bytes((900, 300)))          # wider than max side
    (images / "b.jpg").write_bytes(image_bytes((50, 50), fmt="JPEG"))
    (images / "broken.jpg").write_bytes(image_bytes((50, 50), fmt="JPEG")[:200])  # truncated file
    abs_image = tmp_path / "elsewhere.png"
    abs_image.write_bytes(image_bytes((20, 20)))
    rows = [
        json.dumps({"item_id": "A", "title": "Baby Tracker&reg; log", "brand": "Acme",
                    "categories": [["Baby", "Nursery"], ["Baby", "Books"]], "description": ["Line one.", "Line two."],
                    "image": "a.png"}),
        json.dumps({"item_id": "B", "title": "Bib", "categories": "Feeding", "image": "b.jpg"}),
        "{not json",                                                          # malformed line
        json.dumps({"item_id": "A", "title": "duplicate of A"}),              # duplicate id
        json.dumps({"item_id": "C", "title": "Cup", "image": "broken.jpg"}),  # undecodable image
        json.dumps({"item_id": "D", "title": "Dish", "image": "missing.png"}),  # file not there
        json.dumps({"item_id": "E", "image": str(abs_image)}),               # empty text, absolute path
        json.dumps({"title": "no id"}),                                        # missing id
        json.dumps({"item_id": "F", "title": "Fork", "image": "https://example.invalid/f.jpg"}),  # URL, no fetch
        json.dumps({"item_id": "G", "title": "Gown"}),                        # no image at all
    ]
    catalog = write_lines(tmp_path / "catalog.jsonl", rows)
    inter = write_lines(tmp_path / "inter.csv", ["user_id,item_id,timestamp"] + [
        f"u{u},{i},{t}" for u in range(4) for t, i in enumerate("ABCDEG")] + ["u9,ZZZ,5"])
    return {"catalog": catalog, "images": images, "interactions": inter}


def run_convert(*argv: str) -> int:
    return errors.run_tool(convert_main, [str(a) for a in argv])


def read_manifest(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text())


def read_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def read_inter(path: Path) -> list[tuple[int, int, int]]:
    """(userID, itemID, x_label) rows; the optional rating and timestamp columns are skipped."""
    lines = path.read_text().splitlines()
    header = lines[0].split("\t")
    assert header[:2] == ["userID", "itemID"] and header[-1] == "x_label"
    assert set(header[2:-1]) <= {"rating", "timestamp"}, header
    return [(int(v[0]), int(v[1]), int(v[-1])) for v in (line.split("\t") for line in lines[1:])]


def tree_bytes(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` (the download cache excluded) by relative path."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and ".cache" not in p.parts}


class _QuietServer(ThreadingHTTPServer):
    """Joins its handler threads on close and keeps a client's hang-up (a /slow request the
    downloader gave up on) out of stderr: socketserver prints it, from a thread that would
    otherwise outlive the test and land in a later test's captured output."""

    daemon_threads = False
    block_on_close = True

    def handle_error(self, request, client_address) -> None:
        pass


class ImageServer:
    """Serves /ok/<name> (an image), /404, /slow (sleeps past any test timeout),
    /truncated (Content-Length larger than the body), /flaky/<name> (500 once, then the image)
    and /html (a 200 that is not an image). Counts requests per path and records start times."""

    def __init__(self, slow_seconds: float = 1.5):
        self.hits: Counter = Counter()
        self.times: list[tuple[str, float]] = []
        self.slow_seconds = slow_seconds
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def do_GET(self):  # noqa: N802 - http.server's name
                server.hits[self.path] += 1
                server.times.append((self.path, time.monotonic()))
                if self.path.startswith("/ok/") or (self.path.startswith("/flaky/") and server.hits[self.path] > 1):
                    body = image_bytes((60, 40), (len(self.path) * 7 % 255, 90, 160))
                    return self._send(200, body)
                if self.path.startswith("/flaky/"):
                    return self._send(500, b"try again")
                if self.path == "/slow":
                    time.sleep(server.slow_seconds)
                    return self._send(200, image_bytes())
                if self.path == "/truncated":
                    body = image_bytes((80, 80))
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(body) + 500))
                    self.end_headers()
                    self.wfile.write(body)
                    self.close_connection = True
                    return None
                if self.path == "/html":
                    return self._send(200, b"<html>not an image</html>")
                return self._send(404, b"not found")

            def _send(self, code: int, body: bytes):
                self.send_response(code)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = _QuietServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self) -> "ImageServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


ROOT = Path(__file__).resolve().parents[2]


def run_tool(script: str, *args) -> subprocess.CompletedProcess:
    """Run ``tools/<script>`` as a user would, importing this checkout's package."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, str(ROOT / "tools" / script), *map(str, args)], capture_output=True,
                          text=True, cwd=ROOT, env=env, timeout=120)


def make_amazon2014_sample(tmp_path: Path, items: int = 300, per_user: int = 10) -> dict:
    """An Amazon 2014 Baby-like sample in the real formats: Python-literal ``meta_Baby.json``
    and JSON ``reviews_Baby_5.json.gz``, ``items`` items x 10 reviews each (``items`` users
    with ``per_user`` reviews), image URLs that cannot resolve (.invalid, RFC 6761), and one
    of each defect. Returns the paths and the planted counts.

    Defects: 3 exact repeats of a review line; 7 reviews of 2 items without metadata (6 of
    one, enough for the 5-core, 1 of the other); a user with 2 reviews (cut by the user's
    count); an item with metadata and 3 reviews (cut by the item's count); a malformed review
    line; reviews by one-review users at the end of a gzip stream cut short; metadata with a
    malformed line, a second record of an item, an item nobody reviewed and one without text.
    """
    ts = 1_400_000_000
    ids = [f"B{i:09d}" for i in range(items)]
    review = lambda u, a, t: json.dumps({"reviewerID": u, "asin": a, "overall": 5.0, "unixReviewTime": t,
                                         "reviewText": "ok"})
    lines = [review(f"A{u:05d}", ids[(u + 30 * j) % items], ts + 1000 * u + j)
             for u in range(items) for j in range(per_user)]
    lines[5:5] = lines[0:3]  # exact repeats
    lines += [review(f"A{u:05d}", "BNOMETA001", ts + u) for u in range(6)] + [review("A00000", "BNOMETA002", ts)]
    lines += [review("AONLYTWO", ids[0], ts), review("AONLYTWO", ids[1], ts + 1)]
    lines += [review(f"A{u:05d}", "BRARE00001", ts + 7 + u) for u in range(3)]
    lines.insert(100, "{not a review")
    tail = [review(f"ATAIL{n:04d}", ids[0], ts + n) for n in range(400)]  # lost, in part, to the cut
    data = gzip.compress("".join(line + "\n" for line in lines + tail).encode(), mtime=0)
    reviews = tmp_path / "reviews_Baby_5.json.gz"
    reviews.write_bytes(data[:-2000])
    meta = [{"asin": a, "title": f"Baby product {i} \u65e5\u672c", "brand": "Acme", "categories": [["Baby", "Toys"]],
             "imUrl": f"http://images.invalid/I/{a}.jpg", "description": f"Item {i}." * (i % 3)}
            for i, a in enumerate(ids)]
    meta[7] = {"asin": ids[7], "imUrl": f"http://images.invalid/I/{ids[7]}.jpg"}  # no text
    meta += [{"asin": "BRARE00001", "title": "rare"}, {"asin": "BNOREVIEWS", "title": "nobody"},
             {"asin": ids[3], "title": "second record"}]
    meta_lines = [repr(m) for m in meta]
    meta_lines.insert(50, "{'asin': 'BBROKEN', 'title': ")
    meta_path = write_lines(tmp_path / "meta_Baby.json", meta_lines)
    return {"meta": meta_path, "reviews": reviews, "review_lines": lines, "tail": tail}
