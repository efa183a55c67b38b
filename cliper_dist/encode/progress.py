"""One progress bar on rank 0 showing the whole job's items/s, without collectives in the loop.

Ranks have uneven work, so a collective inside the encode loop would deadlock (or make
fast ranks wait for slow ones). Instead every rank adds its count to a counter in the
c10d key-value store that torchrun already runs (``store.add`` is one small TCP request,
sent at most every ``interval_s``); rank 0 reads the sum for its bar. When rank 0 has
finished its own share it keeps the bar alive until every rank has reported done.
"""

from __future__ import annotations

import time

import torch.distributed as torch_dist
from torch.distributed import distributed_c10d

from cliper_dist import dist


class GlobalProgress:
    """``update(n)`` on every rank; rank 0's bar shows the sum over ranks."""

    def __init__(self, total: int, run_id: str, world_size: int, interval_s: float = 0.5,
                 stall_timeout_s: float = 600.0):
        self.store = distributed_c10d._get_default_store() if torch_dist.is_initialized() else None
        self.items_key, self.done_key = f"cliper/encode/{run_id}/items", f"cliper/encode/{run_id}/done"
        self.world_size = world_size
        self.interval_s = interval_s
        self.stall_timeout_s = stall_timeout_s
        self.bar = dist.Progress(total, desc="encode", unit="item")
        self.unsent = self.shown = 0
        self.sent_at = time.monotonic()

    def update(self, n: int) -> None:
        self.unsent += n
        if self.store is None:
            self._show(self.shown + n)
            self.unsent = 0
        elif time.monotonic() - self.sent_at >= self.interval_s:
            self._push()

    def finish(self) -> None:
        """Report this rank done; rank 0 follows the others until all are done, then closes the bar."""
        if self.store is None:
            self.bar.close()
            return
        self._push()
        self.store.add(self.done_key, 1)
        if dist.world_info_from_env()[0] == 0:
            last, last_change = -1, time.monotonic()
            while self.store.add(self.done_key, 0) < self.world_size:
                count = self.store.add(self.items_key, 0)
                self._show(count)
                if count != last:
                    last, last_change = count, time.monotonic()
                elif time.monotonic() - last_change > self.stall_timeout_s:
                    raise RuntimeError(f"no rank reported progress for {self.stall_timeout_s:.0f}s")
                time.sleep(self.interval_s)
            self._show(self.store.add(self.items_key, 0))
        self.bar.close()

    def _push(self) -> None:
        total = self.store.add(self.items_key, self.unsent)
        self.unsent, self.sent_at = 0, time.monotonic()
        self._show(total)

    def _show(self, count: int) -> None:
        if count > self.shown:
            self.bar.update(count - self.shown)
            self.shown = count
