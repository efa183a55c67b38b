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
    note: str | None = None
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
    ("inner.k=@x", "override 'inner.k=@x': not a YAML value"),
    ("mode=yes", "config key 'mode' must be one of ['sa', 'sum']; got 'yes'"),
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


def test_every_shipped_config_loads():
    from pathlib import Path

    from cliper_dist.adapt.job import AdaptConfig
    from cliper_dist.encode.encoder import resolve_model_name
    from cliper_dist.encode.job import EncodeConfig
    from cliper_dist.pretrain.job import PretrainConfig
    from cliper_dist.train.job import TrainConfig

    root = Path(__file__).resolve().parents[1] / "configs"
    jobs = {"adapt": AdaptConfig, "encode": EncodeConfig, "pretrain": PretrainConfig, "train": TrainConfig}
    paths = sorted(root.rglob("*.*"))
    assert {p.parent.name for p in paths} == {*jobs, "models"}, "a config directory without a check"
    for path in paths:
        if path.parent.name == "models":
            assert resolve_model_name(str(path)) == path.stem  # an open_clip architecture
        else:
            config.load(jobs[path.parent.name], path)
    # a model's file, then a dataset's: the demo's layer holds keys every model has
    from cliper_dist.model.registry import MODELS

    for model in MODELS:
        cfg = config.load(TrainConfig, [root / "train" / f"{model}.yaml", root / "train" / "demo.yaml"])
        assert (cfg.model.name, cfg.model.embedding_dim, cfg.optim.lr, cfg.epochs) == (model, 32, 0.01, 100)


def test_later_files_win_key_by_key(tmp_path):
    first, second = tmp_path / "a.yaml", tmp_path / "b.yaml"
    first.write_text("name: a\nflag: true\ninner:\n  k: 3\n  tau: 0.5\n")
    second.write_text("name: b\ninner:\n  k: 4\n")
    cfg = config.load(Outer, [first, second], ["inner.k=5"])
    assert (cfg.name, cfg.flag, cfg.inner.k, cfg.inner.tau) == ("b", True, 5, 0.5)
    assert config.from_cli(Outer, ["--config", str(first), "--config", str(second)], "test", ()).name == "b"


def test_command_line_flags_and_overrides_in_any_order(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("name: from-file\ninner:\n  k: 3\n")
    cfg = config.from_cli(Outer, ["inner.k=5", "--config", str(path), "--name", "flag", "inner.tau=2"],
                          "test", ("name",))
    assert cfg.name == "flag" and cfg.inner.k == 5 and cfg.inner.tau == 2.0
    # An override given after a flag for the same key wins (flags apply first).
    assert config.from_cli(Outer, ["--name", "flag", "name=override"], "test", ("name",)).name == "override"


@pytest.mark.parametrize("text", ["yes", "no", "on", "123", "010", "1e3", "2024-01-01", "null", "~", "@x", "[a]"])
def test_str_keys_take_command_line_text_as_typed(text):
    # YAML would read these as a bool, numbers (010 octal), a date, None, a syntax error, a list.
    assert config.from_cli(Outer, ["--name", text], "test", ("name",)).name == text
    assert config.load(Outer, None, [f"name={text}"]).name == text


@pytest.mark.parametrize("text, value", [("null", None), ("~", None), ("", ""), ("no", "no"), ("7", "7")])
def test_a_key_that_may_be_none_still_takes_null(text, value):
    assert config.load(Outer, None, [f"note={text}"]).note == value


def test_job_path_flags_stay_strings():
    from cliper_dist.train.job import TrainConfig

    cfg = config.from_cli(TrainConfig, ["--out", "yes", "--data", "123", "features=off"], "test", ("out", "data"))
    assert (cfg.out, cfg.data, cfg.features) == ("yes", "123", "off")


def test_flags_take_dashes_and_their_help_is_the_field_comment(capsys):
    from cliper_dist.convert.job import ConvertConfig

    cfg = config.from_cli(ConvertConfig, ["--item-map", "a.csv", "--user_map", "u.csv"], "test", ("item_map", "user_map"))
    assert (cfg.item_map, cfg.user_map) == ("a.csv", "u.csv")
    with pytest.raises(SystemExit):
        config.from_cli(ConvertConfig, ["--help"], "test", ("item_map",))
    assert "--item-map ITEM_MAP, --item_map ITEM_MAP" in capsys.readouterr().out.replace("\n", " ")


def test_job_choices_fail_at_load_naming_the_key_and_the_choices():
    # config.load runs before a launcher touches any data, so these fail first
    from cliper_dist.encode.job import EncodeConfig
    from cliper_dist.train.job import TrainConfig

    for cls, override, message in [
        (TrainConfig, "model.name=bpr", "config key 'model.name' must be one of ['lightgcn', 'freedom', 'vbpr', 'slmrec', 'lattice', 'dualgnn', 'mmgcn', 'sasrec', 'dlrm', 'dcn']; got 'bpr'"),
        (TrainConfig, "model.fusion=max",
         "config key 'model.fusion' must be one of ['sa', 'sum', 'concat', 'mlp']; got 'max'"),
        (TrainConfig, "optim.rows=some", "config key 'optim.rows' must be one of ['all', 'touched']; got 'some'"),
        (TrainConfig, "resume=yes", "config key 'resume' must be one of ['auto', 'never']; got 'yes'"),
        (TrainConfig, "device=gpu", "config key 'device' must be one of ['auto', 'cpu', 'cuda']; got 'gpu'"),
        (EncodeConfig, "precision=fp8", "config key 'precision' must be one of ['auto', 'fp32', 'bf16', 'fp16']"),
        (EncodeConfig, "text.mode=wrap", "config key 'text.mode' must be one of ['chunk', 'truncate']; got 'wrap'"),
    ]:
        with pytest.raises(ConfigError) as e:
            config.load(cls, None, ["data=/no/such/dir", override])
        assert str(e.value).startswith(message), (override, str(e.value))


def test_choice_types_match_the_registries():
    import typing

    from cliper_dist.data.fusion import FUSIONS
    from cliper_dist.model.base import FeatureConfig
    from cliper_dist.model.registry import MODELS

    assert set(typing.get_args(typing.get_type_hints(FeatureConfig)["fusion"])) == set(FUSIONS)
    for name, cls in MODELS.items():  # a model's config names it
        assert typing.get_args(typing.get_type_hints(cls.config_class)["name"]) == (name,)
