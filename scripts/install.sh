#!/usr/bin/env bash
# Idempotent install of cliper-dist and its pinned stack into a local virtual environment.
#
#   CLIPER_VENV    where the environment lives (default: .venv in the repository)
#   CLIPER_TARGET  cpu | cuda | auto (default auto: cuda when `nvidia-smi -L` lists a GPU)
#
# Why a script and not just `pip install -e .`: torch and fbgemm ship CPU and CUDA builds
# under one version number, and torchrec's metadata requires the CUDA-only `fbgemm-gpu`.
# Resolving them from pyproject would pull several GB of CUDA wheels onto a CPU machine, so
# they are installed here explicitly, per target, before the package itself.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

VENV=${CLIPER_VENV:-.venv}
TARGET=${CLIPER_TARGET:-auto}
if [ "$TARGET" = auto ]; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then TARGET=cuda; else TARGET=cpu; fi
fi
case "$TARGET" in cpu|cuda) ;; *) echo "install.sh: CLIPER_TARGET must be cpu, cuda or auto, got '$TARGET'" >&2; exit 2;; esac

TORCH_VERSION=2.13.0
FBGEMM_VERSION=1.8.0   # 1.9.0 needs torch 2.14 (undefined symbol on import)
TORCHREC_VERSION=1.8.0

stamp="$VENV/.cliper-install"
fingerprint="$TARGET $(cat pyproject.toml scripts/install.sh scripts/torchvision_hook.py | sha256sum | cut -c1-16)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$fingerprint" ]; then
  exit 0
fi

[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
pip() { "$VENV/bin/python" -m pip --disable-pip-version-check -q "$@"; }

echo "install.sh: installing the $TARGET stack into $VENV" >&2
if [ "$TARGET" = cpu ]; then
  # The +cpu local version can only match a CPU wheel; without a local wheel cache take it
  # from PyTorch's CPU index (override with TORCH_CPU_INDEX).
  pip install "torch==${TORCH_VERSION}+cpu" 2>/dev/null \
    || pip install "torch==${TORCH_VERSION}" --index-url "${TORCH_CPU_INDEX:-https://download.pytorch.org/whl/cpu}"
  pip install "fbgemm-gpu-cpu==${FBGEMM_VERSION}"
else
  pip install "torch==${TORCH_VERSION}" "fbgemm-gpu==${FBGEMM_VERSION}"
fi
pip install --no-deps "torchrec==${TORCHREC_VERSION}"
pip install -e ".[test]"

# On CPU torch, torchvision's CUDA-only extension breaks `import torchvision` (cliper_dist/compat.py).
# A startup hook of the venv applies the fix at the first import of torchvision, in any interpreter.
site=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
if [ "$TARGET" = cpu ]; then
  cp scripts/torchvision_hook.py "$site/_cliper_torchvision_hook.py"
  echo "import _cliper_torchvision_hook; _cliper_torchvision_hook.install()" > "$site/_cliper_torchvision_hook.pth"
else
  rm -f "$site/_cliper_torchvision_hook.py" "$site/_cliper_torchvision_hook.pth"
fi

if [ "$TARGET" = cpu ] && "$VENV/bin/python" -m pip list 2>/dev/null | grep -qiE '^nvidia-|^triton '; then
  echo "install.sh: a CUDA package entered the CPU environment; refusing to continue" >&2
  exit 1
fi
echo "$fingerprint" > "$stamp"
