#!/usr/bin/env bash
# The wheels scripts/gpu_check.sh installs on the lent GPU machine (Python 3.12, torch 2.11.0+cu130,
# no network, no torchrec/fbgemm/open_clip/webdataset/faiss): download them here into .whl/ (git
# ignores it, the device tool carries it), drop any other wheel there, and check that they and the
# working tree fit the 64 MiB a call may carry. Prints the list with sizes; exit 1 if over.
#
#   scripts/gpu_wheels.sh [--list]   --list: only print the pinned list
#
# Versions match torch 2.11, not this machine's 2.13: fbgemm releases pair with torch minors
# (1.5.0 <-> 2.10 in fbgemm's compatibility table, 1.8.0 <-> 2.13 and 1.9.0 <-> 2.14 measured here),
# so 1.6.0 <-> 2.11, and torchrec 1.6.x with fbgemm 1.6. Everything else is pure Python or does not
# link torch (tensordict's _C needs only libstdc++; faiss-cpu is torch-free). Not carried, the
# machine has them: numpy, pyyaml, pillow, tqdm, timm, huggingface_hub, safetensors, regex,
# matplotlib, pyre-extensions, typing-inspect, lightning-utilities, portalocker, requests, pytest.
# Too large to carry: fbgemm-gpu (the CUDA build, hundreds of MB), hence fbgemm's CPU build.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

WHEELS=(
  fbgemm-gpu-cpu==1.6.0     # torchrec's ops; CPU kernels only (docs/gpu.md: what that leaves unverified)
  torchrec==1.6.1
  tensordict==0.12.4        # torchrec's; orjson/importlib_metadata are optional to it, not carried
  pyvers==0.2.3
  torchmetrics==1.0.3       # torchrec pins it
  iopath==0.1.9             # 0.1.10 has no wheel
  open-clip-torch==3.3.0
  ftfy==6.3.1
  wcwidth==0.2.13
  webdataset==1.0.2
  braceexpand==0.1.7
  torchdata==0.11.0
  faiss-cpu==1.15.1
)
LIMIT=$((64 * 1024 * 1024))
DIR=.whl

if [ "${1:-}" = --list ]; then printf '%s\n' "${WHEELS[@]}"; exit 0; fi

exclude="$(git rev-parse --git-common-dir)/info/exclude"
grep -qxF "/$DIR/" "$exclude" 2>/dev/null || echo "/$DIR/" >> "$exclude"
mkdir -p "$DIR"
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$DIR" "${WHEELS[@]}" 2>&1 \
  | grep -v "is ignored: it is neither a file nor a directory" >&2 || true

# keep exactly the pinned wheels: a second version of one stops the whole install there
python3 - "$DIR" "$LIMIT" "${WHEELS[@]}" <<'PY'
import re, subprocess, sys
from pathlib import Path

folder, limit, pins = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
norm = lambda s: re.sub(r"[-_.]+", "_", s).lower()
wanted = {norm(p.split("==")[0]): p.split("==")[1] for p in pins}
kept, missing = [], []
for whl in sorted(folder.glob("*.whl")):
    name, version = whl.name.split("-")[:2]
    if wanted.get(norm(name)) == version:
        kept.append(whl)
    else:
        whl.unlink()
found = {norm(w.name.split("-")[0]) for w in kept}
missing = [f"{n}=={v}" for n, v in wanted.items() if n not in found]
tree = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                      capture_output=True, check=True).stdout.split(b"\0")
tree_bytes = sum(Path(p.decode()).stat().st_size for p in tree if p and Path(p.decode()).is_file())
total = sum(w.stat().st_size for w in kept)
mib = lambda b: f"{b / 2**20:6.2f} MiB"
for w in sorted(kept, key=lambda w: -w.stat().st_size):
    print(f"{mib(w.stat().st_size)}  {w.name}")
print(f"{mib(total)}  {len(kept)} wheels")
print(f"{mib(tree_bytes)}  the working tree (tracked and untracked files git does not ignore)")
print(f"{mib(total + tree_bytes)}  carried in all, of {mib(limit).strip()}")
if missing:
    sys.exit(f"gpu_wheels.sh: error: no wheel downloaded for {', '.join(missing)}")
if total + tree_bytes > limit:
    sys.exit(f"gpu_wheels.sh: error: {mib(total + tree_bytes).strip()} is over the {mib(limit).strip()} a call "
             f"carries; the largest wheels are listed first")
PY
