"""Reading a memory-mapped feature array block by block must not leave the file in the RSS."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cliper_dist.data.features import release_pages


def file_backed_kb() -> int:
    status = Path("/proc/self/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("RssFile:")).split()[1])


def test_released_pages_leave_the_rss(tmp_path):
    np.save(tmp_path / "a.npy", np.ones((4096, 4096), dtype=np.float32))  # 64 MB
    array = np.load(tmp_path / "a.npy", mmap_mode="r")
    before = file_backed_kb()
    assert float(array.sum(dtype=np.float64)) == 4096 * 4096  # every page read
    read = file_backed_kb()
    release_pages(array)
    after = file_backed_kb()
    assert read - before > 48_000, (before, read)  # the read mapped (most of) 64 MB
    assert read - after > 48_000, (read, after)  # and releasing unmapped it
    assert float(array[-1, -1]) == 1.0  # still readable: pages come back on demand
    release_pages(np.ones(3))  # an in-memory array: nothing to do
