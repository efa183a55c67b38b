#!/usr/bin/env bash
# README command 2: install (idempotent), then run the test suite (slow cases excluded;
# `bash scripts/test.sh -m slow` runs those). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/install.sh
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
exec .venv/bin/python -m pytest -m "not slow" "$@"
