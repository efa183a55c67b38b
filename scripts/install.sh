#!/usr/bin/env bash
# Idempotent install of cliper-dist and its pinned stack into a local virtual environment.
#
#   CLIPER_VENV    where the environment lives (default: .venv in the repository)
#   CLIPER_TARGET  cpu | cuda | auto (default auto: cuda when `nvidia-smi -L` lists a GPU)
#   CLIPER_INSTALL_PLAN=1  print the pip steps for the target, one per line, and change nothing
#
# The CUDA target replaces a CPU stack in the same venv: pip counts an installed `2.13.0+cpu`
# as satisfying `torch==2.13.0`, and `fbgemm-gpu` and `fbgemm-gpu-cpu` share the package folder
# `fbgemm_gpu`, so the CPU builds are uninstalled first. It then checks that torch sees a GPU and
# that fbgemm's CUDA ops and torchrec load against that torch, and fails in one line otherwise.
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

PLAN=${CLIPER_INSTALL_PLAN:-0}
stamp="$VENV/.cliper-install"
fingerprint="$TARGET $(cat pyproject.toml scripts/install.sh scripts/torchvision_hook.py | sha256sum | cut -c1-16)"
if [ "$PLAN" != 1 ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$fingerprint" ]; then
  exit 0
fi

pip() {
  if [ "$PLAN" = 1 ]; then echo "pip $*"; else "$VENV/bin/python" -m pip --disable-pip-version-check -q "$@"; fi
}
fail() { echo "install.sh: error: $*" >&2; exit 1; }

if [ "$PLAN" = 1 ]; then echo "# install.sh plan: the $TARGET stack into $VENV"; else
  [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
  echo "install.sh: installing the $TARGET stack into $VENV" >&2
fi
if [ "$TARGET" = cpu ]; then
  # The +cpu local version can only match a CPU wheel; without a local wheel cache take it
  # from PyTorch's CPU index (override with TORCH_CPU_INDEX).
  pip install "torch==${TORCH_VERSION}+cpu" 2>/dev/null \
    || pip install "torch==${TORCH_VERSION}" --index-url "${TORCH_CPU_INDEX:-https://download.pytorch.org/whl/cpu}"
  pip install "fbgemm-gpu-cpu==${FBGEMM_VERSION}"
else
  # Remove the CPU stack this replaces. Uninstalling fbgemm-gpu-cpu after fbgemm-gpu would
  # delete files of both (one folder), hence first, and fbgemm-gpu is then reinstalled whole.
  installed=$([ "$PLAN" = 1 ] || "$VENV/bin/python" -m pip list 2>/dev/null || true)
  if [ "$PLAN" = 1 ] || grep -qiE '^fbgemm[-_]gpu[-_]cpu ' <<<"$installed"; then
    pip uninstall -y fbgemm-gpu-cpu
    reinstall=--force-reinstall   # fbgemm-gpu's files in the shared folder went with it
  fi
  if [ "$PLAN" = 1 ] || grep -qE '^torch +[^ ]*\+cpu' <<<"$installed"; then
    pip uninstall -y torch torchvision   # a +cpu torch: pip would count it as torch==${TORCH_VERSION}
  fi
  # The default index's torch for Linux is the CUDA build; a local +cpu wheel (find-links)
  # would win the tie, so find-links is off here (override the index with TORCH_CUDA_INDEX).
  PIP_FIND_LINKS="" pip install "torch==${TORCH_VERSION}" ${TORCH_CUDA_INDEX:+--index-url "$TORCH_CUDA_INDEX"}
  pip install ${reinstall:-} --no-deps "fbgemm-gpu==${FBGEMM_VERSION}"
fi
pip install --no-deps "torchrec==${TORCHREC_VERSION}"
pip install -e ".[test]"

# On CPU torch, torchvision's CUDA-only extension breaks `import torchvision` (cliper_dist/compat.py).
# A startup hook of the venv applies the fix at the first import of torchvision, in any interpreter.
if [ "$PLAN" = 1 ]; then
  [ "$TARGET" = cpu ] && echo "copy scripts/torchvision_hook.py into site-packages (startup hook)" \
    || echo "remove the CPU startup hook _cliper_torchvision_hook from site-packages"
  [ "$TARGET" = cuda ] && echo "verify: torch is a CUDA build and torch.cuda.is_available(); fbgemm_gpu's CUDA ops and torchrec import"
  exit 0
fi
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
if [ "$TARGET" = cuda ]; then
  # A driver too old for the CUDA build, or no GPU, would otherwise fall back to the CPU
  # silently and the gpu tests would skip: say so now, in one line.
  why=$("$VENV/bin/python" scripts/verify_cuda.py 2>&1) || fail "the CUDA stack is not usable: $(tail -n 1 <<<"$why")"
  echo "install.sh: $why" >&2
fi
echo "$fingerprint" > "$stamp"
