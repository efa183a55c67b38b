#!/usr/bin/env bash
# Any stage on several hosts: one torchrun agent per host, c10d rendezvous, settings from env vars.
#
#   node 0:  NNODES=2 NODE_RANK=0 MASTER_ADDR=10.0.0.1 NPROC_PER_NODE=2 launch/multinode.sh train \
#                --config configs/train/lightgcn.yaml --data DATA --out RUN_DIR
#   node 1:  the same with NODE_RANK=1
#
# STAGE is convert, pretrain, encode, adapt or train; the arguments go to launch/STAGE.py. The
# node's address and interface come from the route to MASTER_ADDR, and the line it logs says
# what was chosen. Env (defaults): NNODES (1), NODE_RANK (0; SLURM_NODEID), NPROC_PER_NODE (1),
# MASTER_ADDR (127.0.0.1), MASTER_PORT (29500), RDZV_ID (cliper; SLURM_JOB_ID), RDZV_TIMEOUT
# (300 s), MAX_RESTARTS (0), LOCAL_ADDR / SOCKET_IFNAME (derived), CLIPER_CONNECT_TIMEOUT (120 s),
# CLIPER_COLLECTIVE_TIMEOUT (600 s), CLIPER_PEER_TIMEOUT (120 s), CLIPER_VERBOSE, PYTHON (the
# project's .venv/bin/python). --out must be on a file system every node shares: the job checks.
# docs/multinode.md is the runbook.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-$repo/.venv/bin/python}"
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"
exec "$PYTHON" -c 'import sys; from cliper_dist.multinode import main; sys.exit(main(sys.argv[1:]))' "$@"
