import logging

import numpy as np
import pytest

from cliper_dist.data.feature_stats import check_modalities, modality_stats
from cliper_dist.data.features import ItemVectors
from cliper_dist.errors import UserError


def vectors(a: np.ndarray, block: int = 7) -> ItemVectors:
    v = ItemVectors.of(a)
    return ItemVectors(v.num_items, v.width, v.read, block)  # small blocks: the pass crosses boundaries


def test_stats_match_a_direct_computation():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(50, 6)).astype(np.float32) * 100
    a[10] = a[3]
    a[20] = a[3]
    a[:, 4] = 1.0  # a constant dimension
    a[30] = 1.0  # a constant row
    s = modality_stats(vectors(a), "image")
    assert (s.identical_rows, s.largest_group, s.constant_rows, s.constant_columns) == (3, 3, 1, 1)
    np.testing.assert_allclose(s.variance, a.astype(np.float64).var(axis=0), rtol=1e-9, atol=1e-12)


def test_thresholds_warn_then_refuse(caplog):
    rng = np.random.default_rng(1)
    a = rng.normal(size=(40, 8)).astype(np.float32)
    a[:4] = a[39]  # 5 of 40 share one row: warn
    with caplog.at_level(logging.WARNING, logger="cliper_dist"):
        check_modalities({"text": vectors(a)}, accept=False)
    assert "text features: 5 of 40 items share their row" in caplog.text
    a[:25] = a[39]
    with pytest.raises(UserError, match=r"^text features are degenerate: 26 of 40 items .* Set "
                                        r"model.accept_degenerate_features=true"):
        check_modalities({"text": vectors(a), "image": None}, accept=False)
    assert check_modalities({"text": vectors(a)}, accept=True)[0].identical_rows == 26


def test_rows_equal_but_for_the_last_bits_count_as_identical():
    rng = np.random.default_rng(2)
    row = rng.normal(size=16).astype(np.float32)
    a = np.repeat(row[None], 30, axis=0)
    a[1::2] = np.nextafter(a[1::2], np.float32(np.inf))  # one ulp apart, as batched encoding can leave them
    s = modality_stats(vectors(a), "image")
    assert s.identical_rows == 30 and s.constant_columns == 16
