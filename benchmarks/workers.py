"""Running a benchmark's measuring worker in its own process (or torchrun world) and reading the
one JSON line it prints: shared by the benchmarks that launch themselves."""

from __future__ import annotations

import json
import os
import subprocess


def run_json(cmd: list[str], what: str, threads: int | None = 1) -> dict:
    """Run ``cmd`` (OMP_NUM_THREADS=``threads``; None: inherited); print and return the last JSON
    line it printed, or stop with its output when it failed or printed none."""
    env = os.environ if threads is None else {**os.environ, "OMP_NUM_THREADS": str(threads)}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    if out.returncode or not lines:
        raise SystemExit(f"{what} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    print(lines[-1], flush=True)
    return json.loads(lines[-1])
