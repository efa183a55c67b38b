"""Wall seconds per phase of a training job (load, kNN, graph, steps, eval, checkpoint), summed
over the run and its resumes, and recorded in final.json."""

from __future__ import annotations

import contextlib
import time
from typing import Iterator


class Phases:
    def __init__(self, seconds: dict[str, float] | None = None):
        self.seconds: dict[str, float] = dict(seconds or {})

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - start)

    def add(self, name: str, seconds: float) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds

    def rounded(self) -> dict[str, float]:
        return {k: round(v, 3) for k, v in self.seconds.items()}

    def describe(self) -> str:
        return ", ".join(f"{k} {v:.1f} s" for k, v in self.seconds.items())
