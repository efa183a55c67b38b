"""``model.name`` -> model class, and through it the model's config and task. A new backbone is a
``Recommender`` subclass that names its config dataclass (``class M(Recommender, config=MConfig)``),
and a line here. A class's ``task`` picks what the train job builds around it: "cf" (a graph
recommender on column-sharded state, ``train/engine.py``), "seq" (``seq/trainer.py``) or "ctr"
(``ctr/trainer.py``)."""

from __future__ import annotations

from dataclasses import fields
from typing import Annotated, Any

from cliper_dist import config as config_lib
from cliper_dist.ctr.model import ShardedCtr, ShardedDCN
from cliper_dist.errors import UserError
from cliper_dist.model.base import ModelConfig, Recommender
from cliper_dist.model.dualgnn import DualGNN
from cliper_dist.model.freedom import FREEDOM
from cliper_dist.model.lattice import LATTICE
from cliper_dist.model.lightgcn import LightGCN
from cliper_dist.model.mmgcn import MMGCN
from cliper_dist.model.slmrec import SLMRec
from cliper_dist.model.vbpr import VBPR
from cliper_dist.seq.model import SeqModel

MODELS: dict[str, type[Recommender] | type[SeqModel] | type[ShardedCtr]] = {
    "lightgcn": LightGCN, "freedom": FREEDOM, "vbpr": VBPR, "slmrec": SLMRec, "lattice": LATTICE, "dualgnn": DualGNN,
    "mmgcn": MMGCN, "sasrec": SeqModel, "dlrm": ShardedCtr, "dcn": ShardedDCN}
DEFAULT = "freedom"

# Until each model had its own config (51d4357), one flat ModelConfig held the keys of all of them,
# in the order they were added; a config.yaml or checkpoint meta.json saved then holds exactly one
# of these prefixes of them.
FLAT_KEYS = ("name", "embedding_dim", "n_ui_layers", "n_mm_layers", "knn_k", "mm_image_weight", "edge_dropout",
             "reg_weight", "fusion", "tau", "knn", "hnsw_m", "hnsw_ef", "nce_temp", "ssl_temp", "ssl_alpha",
             "lambda_coeff", "user_knn")
FLAT_VERSIONS = [set(FLAT_KEYS[:n]) for n in (10, 13, 17, 18)]


def model_class(name: str) -> type[Recommender] | type[SeqModel] | type[ShardedCtr]:
    if name not in MODELS:
        raise UserError(f"model.name must be one of {', '.join(MODELS)}; got '{name}'")
    return MODELS[name]


def _from_flat(section: dict[str, Any]) -> dict[str, Any]:
    """A model section saved with the flat keys, as its model's own: a model read only its own keys."""
    if set(section) not in FLAT_VERSIONS:
        return section
    own = {f.name for f in fields(MODELS[section["name"]].config_class)}
    return {k: v for k, v in section.items() if k in own}


#: the annotation of a job's ``model`` section: the named model's config
ModelSection = Annotated[ModelConfig, config_lib.OneOf(lambda: {n: c.config_class for n, c in MODELS.items()},
                                                       DEFAULT, _from_flat)]


def model_config(name: str = DEFAULT, **keys: Any) -> ModelConfig:
    """The named model's config with ``keys`` set, checked as ``model.name=NAME model.KEY=...`` is."""
    return config_lib.build(ModelSection, {"name": name, **keys}, "model")
