"""Every command of the README, pasted as is into a clean shell (only PATH and HOME), in a
directory laid out like a checkout where command 1 has written the demo's raw catalog and
checkpoint. The two setup commands (install + demo, install + tests) are not pasted here."""

from __future__ import annotations

import pytest

import json
import os
import re
import subprocess
import sys

from tests.conftest import REPO

SETUP = ("bash scripts/demo.sh", "bash scripts/test.sh")


def readme_commands() -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", (REPO / "README.md").read_text(), flags=re.S)
    commands = []
    for block in blocks:
        for command in block.replace("\\\n", " ").splitlines():
            command = command.split("  #")[0].strip()
            if command and not command.startswith(SETUP):
                commands.append(command)
    return commands


def test_readme_names_the_whole_pipeline():
    tools = " ".join(readme_commands())
    for part in ("launch/convert.py", "launch/pretrain.py", "launch/encode.py", "launch/train.py", "tools/recommend.py"):
        assert part in tools


@pytest.mark.slow  # 2 minutes: the README's commands, each pasted
def test_every_readme_command_works_when_pasted(tmp_path):
    for name in (".venv", "configs", "tools", "launch"):
        (tmp_path / name).symlink_to(REPO / name)
    demo = tmp_path / "runs" / "demo"
    for args in (["tools/make_demo.py", "--out", demo / "raw"],  # what command 1 writes first
                 ["tools/init_checkpoint.py", "--model", "configs/models/clip-tiny.json", "--out",
                  demo / "clip-tiny.pt"]):
        subprocess.run([sys.executable, *map(str, args)], cwd=tmp_path, check=True, capture_output=True)
    clean = {"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", str(tmp_path))}
    outputs = {}
    for command in readme_commands():
        result = subprocess.run(["env", "-i", *[f"{k}={v}" for k, v in clean.items()], "bash", "-c", command],
                                cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, f"{command}\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
        outputs[command.split()[1]] = result.stdout
    assert (tmp_path / "runs" / "mine" / "run" / "final.json").is_file()
    # recommendations speak the catalog's ids: users in, item ids and titles out
    recs = [json.loads(line) for line in outputs["tools/recommend.py"].splitlines()]
    assert [r["user"] for r in recs] == ["U00000", "U00001"] and [r["user_index"] for r in recs] == [0, 1]
    assert all(len(r["items"]) == 5 and all(i.startswith("DEMO") for i in r["items"]) and all(r["titles"])
               for r in recs)
