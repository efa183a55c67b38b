"""What a CTR job reads from disk: interactions, the catalog's fields, the item features.

Every refusal is one ``UserError`` line raised before the job writes anything: explicit labels
without a rating column or with a threshold outside the ratings' range, a categorical field no
item has, features whose row count is not the catalog's.
"""

from __future__ import annotations

import torch

from cliper_dist.ctr.catalog import build_fields
from cliper_dist.ctr.config import DLRMConfig
from cliper_dist.ctr.data import CtrData, LabelConfig, check_labels, standardise
from cliper_dist.data.item_features import Features, load_features
from cliper_dist.data.recdata import load_interactions


def item_dense(features: Features, fusion: str, tau: float) -> torch.Tensor:
    """Each item's dense vector: the (fused) text feature and the image feature side by side,
    standardised per column."""
    text, image = features.modalities(fusion, tau)
    parts = [v.whole() for v in (text, image) if v is not None]
    return standardise(torch.cat(parts, 1).float())


def load_ctr_data(data: str, features: str, inputs: DLRMConfig, seed: int) -> CtrData:
    """The CTR samples of dataset ``data``; ``features`` ("" = IDs and counts only) is any directory
    the train job accepts as ``--features`` (encode output, adapted features, MMRec folder)."""
    inter, num_users, num_items, source = load_interactions(data)
    inter.validate(num_users, num_items, source)
    labels = LabelConfig(inputs.labels, inputs.rating_threshold, inputs.negatives)
    check_labels(inter, labels, source)  # before the catalog and features are read
    fields = build_fields(data, num_items, list(inputs.fields), inputs.min_count)
    dense = item_dense(load_features(features, num_items), inputs.fusion, inputs.tau) if features else None
    return CtrData.build(inter, num_users, num_items, labels, seed, fields, dense, source)
