#!/usr/bin/env bash
# README command 1: install (idempotent), then run the whole pipeline on the embedded demo:
# demo catalog -> 2-rank convert -> 2-rank CLIP training on the catalog's own pairs -> 2-rank encode
# (random-init and catalog-trained CLIP) -> 2-rank train (LightGCN, FREEDOM-CLIPER on each feature
# store) -> one table of the three on the same split, and a PNG of their curves and phase times.
#   DEMO_OUT  where the demo writes (default runs/demo)    NPROC  ranks per job (default 2)
#   SEED      seed of the CLIP training and the recommender training (default 0)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/install.sh

OUT=${DEMO_OUT:-runs/demo}
NPROC=${NPROC:-2}
SEED=${SEED:-0}
PY=.venv/bin/python
TORCHRUN=".venv/bin/torchrun --standalone --nproc_per_node $NPROC"
MODEL=configs/models/clip-tiny.json
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}

rm -rf "$OUT/raw" "$OUT/dataset" "$OUT/report" "$OUT/clip-catalog" "$OUT/features-random" "$OUT/features" "$OUT/runs.png" \
  "$OUT/run-lightgcn" "$OUT/run-random" "$OUT/run"
step() { printf '\n== %s\n' "$*"; }

step "1/7 demo catalog: 1000 items with rendered images and multi-field text; 500 users who pick colours and shapes"
$PY tools/make_demo.py --out "$OUT/raw"
step "2/7 convert to WebDataset shards: $NPROC ranks"
$TORCHRUN launch/convert.py --format jsonl --catalog "$OUT/raw/catalog.jsonl" --images "$OUT/raw/images" \
  --interactions "$OUT/raw/interactions.csv" --out "$OUT/dataset" shard_size=100
$PY tools/inspect_dataset.py "$OUT/dataset" --report "$OUT/report" | tail -1
step "3/7 random-init tiny open_clip checkpoint (no weights are downloaded)"
$PY tools/init_checkpoint.py --model $MODEL --out "$OUT/clip-tiny.pt"
step "4/7 train that CLIP contrastively on the catalog's own image-text pairs: $NPROC ranks"
$TORCHRUN launch/pretrain.py --config configs/pretrain/demo.yaml --data "$OUT/dataset" --model $MODEL \
  --init "$OUT/clip-tiny.pt" --out "$OUT/clip-catalog" seed="$SEED"
step "5/7 encode 5 CLIPER views per item with the random-init and the catalog-trained CLIP: $NPROC ranks"
$TORCHRUN launch/encode.py --data "$OUT/dataset" --out "$OUT/features-random" --model $MODEL --pretrained "$OUT/clip-tiny.pt"
$TORCHRUN launch/encode.py --data "$OUT/dataset" --out "$OUT/features" --model $MODEL --pretrained "$OUT/clip-catalog/clip.pt"
step "6/7 train LightGCN (ID only) and FREEDOM-CLIPER on each feature store, torchrec-sharded ID tables: $NPROC ranks"
train() { $TORCHRUN launch/train.py --config configs/train/demo.yaml --data "$OUT/dataset" seed="$SEED" \
  model.reg_weight=1e-3 "$@"; }
train --out "$OUT/run-lightgcn" model.name=lightgcn
train --out "$OUT/run-random" --features "$OUT/features-random"
train --out "$OUT/run" --features "$OUT/features"
step "7/7 the same split, test metrics at the best valid epoch; valid R@20, N@20 and loss per epoch in a PNG"
RUNS=("LightGCN (ID only)=$OUT/run-lightgcn" "FREEDOM-CLIPER, random-init CLIP=$OUT/run-random"
      "FREEDOM-CLIPER, catalog-trained CLIP=$OUT/run")
$PY tools/compare_runs.py "${RUNS[@]}"
$PY tools/plot_runs.py "${RUNS[@]}" --out "$OUT/runs.png"
printf '\nDemo outputs under %s (dataset report: %s/report/report.md; CLIP training: %s/clip-catalog/pretrain/metrics.jsonl; runs: %s/run*/final.json)\n' \
  "$OUT" "$OUT" "$OUT" "$OUT"
