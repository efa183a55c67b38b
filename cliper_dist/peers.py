"""When a peer rank fails: heartbeats, lost connections, and who says what.

- A peer that dies by a crash closes its sockets, and the next collective fails at once:
  ``peer_failure`` turns that error into one line naming the peer's address.
- A peer that vanishes without closing anything (a host that loses power or its network)
  leaves the others waiting, for a collective's timeout, which the convert job sets to a
  day because its ranks may legitimately end hours apart. So every rank of a torchrun job
  runs a ``PeerWatch``: it bumps its own counter in the rendezvous store every few seconds
  and reads everyone's; a rank whose counter has not moved for ``timeout_s`` is lost, and
  so is the store itself when it stops answering. A store behind a dead link does not fail
  but blocks, so a second thread ends the rank when a heartbeat round has not come back in
  time. A rank that finished marks itself done, so that the ranks still writing outputs do
  not take its silence for a death. The threads need the GIL once per interval: native
  calls that hold it (a large ``np.unique``) delay a beat by seconds, which the default
  timeout (120 s) absorbs.
- A rank that fails with its own error says so through the store (``report_failure``)
  before its sockets close, so that the survivors stay quiet instead of reporting a lost
  peer, and so that the other hosts' ranks can repeat rank 0's line on their consoles.
"""

from __future__ import annotations

import datetime
import os
import re
import sys
import threading
import time
from typing import Any, Callable, TypeVar

import torch.distributed as dist

T = TypeVar("T")

DONE = b"done"


class PeerWatch:
    def __init__(self, rank: int, world_size: int, addr: str, port: int, timeout_s: float,
                 on_lost: Callable[[str], None], interval_s: float | None = None):
        self.rank, self.world_size = rank, world_size
        self.where = f"{addr}:{port}"
        self.timeout_s = timeout_s
        self.interval_s = interval_s or min(5.0, timeout_s / 6)
        self.on_lost = on_lost
        attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
        run = os.environ.get("TORCHELASTIC_RUN_ID", "")
        self.prefix = f"cliper/alive/{run}/{attempt}/"
        # A client of its own: the main thread's store calls may block for long.
        self.store = dist.TCPStore(addr, port, is_master=False, wait_for_workers=False,
                                   timeout=datetime.timedelta(seconds=max(timeout_s, 1.0)))
        self.store.set(self._key("host", rank), os.environ.get("CLIPER_LOCAL_ADDR", "") or "this host")
        self._beats = 0
        self._round_at = time.monotonic()  # when the last heartbeat round completed
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, name="cliper-peer-watch", daemon=True),
                         threading.Thread(target=self._guard, name="cliper-store-guard", daemon=True)]

    def _key(self, kind: str, rank: int) -> str:
        return f"{self.prefix}{kind}/{rank}"

    def start(self) -> "PeerWatch":
        for thread in self._threads:
            thread.start()
        return self

    def done(self) -> None:
        """This rank finished: stop beating and tell the others not to wait for beats."""
        self._stop.set()
        try:
            self.store.set(self._key("beat", self.rank), DONE)
        except Exception:  # noqa: BLE001 - the store may be gone at the very end; nothing to report
            pass

    def _run(self) -> None:
        keys = [self._key("beat", r) for r in range(self.world_size)]
        seen: dict[int, tuple[bytes, float]] = {}
        started = time.monotonic()
        while not self._stop.wait(self.interval_s if self._beats else 0):
            self._beats += 1
            try:
                self.store.set(keys[self.rank], str(self._beats))
                values = self.store.multi_get(keys) if self.store.check(keys) else \
                    [self.store.get(k) if self.store.check([k]) else b"" for k in keys]
            except Exception as e:  # noqa: BLE001 - any store failure means the store is gone
                if not self._stop.is_set():
                    self.on_lost(f"lost the rendezvous store at {self.where} ({first_line(e)}): the host that "
                                 "started rank 0's torchrun died or the network between the hosts failed")
                return
            now = self._round_at = time.monotonic()
            for peer, value in enumerate(values):
                if peer == self.rank or value == DONE:
                    continue
                last, since = seen.get(peer, (b"", started))
                if value != last:
                    seen[peer] = (value, now)
                elif now - since > self.timeout_s:
                    self.on_lost(self._lost_message(peer, now - since, bool(value)))
                    return

    def _guard(self) -> None:
        """A store behind a dead link does not fail: its calls block while TCP retransmits
        (minutes). This thread notices a heartbeat round that does not come back."""
        while not self._stop.wait(self.interval_s):
            stalled = time.monotonic() - self._round_at
            if stalled > self.timeout_s:
                self.on_lost(f"the rendezvous store at {self.where} has not answered for {stalled:.0f} s "
                             f"(CLIPER_PEER_TIMEOUT={self.timeout_s:g}): the host that started rank 0's torchrun "
                             "died or the network between the hosts failed")
                return

    def _lost_message(self, peer: int, silent_s: float, ever: bool) -> str:
        try:
            host = self.store.get(self._key("host", peer)).decode() if self.store.check([self._key("host", peer)]) \
                else "unknown host"
        except Exception:  # noqa: BLE001
            host = "unknown host"
        what = "has sent no heartbeat" if ever else "never sent a heartbeat"
        return (f"rank {peer} ({host}) {what} for {silent_s:.0f} s (CLIPER_PEER_TIMEOUT={self.timeout_s:g}): "
                "its process or host died, or the network to it failed; this rank stops too")


def exit_with_line(line: str, code: int = 3) -> None:
    """Print ``line`` and end this process at once (from any thread): the main thread may be
    blocked in C++, in a collective or a connect that will never complete."""
    print(line, file=sys.stderr, flush=True)
    os._exit(code)


def first_line(e: BaseException) -> str:
    """The first line of an error, without gloo's source location and generic advice."""
    lines = [line for line in str(e).strip().splitlines() if line.strip()]
    if not lines:
        return type(e).__name__
    line = re.sub(r"^\[[^\]]*\.(cc|cpp|hpp):\d+\]\s*", "", lines[0])  # gloo's source location
    return line.split(". This is typically caused")[0][:300]  # gloo's generic advice


def peer_failure(e: BaseException, collective_timeout_s: float) -> str | None:
    """A collective that failed because a peer is gone, as one line; None for anything else."""
    if not isinstance(e, (RuntimeError, dist.DistError)) or not dist.is_initialized():
        return None
    text = str(e)
    rank = dist.get_rank()
    if "Timed out waiting" in text or isinstance(e, dist.DistStoreError) and "timeout" in text:
        return (f"rank {rank}: a collective waited longer than CLIPER_COLLECTIVE_TIMEOUT="
                f"{collective_timeout_s:g} s for its peers ({first_line(e)}): a rank stopped answering "
                "(its host died, or it is stuck); rerun the same command to continue from what was saved")
    lost = ("Connection reset by peer", "Connection closed by peer", "Broken pipe", "Connection refused",
            "Connection was likely closed", "Socket closed")
    if any(marker in text for marker in lost):
        where = re.search(r"\[([0-9A-Fa-f:.]+)\]:(\d+)", text)
        peer = f" at {where.group(1)}" if where else ""
        return (f"rank {rank}: lost the connection to a peer{peer} during a collective ({first_line(e)}): a rank "
                "on that host died or the host went down; rerun the same command to continue from what was saved")
    return None


def _failure_key(what: str) -> str:
    return f"cliper/failed/{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}/{what}"


def _store_call(call: Callable[[Any], T], default: T) -> T:
    """``call(store)`` on the job's store; ``default`` without one, or when it is gone too."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return default
    try:
        return call(dist.distributed_c10d._get_default_store())
    except Exception:  # noqa: BLE001 - the store may be gone with the failed peer
        return default


def report_failure(line: str = "", host: str = "") -> None:
    """Tell the other ranks, through the store and before this rank's sockets close, that
    this rank failed and says why itself; rank 0 leaves its line and its host for them."""
    def report(store) -> None:
        store.add(_failure_key("count"), 1)
        if dist.get_rank() == 0:
            store.set(_failure_key("rank0"), f"{host}\t{line}")

    _store_call(report, None)


def failure_reported() -> bool:
    return _store_call(lambda store: store.add(_failure_key("count"), 0) > 0, False)


def rank0_failure() -> tuple[str, str] | None:
    """(host, line) of rank 0's failure, if it reported one."""
    key = _failure_key("rank0")
    said = _store_call(lambda store: store.get(key).decode() if store.check([key]) else None, None)
    return None if said is None else tuple(said.split("\t", 1))


