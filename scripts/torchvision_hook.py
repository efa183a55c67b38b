"""Startup hook of the CPU venv: ``import torchvision`` (hence open_clip, timm) works anywhere.

install.sh copies this file into the venv's site-packages as ``_cliper_torchvision_hook``
and a ``.pth`` line installs it, so it runs at the start of every interpreter of the venv,
pip included. It therefore imports nothing itself: only the first import of torchvision
pays for ``cliper_dist.compat`` (and torch), which does nothing where the real extension loads.
"""

from __future__ import annotations

import sys


class TorchvisionHook:
    """A ``sys.meta_path`` finder that fixes torchvision on its first import, then leaves.
    It finds nothing itself, so the normal finders import torchvision as usual."""

    @classmethod
    def find_spec(cls, name: str, path=None, target=None) -> None:
        if name == "torchvision":
            sys.meta_path.remove(cls)  # first, so compat's own lookup of torchvision passes by
            from cliper_dist.compat import ensure_torchvision_importable

            ensure_torchvision_importable()
        return None


def install() -> None:
    if TorchvisionHook not in sys.meta_path:
        sys.meta_path.insert(0, TorchvisionHook)
