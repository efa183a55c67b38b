from dataclasses import dataclass, field
from typing import Literal

import pytest

from cliper_dist import config
from cliper_dist.config import ConfigError


@dataclass
class Inner:
    k: int = 10
    tau: float = 0.1
    names: list[str] = field(default_factory=lambda: ["a"])


@dataclass
class Outer:
    name: str = "x"
    flag: bool = False
    mode: Literal["sa", "sum"] = "sa"
    inner: Inner = field(default_factory=Inner)


def test_yaml_then_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("name: run1\ninner:\n  k: 3\n")
    cfg = config.load(Outer, path, ["inner.tau=1", "flag=true", "inner.names=[b, c]", "mode=sum"])
    assert cfg == Outer(name="run1", flag=True, mode="sum", inner=Inner(k=3, tau=1.0, names=["b", "c"]))
    assert isinstance(cfg.inner.tau, float)


@pytest.mark.parametrize("text, value", [("1e-3", 1e-3), ("2E+2", 200.0), ("-.5e1", -5.0), ("3", 3.0)])
def test_floats_in_exponent_form(text, value):
    # YAML 1.1 reads an exponent without a dot as a string; a float key still takes it
    assert config.load(Outer, None, [f"inner.tau={text}"]).inner.tau == value


@pytest.mark.parametrize("override, message", [
    ("inner.kk=3", "unknown config key 'inner.kk'"),
    ("nme=3", "unknown config key 'nme'"),
    ("inner.k=ten", "config key 'inner.k' must be int"),
    ("inner.k=1.5", "config key 'inner.k' must be int"),
    ("inner.k=1e3", "config key 'inner.k' must be int"),
    ("inner.tau=1e-3x", "config key 'inner.tau' must be float"),
    ("flag=1", "config key 'flag' must be bool"),
    ("mode=mlp", "config key 'mode' must be one of ['sa', 'sum']"),
    ("inner=3", "config key 'inner' is a section"),
    ("inner.k", "is not of the form key.sub=value"),
])
def test_bad_overrides_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        config.load(Outer, None, [override])


def test_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        config.load(Outer, tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("inner: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        config.load(Outer, bad)
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("inner:\n  bogus: 1\n")
    with pytest.raises(ConfigError, match="unknown config key 'inner.bogus'"):
        config.load(Outer, unknown)


def test_saved_config_loads_back_identically(tmp_path):
    cfg = config.load(Outer, None, ["inner.k=7", "name=saved"])
    config.save(cfg, tmp_path / "resolved.yaml")
    assert config.load(Outer, tmp_path / "resolved.yaml") == cfg


def test_shipped_configs_are_valid():
    from pathlib import Path

    from cliper_dist.train.job import TrainConfig

    for path in sorted((Path(__file__).resolve().parents[2] / "configs" / "train").glob("*.yaml")):
        config.load(TrainConfig, path)


def test_command_line_flags_and_overrides_in_any_order(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("name: from-file\ninner:\n  k: 3\n")
    cfg = config.from_cli(Outer, ["inner.k=5", "--config", str(path), "--name", "flag", "inner.tau=2"],
                          "test", {"name": "run name"})
    assert cfg.name == "flag" and cfg.inner.k == 5 and cfg.inner.tau == 2.0
    # An override given after a flag for the same key wins (flags apply first).
    assert config.from_cli(Outer, ["--name", "flag", "name=override"], "test", {"name": ""}).name == "override"
