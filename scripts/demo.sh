#!/usr/bin/env bash
# README command 1: install (idempotent), then run the whole pipeline on the embedded demo:
# demo catalog -> 2-rank convert -> 2-rank encode -> 2-rank train -> metrics table.
#   DEMO_OUT  where the demo writes (default runs/demo)    NPROC  ranks per job (default 2)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/install.sh

OUT=${DEMO_OUT:-runs/demo}
NPROC=${NPROC:-2}
PY=.venv/bin/python
TORCHRUN=".venv/bin/torchrun --standalone --nproc_per_node $NPROC"
MODEL=configs/models/clip-tiny.json
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}

rm -rf "$OUT/raw" "$OUT/dataset" "$OUT/features" "$OUT/run"
step() { printf '\n== %s\n' "$*"; }

step "1/5 demo catalog: items with rendered images, multi-field text, attribute-driven users"
$PY tools/make_demo.py --out "$OUT/raw"
step "2/5 convert to WebDataset shards: $NPROC ranks"
$TORCHRUN launch/convert.py --format jsonl --catalog "$OUT/raw/catalog.jsonl" --images "$OUT/raw/images" \
  --interactions "$OUT/raw/interactions.csv" --out "$OUT/dataset" shard_size=50
step "3/5 random-init tiny open_clip checkpoint (no weights are downloaded)"
$PY tools/init_checkpoint.py --model $MODEL --out "$OUT/clip-tiny.pt"
step "4/5 encode: $NPROC ranks, 5 CLIPER views per item"
$TORCHRUN launch/encode.py --data "$OUT/dataset" --out "$OUT/features" --model $MODEL --pretrained "$OUT/clip-tiny.pt"
step "5/5 train FREEDOM-CLIPER on torchrec-sharded ID tables: $NPROC ranks"
$TORCHRUN launch/train.py --config configs/train/demo.yaml --data "$OUT/dataset" --features "$OUT/features" --out "$OUT/run"
printf '\nDemo outputs under %s (metrics: %s/run/metrics.jsonl, %s/run/final.json)\n' "$OUT" "$OUT" "$OUT"
