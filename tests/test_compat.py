"""The torchvision import fix, each case in a fresh interpreter (imports are process state)."""

import subprocess
import sys

from tests.conftest import child_env

FIXED = """
from cliper_dist.compat import ensure_torchvision_importable, _extension_loads
ensure_torchvision_importable(); ensure_torchvision_importable()
import torchvision, open_clip
from torchvision import transforms
t = transforms.Compose([transforms.Resize(8), transforms.ToTensor()])
from PIL import Image
print(tuple(t(Image.new("RGB", (16, 16))).shape))
print(_extension_loads())
"""

# The venv's startup hook taken out again, to see the import it fixes.
UNHOOKED = "import sys; sys.meta_path[:] = [f for f in sys.meta_path if getattr(f, '__name__', '') != 'TorchvisionHook']\n"


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=child_env(), timeout=120)


def test_fix_makes_torchvision_and_open_clip_importable():
    result = _python(FIXED)
    assert result.returncode == 0, result.stderr[-2000:]
    shape, extension_loads = result.stdout.strip().splitlines()[-2:]
    assert shape == "(3, 8, 8)"
    if extension_loads == "False":
        # Where the compiled extension cannot load, the import without the venv's hook really fails.
        plain = _python(UNHOOKED + "import torchvision")
        assert plain.returncode != 0 and "torchvision::nms does not exist" in plain.stderr


def test_venv_imports_open_clip_and_torchvision_plainly():
    # install.sh's startup hook (scripts/torchvision_hook.py) applies the fix on CPU targets.
    result = _python("import open_clip, torchvision")
    assert result.returncode == 0, result.stderr[-2000:]


def test_startup_hook_does_not_import_torch():
    # The hook runs in every interpreter of the venv, pip included; torch costs seconds.
    assert _python("import sys; print('torch' in sys.modules)").stdout.strip() == "False"
