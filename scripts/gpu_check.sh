#!/usr/bin/env bash
# The check for the lent GPU machine's one short window (docs/gpu.md): under 8 minutes, no network.
#
#   bash scripts/gpu_check.sh          on the GPU machine: installs .whl/*.whl (scripts/gpu_wheels.sh,
#                                      run beforehand where there is network) into a private folder
#   bash scripts/gpu_check.sh --cpu    the same steps with the CPU as the device, here (.venv)
#
# Steps, each with a time limit, all under one deadline (GPU_CHECK_BUDGET_S, default 450 s):
#   wheels       pip install --no-index --no-deps --target: the carried wheels (GPU run only)
#   environment  torch sees the GPU; fbgemm (CPU build), torchrec, open_clip, faiss, webdataset import
#   demo_*       the demo pipeline at 1 rank on the device: catalog, convert, CLIP pretraining and
#                encode (both bf16 autocast on CUDA), FREEDOM training
#   train_cpu    the same FREEDOM training on the CPU, and agreement: the two runs within the
#                tolerances of cliper_dist/testing/devices.py
#   gpu_tests    pytest -m gpu tests/e2e/test_gpu.py (CLIPER_TEST_DEVICE=cuda, or cpu with --cpu)
# A demo step runs only when the one before it passed; the summary lists those not run.
# Writes $OUT/gpu_check.log (every step's output) and $OUT/gpu_check.json (the summary); OUT defaults
# to runs/gpu_check. Exit 0 when every step passed.
#   GPU_CHECK_ITEMS (1000), GPU_CHECK_PRETRAIN_STEPS (300), GPU_CHECK_EPOCHS (10): the demo's size
#   GPU_CHECK_TESTS: a pytest -k expression choosing among the gpu tests (default: all)
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO=$PWD
MODE=cuda
[ "${1:-}" = --cpu ] && MODE=cpu
OUT=${OUT:-$REPO/runs/gpu_check}
mkdir -p "$OUT"
LOG=$OUT/gpu_check.log
WORK=$(mktemp -d /tmp/gpu_check.XXXXXX)
: > "$LOG"
: > "$WORK/steps.tsv"
if [ "$MODE" = cpu ] && [ -x .venv/bin/python ]; then PY=${PYTHON:-$REPO/.venv/bin/python}; else PY=${PYTHON:-python3}; fi
export PYTHONPATH=$REPO PYTHONUNBUFFERED=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-4}
export HF_HUB_OFFLINE=1 PIP_NO_INDEX=1 PIP_DISABLE_PIP_VERSION_CHECK=1   # no network, none tried
BUDGET=${GPU_CHECK_BUDGET_S:-450}
ITEMS=${GPU_CHECK_ITEMS:-1000}
STEPS=${GPU_CHECK_PRETRAIN_STEPS:-300}
EPOCHS=${GPU_CHECK_EPOCHS:-10}
START=$(date +%s)
PLANNED=(imports demo_catalog demo_convert demo_checkpoint demo_pretrain demo_encode demo_train train_cpu agreement
         gpu_tests)   # in order; the summary lists those a failure left unrun
[ "$MODE" = cuda ] && PLANNED=(wheels environment "${PLANNED[@]}")

# step NAME LIMIT_S CMD...: run CMD with its output in the log, within LIMIT_S and the deadline
step() {
  local name=$1 limit=$2 left rc t0
  shift 2
  left=$((BUDGET - ($(date +%s) - START)))
  [ "$left" -lt "$limit" ] && limit=$left
  printf '\n== %s (limit %ss): %s\n' "$name" "$limit" "$*" >> "$LOG"
  t0=$(date +%s.%N)
  if [ "$limit" -le 0 ]; then rc=124; echo "no time left" >> "$LOG"
  else timeout -k 10 "$limit" "$@" >> "$LOG" 2>&1; rc=$?; fi
  printf '%s\t%s\t%s\n' "$name" "$rc" "$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { print b - a }')" >> "$WORK/steps.tsv"
  echo "gpu_check: $name: $([ $rc = 0 ] && echo ok || echo "FAILED (exit $rc)")" >&2
  return $rc
}

if [ "$MODE" = cuda ]; then
  SITE=/tmp/cliper-site
  if ls .whl/*.whl > /dev/null 2>&1; then
    step wheels 90 "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target "$SITE" .whl/*.whl
  else
    step wheels 1 false   # scripts/gpu_wheels.sh was not run where this tree came from
  fi
  export PYTHONPATH=$REPO:$SITE
  step environment 90 "$PY" scripts/verify_cuda.py --cpu-fbgemm
fi
step imports 90 "$PY" -c "
import importlib, torch
mods = ['fbgemm_gpu', 'torchrec', 'tensordict', 'open_clip', 'faiss', 'webdataset', 'torchdata', 'torchvision']
print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available())
for m in mods:
    mod = importlib.import_module(m)
    print(m, getattr(mod, '__version__', '?'), getattr(mod, '__file__', ''))
"

D=$WORK/demo
TRAIN=(launch/train.py --config configs/train/freedom.yaml --config configs/train/demo.yaml --data "$D/dataset"
       --features "$D/features" seed=0 model.reg_weight=1e-3 "epochs=$EPOCHS" patience=1000)
step demo_catalog 120 "$PY" tools/make_demo.py --out "$D/raw" --items "$ITEMS" --users $((ITEMS / 2)) &&
step demo_convert 120 "$PY" launch/convert.py --format jsonl --catalog "$D/raw/catalog.jsonl" --images "$D/raw/images" \
  --interactions "$D/raw/interactions.csv" --out "$D/dataset" shard_size=100 &&
step demo_checkpoint 60 "$PY" tools/init_checkpoint.py --model configs/models/clip-tiny.json --out "$D/clip-tiny.pt" &&
step demo_pretrain 150 "$PY" launch/pretrain.py --config configs/pretrain/demo.yaml --data "$D/dataset" \
  --model configs/models/clip-tiny.json --init "$D/clip-tiny.pt" --out "$D/clip" "steps=$STEPS" \
  eval_every=$((STEPS / 2)) "device=$MODE" &&
step demo_encode 120 "$PY" launch/encode.py --data "$D/dataset" --out "$D/features" \
  --model configs/models/clip-tiny.json --pretrained "$D/clip/clip.pt" "device=$MODE" &&
step demo_train 150 "$PY" "${TRAIN[@]}" --out "$D/run-$MODE" "device=$MODE" &&
step train_cpu 180 "$PY" "${TRAIN[@]}" --out "$D/run-cpu-reference" device=cpu &&
step agreement 60 bash -c '"$0" -m cliper_dist.testing.devices train "$1" "$2" > "$3"' \
  "$PY" "$D/run-$MODE" "$D/run-cpu-reference" "$WORK/agreement.json"   # the summary reads the report

XDIST=()
[ "$MODE" = cuda ] && "$PY" -c "import xdist" 2>/dev/null && XDIST=(-n 4)   # CPU halves of the cases in parallel
export CLIPER_TEST_DEVICE=$MODE
step gpu_tests 400 "$PY" -m pytest -m gpu tests/e2e/test_gpu.py -q -p no:cacheprovider --junitxml="$WORK/junit.xml" "${XDIST[@]}" \
  ${GPU_CHECK_TESTS:+-k "$GPU_CHECK_TESTS"}

"$PY" - "$MODE" "$WORK" "$D" "$OUT/gpu_check.json" "$START" "${PLANNED[@]}" <<'PY' >> "$LOG" 2>&1
import json, sys, time
import xml.etree.ElementTree as ET
from pathlib import Path

mode, work, demo, dest, start = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4]), float(sys.argv[5])
planned = sys.argv[6:]
steps = []
for line in (work / "steps.tsv").read_text().splitlines():
    name, rc, seconds = line.split("\t")
    steps.append({"step": name, "ok": rc == "0", "exit": int(rc), "seconds": round(float(seconds or 0), 1)})
summary = {"mode": mode, "ok": bool(steps) and all(s["ok"] for s in steps), "total_s": round(time.time() - start, 1),
           "steps": steps, "not_run": [n for n in planned if n not in {s["step"] for s in steps}]}  # after a failed one
try:
    import torch
    summary["torch"] = torch.__version__
    summary["cuda"] = torch.version.cuda
    summary["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
except Exception as e:  # noqa: BLE001
    summary["torch"] = f"import failed: {e}"
try:
    summary["encode_dtype"] = json.loads((demo / "features" / "manifest.json").read_text())["compute_dtype"]
except (OSError, ValueError, KeyError):
    pass
if mode == "cuda" and summary.get("encode_dtype") != "bfloat16":  # precision=auto: bf16 autocast on CUDA
    summary["ok"] = False
for run in sorted(demo.glob("run-*")):
    try:
        final = json.loads((run / "final.json").read_text())
        summary.setdefault("demo_runs", {})[run.name] = {k: final[k] for k in ("test", "epochs", "s_per_epoch")}
    except (OSError, ValueError, KeyError):
        pass
try:
    summary["agreement"] = json.loads((work / "agreement.json").read_text())
except (OSError, ValueError) as e:  # the step did not run, or died before its report
    summary["agreement"] = {"agree": False, "problems": [f"no agreement report: {type(e).__name__}: {e}"]}
try:
    root = ET.parse(work / "junit.xml").getroot()
    cases = root.iter("testcase")
    results = {"passed": [], "failed": [], "skipped": []}
    for case in cases:
        kind = ("failed" if case.find("failure") is not None or case.find("error") is not None
                else "skipped" if case.find("skipped") is not None else "passed")
        results[kind].append(case.get("name"))
    summary["gpu_tests"] = {k: len(v) for k, v in results.items()} | {"failed_names": results["failed"],
                                                                        "skipped_names": results["skipped"]}
    summary["ok"] = summary["ok"] and not results["failed"] and bool(results["passed"])
except (OSError, ET.ParseError) as e:
    summary["gpu_tests"] = {"error": str(e)}
    summary["ok"] = False
dest.write_text(json.dumps(summary, indent=1) + "\n")
print(json.dumps(summary))
sys.exit(0 if summary["ok"] else 1)
PY
ok=$?
echo "gpu_check: $([ $ok = 0 ] && echo passed || echo FAILED) in $(($(date +%s) - START)) s; summary $OUT/gpu_check.json, log $LOG" >&2
rm -rf "$WORK"
exit $ok
