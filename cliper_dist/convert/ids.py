"""String ids numbered 0.. in order of first appearance, held in numpy byte arrays.

A dict of a million Python strings costs about 150 bytes per id and grows with every id a
conversion meets; here an id costs its UTF-8 length (padded to the longest) in the names,
the same again in a sorted copy, and 8 bytes for its code. Lookups are binary searches of
the sorted copy, vectorised over a chunk of ids; ids added one at a time wait in a small
dict until ``FLUSH`` of them are merged into the arrays. (numpy's ``S`` dtype pads with NUL
bytes, so an id ending in NUL would read as the same id without it; text ids do not.)
"""

from __future__ import annotations

from typing import Iterable, Iterator, Sequence

import numpy as np

FLUSH = 1 << 16  # ids held in the one-at-a-time dict before a merge into the arrays
CHUNK = 1 << 18  # ids a reader collects as strings before coding (or encoding) them together


def encode(ids: Iterable[str]) -> np.ndarray:
    """UTF-8 bytes of ``ids`` as a fixed-width byte array (``S`` dtype)."""
    out = np.array([i.encode() for i in ids], dtype=bytes)
    return out if out.size else np.empty(0, dtype="S1")


class IdCodes:
    """Codes of string ids: ``code`` numbers new ids after the known ones, ``find`` only looks up."""

    def __init__(self, names: np.ndarray | None = None):
        """``names``: the ids of codes 0.., distinct (``S`` dtype)."""
        self._names = np.empty(0, dtype="S1") if names is None else np.asarray(names, dtype=bytes)
        self._sorted_codes = np.argsort(self._names, kind="stable").astype(np.int64)
        self._sorted = self._names[self._sorted_codes]
        if len(self._sorted) > 1 and (self._sorted[1:] == self._sorted[:-1]).any():
            raise ValueError("ids must be distinct")
        self._recent: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._names) + len(self._recent)

    def __getitem__(self, code: int) -> str:
        if code >= len(self._names):
            self._merge()
        return self._names[code].decode()

    def __iter__(self) -> Iterator[str]:
        self._merge()
        for lo in range(0, len(self._names), FLUSH):
            yield from (n.decode() for n in self._names[lo:lo + FLUSH])

    def __contains__(self, id_: str) -> bool:
        return self.get(id_) >= 0

    @property
    def names(self) -> np.ndarray:
        """The ids by code, UTF-8 bytes."""
        self._merge()
        return self._names

    def get(self, id_: str) -> int:
        """The code of one id, or -1."""
        code = self._recent.get(id_)
        if code is not None:
            return code
        key = id_.encode()
        at = int(np.searchsorted(self._sorted, key))
        return int(self._sorted_codes[at]) if at < len(self._sorted) and self._sorted[at] == key else -1

    def add(self, id_: str) -> int:
        """The code of one id, numbering it next when new."""
        code = self.get(id_)
        if code < 0:
            code = self._recent[id_] = len(self)
            if len(self._recent) >= FLUSH:
                self._merge()
        return code

    def find(self, ids: Sequence[str] | np.ndarray) -> np.ndarray:
        """Codes of ``ids`` (str, or UTF-8 bytes as ``names`` holds them), -1 for unknown ones."""
        self._merge()
        keys = ids if isinstance(ids, np.ndarray) else encode(ids)
        if not len(self._sorted) or not len(keys):
            return np.full(len(keys), -1, dtype=np.int64)
        at = np.minimum(np.searchsorted(self._sorted, keys), len(self._sorted) - 1)
        return np.where(self._sorted[at] == keys, self._sorted_codes[at], -1)

    def code(self, ids: Sequence[str]) -> np.ndarray:
        """Codes of ``ids``; new ones are numbered after the known, in order of first appearance."""
        keys = encode(ids)
        codes = self.find(keys)
        new = codes < 0
        if new.any():
            fresh, first, inverse = np.unique(keys[new], return_index=True, return_inverse=True)
            rank = np.empty(len(fresh), dtype=np.int64)
            rank[np.argsort(first)] = np.arange(len(fresh))
            codes[new] = len(self._names) + rank[inverse]
            self._insert(fresh, len(self._names) + rank)
        return codes

    def take(self, codes: np.ndarray) -> "IdCodes":
        """The ids of ``codes`` (distinct), numbered 0.. in that order."""
        return IdCodes(self.names[codes])

    def _merge(self) -> None:
        if self._recent:
            recent, self._recent = self._recent, {}
            keys = encode(recent)
            order = np.argsort(keys)
            self._insert(keys[order], np.fromiter(recent.values(), np.int64, len(recent))[order])

    def _insert(self, keys: np.ndarray, codes: np.ndarray) -> None:
        """New ids ``keys`` (sorted, unknown) with ``codes`` (continuing the names)."""
        width = max(self._sorted.dtype.itemsize, keys.dtype.itemsize)
        names = np.empty(len(self._names) + len(keys), dtype=f"S{width}")
        names[:len(self._names)] = self._names
        names[codes] = keys
        at = np.searchsorted(self._sorted, keys)
        self._sorted = np.insert(self._sorted.astype(f"S{width}"), at, keys)
        self._sorted_codes = np.insert(self._sorted_codes, at, codes)
        self._names = names
