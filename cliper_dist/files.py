"""Reading and crash-safe writing of the small files every job keeps: JSON, JSON lines, text, bytes.

The one guarantee, for every file a job writes through here: it appears whole under its
final name, or not at all. A writer fills a temporary beside the target
(``.NAME.tmp-PID-THREAD``, unique per writer), flushes it to disk (fsync), then renames it
over the target. The rename is atomic within a filesystem, so a reader, or a run resumed
after a crash, sees the old file or the new one, never half of one. A killed writer leaves
only a temporary, which no reader opens and ``remove_temporaries`` clears.

Bulk arrays (memory-mapped ``.npy``) are filled in place instead; their directory's manifest,
written last through here, is what marks them complete.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import threading
from pathlib import Path
from typing import IO, Any, Iterable, Iterator

TEMPORARY_GLOB = ".*.tmp-*"


def _temporary(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}-{threading.get_ident()}")


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "w") -> Iterator[IO]:
    """``open(path, mode)`` for writing ("w" text, "wb" bytes) under the guarantee above; on an
    exception the temporary is removed and the target left as it was."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open writes whole files: mode 'w' or 'wb', not {mode!r}")
    path = Path(path)
    tmp = _temporary(path)
    try:
        with open(tmp, mode, **({"encoding": "utf-8"} if mode == "w" else {})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_open(path, "wb") as f:
        f.write(data)


def write_text(path: str | Path, text: str) -> None:
    with atomic_open(path, "w") as f:
        f.write(text)


def write_json(path: str | Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, ensure_ascii=False, default=_jsonable) + "\n")


def write_jsonl(path: str | Path, rows: Iterable[dict]) -> None:
    """One JSON object per line, streamed: ``rows`` may be a generator of any length."""
    with atomic_open(path, "w") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def copy_file(src: str | Path, dst: str | Path) -> None:
    with open(src, "rb") as source, atomic_open(dst, "wb") as target:
        shutil.copyfileobj(source, target, 1 << 24)


def remove_temporaries(directory: str | Path) -> None:
    """The temporaries that killed writers left in ``directory`` (their targets are untouched)."""
    for tmp in Path(directory).glob(TEMPORARY_GLOB):
        tmp.unlink(missing_ok=True)


def file_sha256(path: str | Path, chunk: int = 1 << 24) -> str:
    """sha256 of a file, read a chunk at a time (checkpoints and arrays of any size)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def read_json(path: str | Path) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def read_jsonl(path: str | Path) -> Iterator[dict]:
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


def _jsonable(x: Any) -> Any:
    """numpy scalars and arrays as plain JSON (manifests carry counts computed with numpy)."""
    if hasattr(x, "tolist"):
        return x.tolist()
    raise TypeError(f"{type(x).__name__} is not JSON serialisable")
