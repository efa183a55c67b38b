"""Image URLs -> files in an on-disk cache: concurrent, with timeouts, retries and a per-host rate limit.

The cache is keyed by the sha256 of the URL and written atomically, so a rerun (or a
resumed conversion) finds every finished download and contacts nobody for it. Failures
are not cached: a rerun tries them again.
"""

from __future__ import annotations

import hashlib
import http.client
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from cliper_dist import files

USER_AGENT = "cliper-dist-convert/0.1"


@dataclass(frozen=True)
class DownloadOptions:
    cache_dir: Path
    threads: int = 8
    timeout: float = 10.0        # seconds per attempt (connect and each read)
    retries: int = 2             # further attempts after a transient failure
    backoff: float = 0.5         # seconds before retry r: backoff * 2**r
    host_interval: float = 0.1   # minimum seconds between two request starts to one host
    max_bytes: int = 32 << 20    # larger bodies are refused


@dataclass(frozen=True)
class Fetched:
    """One URL's outcome: the cached file, or why there is none."""

    url: str
    path: Path | None
    error: str | None = None


class _Permanent(Exception):
    """A failure that retrying cannot fix (4xx, oversized body)."""


class _HostLimiter:
    """Spaces request starts to each host by ``interval`` seconds, across threads."""

    def __init__(self, interval: float):
        self.interval = interval
        self._next: dict[str, float] = {}
        self._lock = threading.Lock()

    def wait(self, host: str) -> None:
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next.get(host, now))
            self._next[host] = start + self.interval
        if start > now:
            time.sleep(start - now)


class Downloader:
    def __init__(self, options: DownloadOptions):
        self.options = options
        self.cache_dir = Path(options.cache_dir)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        self._limiter = _HostLimiter(options.host_interval)
        self._opener = urllib.request.build_opener()
        self._opener.addheaders = [("User-Agent", USER_AGENT)]

    def cache_path(self, url: str) -> Path:
        digest = hashlib.sha256(url.encode()).hexdigest()
        return self.cache_dir / digest[:2] / digest

    def fetch_all(self, urls: list[str]) -> list[Fetched]:
        """Fetch concurrently; results in the order of ``urls``."""
        if not urls:
            return []
        with ThreadPoolExecutor(max_workers=min(self.options.threads, len(urls))) as pool:
            return list(pool.map(self.fetch, urls))

    def fetch(self, url: str) -> Fetched:
        path = self.cache_path(url)
        if path.is_file():
            return Fetched(url, path)
        o = self.options
        error = "no attempt"
        for attempt in range(o.retries + 1):
            if attempt:
                time.sleep(o.backoff * 2 ** (attempt - 1))
            try:
                data = self._get(url)
            except _Permanent as e:
                return Fetched(url, None, str(e))
            except (urllib.error.URLError, http.client.HTTPException, OSError) as e:
                error = _describe(e, o.timeout)
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            files.write_bytes(path, data)
            return Fetched(url, path)
        return Fetched(url, None, f"{error} (after {o.retries + 1} attempts)")

    def _get(self, url: str) -> bytes:
        self._limiter.wait(urlsplit(url).netloc)
        try:
            with self._opener.open(url, timeout=self.options.timeout) as resp:
                limit = self.options.max_bytes
                length = resp.headers.get("Content-Length")
                if length is not None:
                    if int(length) > limit:
                        raise _Permanent(f"body of {length} bytes exceeds the {limit}-byte limit")
                    return resp.read()  # raises IncompleteRead when the body is cut short
                data = resp.read(limit + 1)
                if len(data) > limit:
                    raise _Permanent(f"body exceeds the {limit}-byte limit")
                return data
        except urllib.error.HTTPError as e:
            if e.code == 429 or e.code >= 500:
                raise
            raise _Permanent(f"HTTP {e.code}") from None


def _describe(e: BaseException, timeout: float) -> str:
    if isinstance(e, urllib.error.HTTPError):
        return f"HTTP {e.code}"
    reason = e.reason if isinstance(e, urllib.error.URLError) else e
    if isinstance(reason, TimeoutError):
        return f"timed out after {timeout:g}s"
    if isinstance(reason, http.client.IncompleteRead):
        return f"truncated body ({len(reason.partial)} bytes, {reason.expected} missing)"
    return f"{reason.__class__.__name__}: {reason}"


def is_url(ref: str) -> bool:
    return ref.startswith(("http://", "https://"))
