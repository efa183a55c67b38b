"""Peer heartbeats: a rank whose peer died stops within a bound, naming the peer.

A peer that dies by a crash closes its sockets, and the next collective fails at once
(``dist.peer_failure`` names it). A peer that vanishes without closing anything (a host
that loses power or its network) leaves the others waiting: for a collective's timeout,
which the convert job sets to a day because its ranks may legitimately end hours apart.
So every rank of a torchrun job runs a ``PeerWatch`` thread. It bumps its own counter in
the rendezvous store every ``interval_s`` and reads everyone's; a rank whose counter has
not moved for ``timeout_s`` is lost, and so is the store itself when it stops answering.
Either ends this process with one line. A store behind a dead link does not fail but blocks,
so a second thread ends the rank when a heartbeat round has not come back within the
timeout. A rank that finished marks itself done, so that the ranks still writing outputs do
not take its silence for a death.

The thread needs the GIL once per interval: native calls that hold it (a large
``np.unique``) delay a heartbeat by seconds, which the default timeout (120 s) absorbs.
"""

from __future__ import annotations

import datetime
import os
import sys
import threading
import time
from typing import Callable

import torch.distributed as dist

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
                    self.on_lost(f"lost the rendezvous store at {self.where} ({_first_line(e)}): the host that "
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


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0][:200] if text else type(e).__name__


def exit_lost(line: str, code: int = 3) -> None:
    """Print ``line`` and end this process at once (from any thread): the main thread may be
    blocked in a collective that will never complete."""
    print(line, file=sys.stderr, flush=True)
    os._exit(code)
