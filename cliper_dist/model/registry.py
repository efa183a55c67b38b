"""``model.name`` -> recommender class. A new backbone is a ``Recommender`` subclass and a line here."""

from __future__ import annotations

from cliper_dist.errors import UserError
from cliper_dist.model.base import Recommender
from cliper_dist.model.dualgnn import DualGNN
from cliper_dist.model.freedom import FREEDOM
from cliper_dist.model.lattice import LATTICE
from cliper_dist.model.lightgcn import LightGCN
from cliper_dist.model.mmgcn import MMGCN
from cliper_dist.model.slmrec import SLMRec
from cliper_dist.model.vbpr import VBPR

MODELS: dict[str, type[Recommender]] = {"lightgcn": LightGCN, "freedom": FREEDOM, "vbpr": VBPR, "slmrec": SLMRec,
                                      "lattice": LATTICE, "dualgnn": DualGNN, "mmgcn": MMGCN}


def model_class(name: str) -> type[Recommender]:
    if name not in MODELS:
        raise UserError(f"model.name must be one of {', '.join(MODELS)}; got '{name}'")
    return MODELS[name]
