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


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=child_env(), timeout=120)


def test_fix_makes_torchvision_and_open_clip_importable():
    result = _python(FIXED)
    assert result.returncode == 0, result.stderr[-2000:]
    shape, extension_loads = result.stdout.strip().splitlines()[-2:]
    assert shape == "(3, 8, 8)"
    if extension_loads == "False":
        # Where the compiled extension cannot load, the unpatched import really fails.
        plain = _python("import torchvision")
        assert plain.returncode != 0 and "torchvision::nms does not exist" in plain.stderr
