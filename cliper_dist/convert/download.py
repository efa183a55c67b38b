"""Image URLs -> files in an on-disk cache: concurrent, with timeouts, retries and a per-host rate limit.

The cache is keyed by the sha256 of the URL and written atomically, so a rerun (or a
resumed conversion) finds every finished download and contacts nobody for it. Failures
are not cached: a rerun tries them again.

Retries: only transient failures are retried (a timeout, a truncated body, a reset
connection, HTTP 5xx and 429), with exponential backoff. A failure of the network itself
(the host name does not resolve, the connection is refused, no route) is not: when the
first ``fail_fast`` fetches all fail that way, and none succeeded, the network is taken to
be unreachable from here. Then the job stops with one line (``stop_offline``), or the
remaining URLs are reported unavailable without an attempt.
"""

from __future__ import annotations

import errno
import hashlib
import http.client
import socket
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from cliper_dist import files
from cliper_dist.errors import UserError

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
    fail_fast: int = 16          # the first this many fetches all failing on the network: it is unreachable (0: never)
    stop_offline: bool = True    # unreachable network: stop with an error (False: skip the remaining URLs)


@dataclass(frozen=True)
class Fetched:
    """One URL's outcome: the cached file, or why there is none."""

    url: str
    path: Path | None
    error: str | None = None
    cause: str | None = None  # the error without its retry count: what a failure tally groups by


class _Permanent(Exception):
    """A failure that retrying cannot fix (4xx, oversized body)."""


class _Offline:
    """Decides, from the first fetches' outcomes, whether the network is unreachable from here."""

    def __init__(self, fail_fast: int):
        self.fail_fast = fail_fast
        self.failures = 0  # network failures so far, while nothing else happened
        self.example = ""
        self.decided: str | None = None  # the cause, once the network is taken to be unreachable
        self._open = fail_fast > 0  # closed by any success or any other kind of failure
        self._lock = threading.Lock()

    def note(self, url: str, network_cause: str | None, error: str | None = None) -> None:
        with self._lock:
            if not self._open:
                return
            if network_cause is None:
                self._open = False
                return
            self.failures += 1
            self.example = self.example or f"{network_cause}, e.g. {url}: {error}"
            if self.failures >= self.fail_fast:
                self.decided, self._open = self.example, False


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
        self._offline = _Offline(options.fail_fast)

    def cache_path(self, url: str) -> Path:
        digest = hashlib.sha256(url.encode()).hexdigest()
        return self.cache_dir / digest[:2] / digest

    def fetch_all(self, urls: list[str]) -> list[Fetched]:
        """Fetch concurrently; results in the order of ``urls``. Raises ``UserError`` (one line)
        once the network is taken to be unreachable, when ``stop_offline``."""
        if not urls:
            return []
        known = self._offline.decided
        with ThreadPoolExecutor(max_workers=min(self.options.threads, len(urls))) as pool:
            fetched = list(pool.map(self.fetch, urls))
        cause = self._offline.decided
        if cause is not None and self.options.stop_offline:
            raise UserError(f"image downloads: the first {self._offline.failures} fetches all failed on the network "
                            f"({cause}): no network from here? Pass --allow-missing-images (launch/convert.py: "
                            "allow_missing_images=true) to convert without the images, or fetch them elsewhere and "
                            "pass --images DIR")
        if cause is not None and known is None:
            print(f"convert: the first {self._offline.failures} image fetches all failed on the network ({cause}); "
                  "the remaining URLs are not attempted and count as unavailable images", file=sys.stderr, flush=True)
        return fetched

    def fetch(self, url: str) -> Fetched:
        path = self.cache_path(url)
        if path.is_file():
            return Fetched(url, path)
        o = self.options
        error = "no attempt"
        for attempt in range(o.retries + 1):
            if self._offline.decided is not None:
                error = f"not attempted: the network looked unreachable ({self._offline.decided})"
                return Fetched(url, None, error, error)
            if attempt:
                time.sleep(o.backoff * 2 ** (attempt - 1))
            try:
                data = self._get(url)
            except _Permanent as e:
                self._offline.note(url, None)
                return Fetched(url, None, str(e), str(e))
            except (urllib.error.URLError, http.client.HTTPException, OSError) as e:
                error = _describe(e, o.timeout)
                if not _transient(e):
                    self._offline.note(url, _network_cause(e), error)
                    return Fetched(url, None, error, error)
                continue
            self._offline.note(url, None)
            path.parent.mkdir(parents=True, exist_ok=True)
            files.write_bytes(path, data)
            return Fetched(url, path)
        self._offline.note(url, None)
        return Fetched(url, None, f"{error} (after {o.retries + 1} attempts)", error)

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


def _reason(e: BaseException) -> BaseException:
    return e.reason if isinstance(e, urllib.error.URLError) and not isinstance(e, urllib.error.HTTPError) else e


def _transient(e: BaseException) -> bool:
    """Worth another attempt: a timeout, a truncated body, a reset connection, HTTP 5xx or 429."""
    if isinstance(e, urllib.error.HTTPError):
        return True  # ``_get`` turned every other status into _Permanent
    return isinstance(_reason(e), (TimeoutError, http.client.IncompleteRead, ConnectionResetError,
                                   http.client.RemoteDisconnected))


def _network_cause(e: BaseException) -> str | None:
    """The network itself failed (not this URL): the name does not resolve, nothing listens, no route."""
    reason = _reason(e)
    if isinstance(reason, socket.gaierror):
        return "host name does not resolve"
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused"
    if isinstance(reason, OSError) and reason.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH):
        return "no route to the host"
    return None


def _describe(e: BaseException, timeout: float) -> str:
    if isinstance(e, urllib.error.HTTPError):
        return f"HTTP {e.code}"
    reason = _reason(e)
    if isinstance(reason, TimeoutError):
        return f"timed out after {timeout:g}s"
    if isinstance(reason, http.client.IncompleteRead):
        return f"truncated body ({len(reason.partial)} bytes, {reason.expected} missing)"
    return f"{reason.__class__.__name__}: {reason}"


def is_url(ref: str) -> bool:
    return ref.startswith(("http://", "https://"))
