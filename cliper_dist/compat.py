"""Make torchvision importable on a CPU-only torch.

torchvision 0.28.0, the only release for torch 2.13, is a CUDA build. On CPU torch its C++
extension does not load, and `import torchvision` (hence open_clip and timm) fails while
registering fake kernels for ``torchvision::nms``: "operator torchvision::nms does not
exist". Declaring the two operator schemas it registers against lets the import finish.
The transforms open_clip uses are pure Python and work; ``torchvision.ops``/``io`` C++
kernels stay unavailable (nothing here calls them). Where the real extension loads (the
CUDA machines it was built for) this does nothing. In a venv built by scripts/install.sh for
CPU, a startup hook (scripts/torchvision_hook.py) calls it at the first import of torchvision;
the package's own callers call it explicitly as well, for environments without the hook.
"""

from __future__ import annotations

import importlib.util
import sys

import torch

_SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
)
_library = None  # keeps the torch.library registration alive for the process


def ensure_torchvision_importable() -> None:
    """Idempotent; call before the first import of torchvision, open_clip or timm."""
    global _library
    if _library is not None or "torchvision" in sys.modules or _extension_loads():
        return
    try:
        torch.ops.torchvision.nms  # noqa: B018  (already defined by someone else)
        return
    except (AttributeError, RuntimeError):
        pass
    _library = torch.library.Library("torchvision", "DEF")
    for schema in _SCHEMAS:
        _library.define(schema)


def _extension_loads() -> bool:
    """True when torchvision's compiled ops load against this torch (e.g. CUDA builds)."""
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return False
    import glob
    import os

    for location in spec.submodule_search_locations:
        for lib in glob.glob(os.path.join(location, "_C*.so")):
            try:
                torch.ops.load_library(lib)
                return True
            except (OSError, RuntimeError):
                return False
    return False
