
from cliper_dist.convert.download import Downloader, DownloadOptions


def downloader(tmp_path, **kw) -> Downloader:
    options = {"timeout": 0.3, "retries": 1, "backoff": 0.01, "host_interval": 0.0, "threads": 4, **kw}
    return Downloader(DownloadOptions(tmp_path / "cache", **options))


def test_ok_404_slow_truncated_and_order(tmp_path, image_server):
    d = downloader(tmp_path)
    urls = [f"{image_server.url}/{p}" for p in ("ok/a.jpg", "404", "slow", "truncated", "ok/b.jpg")]
    got = d.fetch_all(urls)
    assert [f.url for f in got] == urls
    assert got[0].path is not None and got[0].path.read_bytes()[:4] == b"\x89PNG" and got[4].path is not None
    assert got[1].path is None and got[1].error == "HTTP 404"
    assert got[2].path is None and got[2].error.startswith("timed out after 0.3s")
    assert got[3].path is None and got[3].error.startswith("truncated body")
    assert image_server.hits["/404"] == 1  # permanent: no retry
    assert image_server.hits["/slow"] == 2 and image_server.hits["/truncated"] == 2  # transient: retried
    assert not any(p.name.startswith(".") for p in (tmp_path / "cache").rglob("*"))  # no stray temporaries


def test_retry_recovers_and_cache_is_reused(tmp_path, image_server):
    url = f"{image_server.url}/flaky/c.jpg"
    first = downloader(tmp_path).fetch(url)
    assert first.error is None and image_server.hits["/flaky/c.jpg"] == 2
    again = downloader(tmp_path).fetch(url)  # a new downloader, e.g. a resumed run
    assert again.path == first.path and image_server.hits["/flaky/c.jpg"] == 2


def test_per_host_rate_limit(tmp_path, image_server):
    d = downloader(tmp_path, host_interval=0.1, threads=8)
    d.fetch_all([f"{image_server.url}/ok/{i}.jpg" for i in range(6)])
    starts = sorted(t for p, t in image_server.times if p.startswith("/ok/"))
    gaps = [b - a for a, b in zip(starts, starts[1:])]
    assert len(starts) == 6 and min(gaps) >= 0.09


def test_oversized_body_is_refused(tmp_path, image_server):
    got = downloader(tmp_path, max_bytes=100).fetch(f"{image_server.url}/ok/big.jpg")
    assert got.path is None and "exceeds" in got.error


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound, then released)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_network_failures_are_not_retried_and_end_the_fetching(tmp_path):
    import pytest

    from cliper_dist.errors import UserError

    port = closed_port()
    urls = [f"http://127.0.0.1:{port}/{i}.jpg" for i in range(40)]
    got = downloader(tmp_path, retries=2, backoff=1.0, fail_fast=4, stop_offline=False, threads=1).fetch_all(urls)
    assert all("ConnectionRefusedError" in f.error and "attempts" not in f.error for f in got[:4])  # one attempt each
    assert all(f.error.startswith("not attempted: the network looked unreachable (connection refused") for f in got[4:])
    with pytest.raises(UserError, match=r"the first 4 fetches all failed on the network \(host name does not resolve"):
        downloader(tmp_path, fail_fast=4).fetch_all([f"http://img.invalid/{i}.jpg" for i in range(40)])


def test_a_success_keeps_fetching_after_network_failures(tmp_path, image_server):
    port = closed_port()
    urls = [f"{image_server.url}/ok/a.jpg"] + [f"http://127.0.0.1:{port}/{i}.jpg" for i in range(8)]
    got = downloader(tmp_path, fail_fast=4, threads=1).fetch_all(urls)
    assert got[0].path is not None and all("ConnectionRefusedError" in f.error for f in got[1:])


def test_failed_downloads_stop_the_conversion_with_their_causes_tallied(tmp_path, image_server, capsys):
    from tests.convert.helpers import run_convert, write_jsonl

    images = ["404", "404", "flaky/a.jpg", "flaky/b.jpg", "flaky/c.jpg"]  # flaky: HTTP 500 once, no retry here
    catalog = write_jsonl(tmp_path / "catalog.jsonl", [{"item_id": f"I{i}", "title": f"item {i}",
                                                         "image": f"{image_server.url}/{path}"}
                                                        for i, path in enumerate(images)])
    assert run_convert("jsonl", "--catalog", catalog, "--out", tmp_path / "ds", "--download", "--retries", "0",
                       "--host-interval", "0") == 2
    err = capsys.readouterr().err
    # per item, grouped by the failure without its retry count ("HTTP 500 (after 1 attempts)" -> "HTTP 500")
    assert "5 of 5 item images could not be fetched (3: HTTP 500, 2: HTTP 404)" in err
