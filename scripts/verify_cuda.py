"""Check the installed CUDA stack (scripts/install.sh CLIPER_TARGET=cuda; scripts/gpu_check.sh).

Prints one line of what was found; on failure, the last line says what is wrong, and the
exit status is 1. ``--cpu-fbgemm`` accepts the CPU build of fbgemm (the lent GPU machine,
where the CUDA fbgemm wheel is too large to carry): the CUDA fbgemm ops are then not checked.
"""

from __future__ import annotations

import sys


def main(argv: list[str]) -> int:
    cpu_fbgemm = "--cpu-fbgemm" in argv
    import torch

    if torch.version.cuda is None:
        print(f"torch {torch.__version__} is a CPU build (torch.version.cuda is None)")
        return 1
    if not torch.cuda.is_available():
        print(f"torch {torch.__version__} (CUDA {torch.version.cuda}) sees no usable GPU: torch.cuda.is_available() "
              "is False (no GPU, or a driver older than this CUDA build needs; see nvidia-smi)")
        return 1
    x = torch.arange(4, device="cuda")
    try:
        import fbgemm_gpu  # noqa: F401  (registers torch.ops.fbgemm)

        lengths = torch.ops.fbgemm.asynchronous_complete_cumsum(x if not cpu_fbgemm else x.cpu())
        assert lengths.tolist() == [0, 0, 1, 3, 6]
    except Exception as e:  # noqa: BLE001 - an undefined symbol, a missing CUDA kernel: one line
        print(f"fbgemm_gpu does not load or run against torch {torch.__version__}: {_first_line(e)}")
        return 1
    try:
        import torchrec  # noqa: F401
    except Exception as e:  # noqa: BLE001
        print(f"torchrec does not import against torch {torch.__version__}: {_first_line(e)}")
        return 1
    kind = "CPU fbgemm ops" if cpu_fbgemm else "fbgemm CUDA ops"
    print(f"torch {torch.__version__} (CUDA {torch.version.cuda}) on {torch.cuda.get_device_name(0)} "
          f"x{torch.cuda.device_count()}; {kind} and torchrec {getattr(torchrec, '__version__', '?')} load")
    return 0


def _first_line(e: Exception) -> str:
    """The exception's type and first line: install.sh prints one line."""
    return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
