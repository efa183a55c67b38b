#!/usr/bin/env bash
# Multi-node training: one torchrun agent per node, c10d rendezvous, settings from env vars.
#
#   NNODES=2 NODE_RANK=0 MASTER_ADDR=node0 MASTER_PORT=29500 NPROC_PER_NODE=1 \
#       launch/multinode.sh --config configs/train/baby_lightgcn.yaml --data DATA --out RUN_DIR
#   (the same on node1 with NODE_RANK=1)
#
# Env: NNODES (default 1), NODE_RANK (default 0; SLURM_NODEID under SLURM), NPROC_PER_NODE
# (default 1), MASTER_ADDR (default 127.0.0.1), MASTER_PORT (default 29500), RDZV_ID (default
# $SLURM_JOB_ID or "cliper-train"), PYTHON (default: the project's .venv/bin/python), RDZV_TIMEOUT
# (default 300 s).
# Every argument is passed to launch/train.py. RUN_DIR must be on a file system all nodes
# share (checkpoints are written by every rank; metrics and final.json by rank 0).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
NNODES="${NNODES:-1}"
NODE_RANK="${NODE_RANK:-${SLURM_NODEID:-0}}"
NPROC_PER_NODE="${NPROC_PER_NODE:-1}"
MASTER_ADDR="${MASTER_ADDR:-127.0.0.1}"
MASTER_PORT="${MASTER_PORT:-29500}"
RDZV_ID="${RDZV_ID:-${SLURM_JOB_ID:-cliper-train}}"
RDZV_TIMEOUT="${RDZV_TIMEOUT:-300}"
PYTHON="${PYTHON:-$(dirname "$here")/.venv/bin/python}"
export PYTHONPATH="$(dirname "$here")${PYTHONPATH:+:$PYTHONPATH}"
exec "$PYTHON" -m torch.distributed.run \
    --nnodes="$NNODES" --node_rank="$NODE_RANK" --nproc_per_node="$NPROC_PER_NODE" \
    --rdzv_backend=c10d --rdzv_endpoint="$MASTER_ADDR:$MASTER_PORT" --rdzv_id="$RDZV_ID" \
    --rdzv_conf="timeout=$RDZV_TIMEOUT" --max_restarts=0 \
    "$here/train.py" "$@"
