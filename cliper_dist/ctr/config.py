"""The CTR models' config keys (``model.name=dlrm`` / ``dcn``): the network, the labels and inputs,
the sharding and the table optimizer. The dense part's Adam is the job's ``optim.*``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from cliper_dist.errors import UserError
from cliper_dist.model.base import FeatureConfig

Sharding = Literal["auto", "table_wise", "row_wise", "column_wise"]
TableOptimizer = Literal["rowwise_adagrad", "adagrad", "sgd"]


@dataclass
class DLRMConfig(FeatureConfig):
    """``model.name=dlrm``: torchrec's DLRM (bottom MLP, pairwise dot interaction, top MLP) on CTR
    samples (docs/ctr.md)."""

    name: Literal["dlrm"] = "dlrm"
    embedding_dim: int = 32  # every table's width (the dot interaction needs one) and the bottom MLP's output
    bottom_mlp: list[int] = field(default_factory=list)  # hidden sizes; embedding_dim is appended ([]: one linear map)
    bottom_out: Literal["linear", "relu"] = "linear"  # the bottom MLP's output layer (docs/ctr.md, "Model")
    top_mlp: list[int] = field(default_factory=lambda: [64, 32])  # hidden sizes; the logit is appended
    labels: Literal["implicit", "explicit"] = "implicit"  # explicit: rating >= rating_threshold; implicit: sampled negatives
    rating_threshold: float = 4.0  # explicit labels: a rating at least this is a click
    negatives: int = 4  # implicit labels: non-clicks sampled per interaction (train: per epoch; valid/test: once)
    fields: list[str] = field(default_factory=lambda: ["brand", "categories"])  # catalog fields as sparse ids ([]: ids only)
    min_count: int = 2  # a field value held by fewer items goes to the OOV id
    sharding: Sharding = "auto"  # auto: torchrec's planner chooses per table; else forced (but row_wise_min_rows)
    row_wise_min_rows: int = 0  # a table of at least this many rows is row_wise whatever `sharding` says (0: off)
    table_optimizer: TableOptimizer = "rowwise_adagrad"  # fbgemm's, fused into the backward (CPU: no Adam)
    table_lr: float = 0.05
    table_eps: float = 1e-8
    eval_batch: int = 4096  # samples per rank per evaluation batch

    # keys added after runs were saved, and what those runs did (config.refuse_changed); a key
    # added to DCNConfig alone extends this dict there
    SAVED_WITHOUT: ClassVar[dict[str, Any]] = {"bottom_out": "relu", "row_wise_min_rows": 0}

    def check(self) -> None:
        """One line per misconfiguration, before anything is loaded or written."""
        for key in ("embedding_dim", "eval_batch", "min_count"):
            if getattr(self, key) < 1:
                raise UserError(f"model.{key} must be >= 1; got {getattr(self, key)}")
        if self.row_wise_min_rows < 0:
            raise UserError(f"model.row_wise_min_rows must be >= 0 (0: off); got {self.row_wise_min_rows}")
        if any(n < 1 for n in [*self.bottom_mlp, *self.top_mlp]) or not self.top_mlp:
            raise UserError(f"model.bottom_mlp / model.top_mlp: positive sizes, top_mlp not empty; got "
                            f"{self.bottom_mlp} / {self.top_mlp}")
        if self.fusion == "mlp":
            raise UserError("model.fusion=mlp is trained with FREEDOM only; the CTR models read fixed features: "
                            "fusion sa, sum or concat")


@dataclass
class DCNConfig(DLRMConfig):
    """``model.name=dcn``: DLRM with torchrec's low-rank DCN-v2 cross network as the interaction."""

    name: Literal["dcn"] = "dcn"  # type: ignore[assignment]
    dcn_layers: int = 3  # cross layers
    dcn_rank: int = 16  # rank of each cross layer's weight
