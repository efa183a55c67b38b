"""Each model's own config: ``model.name`` picks it, a key of another model is refused in one
line naming both, and configs saved before per-model configs still load and resume."""

from __future__ import annotations

import dataclasses
import typing

import pytest
import yaml

from cliper_dist import config
from cliper_dist.config import ConfigError
from cliper_dist.model.registry import FLAT_KEYS, MODELS, ModelSection, model_config
from cliper_dist.train.job import TrainConfig

# The flat ModelConfig every model shared at 51d4357, as its config.yaml held it.
FLAT = {"name": "lightgcn", "embedding_dim": 32, "n_ui_layers": 2, "n_mm_layers": 1, "knn_k": 10, "knn": "exact",
        "hnsw_m": 16, "hnsw_ef": 64, "mm_image_weight": 0.1, "edge_dropout": 0.8, "reg_weight": 0.001,
        "fusion": "sa", "tau": 0.1, "nce_temp": 0.2, "ssl_temp": 0.1, "ssl_alpha": 0.01, "lambda_coeff": 0.9,
        "user_knn": 40}


def test_the_name_picks_the_models_own_keys():
    cfg = config.load(TrainConfig, None, ["model.name=slmrec", "model.ssl_alpha=0.3"])
    assert type(cfg.model) is MODELS["slmrec"].config_class and cfg.model.ssl_alpha == 0.3
    assert set(config.to_dict(cfg)["model"]) == {f.name for f in dataclasses.fields(cfg.model)}
    assert config.load(TrainConfig).model == model_config("freedom")  # the default model


@pytest.mark.parametrize("overrides, message", [
    (["model.name=lightgcn", "model.knn_k=5"],
     "config key 'model.knn_k' belongs to freedom and lattice, not lightgcn "
     "(lightgcn's keys: embedding_dim, n_ui_layers, reg_weight)"),
    (["model.ssl_temp=0.5"], "config key 'model.ssl_temp' belongs to slmrec, not freedom (freedom's keys: "),
    (["model.name=vbpr", "model.n_ui_layers=3"], "config key 'model.n_ui_layers' belongs to lightgcn, freedom, "
                                                 "slmrec, lattice and mmgcn, not vbpr"),
    (["model.name=vbpr", "model.bogus=1"], "unknown config key 'model.bogus' (vbpr's keys: "),
])
def test_a_key_of_another_model_is_refused_in_one_line_naming_both(tmp_path, overrides, message):
    with pytest.raises(ConfigError) as e:
        config.load(TrainConfig, None, overrides)
    assert str(e.value).startswith(message) and "\n" not in str(e.value), str(e.value)
    path = tmp_path / "c.yaml"  # the same from a file (later files and overrides may set the name)
    path.write_text(yaml.safe_dump({"model": dict(o.split("=", 1)[0].split(".")[1:] + [o.split("=", 1)[1]]
                                                  for o in overrides)}))
    with pytest.raises(ConfigError, match=r"^" + message.replace("(", r"\(").replace(")", r"\)")):
        config.load(TrainConfig, path)
    with pytest.raises(ConfigError, match="belongs to freedom and lattice, not lightgcn"):
        model_config("lightgcn", knn_k=5)


def test_a_key_has_one_type_in_every_model():
    types: dict[str, typing.Any] = {}
    for cls in MODELS.values():
        hints = typing.get_type_hints(cls.config_class)
        for key in (f.name for f in dataclasses.fields(cls.config_class)):
            if key != "name":
                assert types.setdefault(key, hints[key]) == hints[key], key


def test_configs_saved_with_the_flat_keys_still_load_and_resume(tmp_path):
    saved = {**config.to_dict(config.load(TrainConfig, None, ["out=x"])), "model": FLAT}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(saved))
    cfg = config.load(TrainConfig, tmp_path / "config.yaml")
    assert cfg.model == model_config("lightgcn", embedding_dim=32, reg_weight=0.001)
    config.refuse_changed(cfg, {"config": saved}, set(), "a run")  # resumes
    changed = {**saved, "model": {**FLAT, "reg_weight": 0.01}}
    with pytest.raises(Exception, match=r"model.reg_weight: 0.01 -> 0.001"):
        config.refuse_changed(cfg, {"config": changed}, set(), "a run")
    for n in (10, 13, 17):  # the flat keys of older versions
        assert config.build(ModelSection, {k: FLAT[k] for k in FLAT_KEYS[:n]}, "model") == cfg.model


@pytest.mark.parametrize("model, added, before, other", [
    ("sasrec", "train_examples", "window", "prefix"),  # 4e962e6: window batches are those before it
    ("sasrec", "norm", "pre", "post"),  # pre-LN blocks before it
    ("dlrm", "bottom_out", "relu", "linear"),  # ec694fc: torchrec's ReLU output before it
    ("dcn", "row_wise_min_rows", 0, 5),  # 25c56b9: no table forced row_wise before it
])
def test_a_run_saved_before_a_key_existed_resumes_under_the_value_it_ran_with(tmp_path, model, added, before,
                                                                             other):
    def run_config(value):
        return config.load(TrainConfig, None, ["out=x", f"model.name={model}", f"model.{added}={value}"])

    saved = config.to_dict(run_config(before))
    del saved["model"][added]  # as a run saved before the key existed wrote it
    config.refuse_changed(run_config(before), {"config": saved}, set(), "a run")  # resumes
    with pytest.raises(Exception, match=rf"model.{added}: {before!r} -> {other!r}"):
        config.refuse_changed(run_config(other), {"config": saved}, set(), "a run")
    # and a tool reading the run reads it so (a test of load_saved only where `before` is not today's default)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(saved))
    assert getattr(config.load_saved(TrainConfig, tmp_path / "config.yaml").model, added) == before
    assert getattr(config.load_saved(TrainConfig, tmp_path / "config.yaml", [f"model.{added}={other}"]).model,
                   added) == other
