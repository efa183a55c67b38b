"""Is a modality's feature table informative? Identical rows, constant rows, per-dimension variance.

An item kNN graph over features in which most rows are the same (every item encoded with
the default image, say) is arbitrary: ties everywhere, every item gets the same neighbours.
``check_modalities`` measures each modality before a model builds its graph and refuses
(one line, naming the modality, the counts and ``model.accept_degenerate_features``) past
``REFUSE_SHARE``, warns past ``WARN_SHARE``. ``tools/view_report.py`` reports the same
statistics for a feature store.

One pass, a block of items at a time (``ItemVectors``): rows are hashed (64-bit, a random
linear hash of their bytes) rather than kept, columns keep running min, max, mean and sum
of squared deviations (Chan et al.'s pairwise update). Nothing of size items x items, or
items x width, is held.

"Identical" allows for the last bits: one image encoded in batches of different sizes need
not give bit-equal rows, so rows are hashed with the 12 low bits of each float32 mantissa
cleared (equal to about 5e-4, relative), and a row or a dimension is constant when its
range is within ``CONSTANT_TOL`` of the table's largest magnitude.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from cliper_dist.data.features import ItemVectors
from cliper_dist.errors import UserError

REFUSE_SHARE = 0.5  # identical rows, or constant dimensions, at this share or more: refuse
WARN_SHARE = 0.05  # ... at this share or more: warn
ACCEPT_KEY = "model.accept_degenerate_features"
CONSTANT_TOL = 1e-6  # a range this small, relative to the table's largest |value|, is no range
MANTISSA_MASK = np.uint32(0xFFFFF000)  # float32 bits kept for the row hash

log = logging.getLogger("cliper_dist")


@dataclass(frozen=True)
class ModalityStats:
    name: str
    items: int
    width: int
    identical_rows: int  # items whose row equals another item's row
    largest_group: int  # the most items that share one row
    constant_rows: int  # rows whose values are all the same (an all-zero row, say)
    constant_columns: int  # dimensions with zero variance over the items
    variance: np.ndarray  # per dimension, float64

    @property
    def identical_share(self) -> float:
        return self.identical_rows / self.items if self.items else 0.0

    @property
    def constant_column_share(self) -> float:
        return self.constant_columns / self.width if self.width else 0.0

    def as_dict(self) -> dict:
        v = self.variance
        return {"items": self.items, "width": self.width, "identical_rows": self.identical_rows,
                "largest_group": self.largest_group, "constant_rows": self.constant_rows,
                "constant_columns": self.constant_columns,
                "variance": {"min": float(v.min(initial=0.0)), "median": float(np.median(v)) if len(v) else 0.0,
                             "max": float(v.max(initial=0.0))}}

    def problem(self) -> str:
        """What is degenerate, in words ("" when nothing is)."""
        parts = []
        if self.identical_rows:
            parts.append(f"{self.identical_rows} of {self.items} items share their row with another item "
                         f"({self.largest_group} the same one)")
        if self.constant_columns:
            parts.append(f"{self.constant_columns} of {self.width} dimensions are constant")
        return " and ".join(parts)


def modality_stats(vectors: ItemVectors, name: str, seed: int = 0) -> ModalityStats:
    """The statistics of one modality's (items, width) vectors, in one blockwise pass."""
    width = vectors.width
    mult = np.random.default_rng(seed).integers(1, 2 ** 63, size=width, dtype=np.uint64) | np.uint64(1)
    hashes = np.empty(vectors.num_items, dtype=np.uint64)
    lo = np.full(width, np.inf)
    hi = np.full(width, -np.inf)
    mean, m2, seen, row_ranges, scale = np.zeros(width), np.zeros(width), 0, [], 0.0
    for start, rows in vectors.blocks():
        block = np.ascontiguousarray(rows.detach().cpu().numpy(), dtype=np.float32) + np.float32(0)  # -0 -> +0
        n = len(block)
        if not n:
            continue
        bits = (block.view(np.uint32) & MANTISSA_MASK).astype(np.uint64)
        with np.errstate(over="ignore"):
            hashes[start:start + n] = (bits * mult).sum(axis=1, dtype=np.uint64)
        lo, hi = np.minimum(lo, block.min(axis=0)), np.maximum(hi, block.max(axis=0))
        row_ranges.append((block.max(axis=1) - block.min(axis=1)).astype(np.float64))
        scale = max(scale, float(np.abs(block).max()))
        b = block.astype(np.float64)
        b_mean = b.mean(axis=0)
        b_m2 = ((b - b_mean) ** 2).sum(axis=0)
        delta, total = b_mean - mean, seen + n
        mean = mean + delta * n / total
        m2 = m2 + b_m2 + delta ** 2 * seen * n / total
        seen = total
    _, counts = np.unique(hashes, return_counts=True)
    shared = counts[counts > 1]
    variance = m2 / seen if seen else np.zeros(width)
    tol = CONSTANT_TOL * scale
    constant_rows = int((np.concatenate(row_ranges) <= tol).sum()) if row_ranges else 0
    return ModalityStats(name, vectors.num_items, width, int(shared.sum()), int(counts.max(initial=0)),
                         constant_rows, int((hi - lo <= tol).sum()) if seen else 0, variance)


def check_modalities(modalities: dict[str, ItemVectors | None], accept: bool, where: str = "") -> list[ModalityStats]:
    """Refuse (``UserError``, one line) the first modality whose rows are mostly identical or
    whose dimensions are mostly constant, unless ``accept``; warn between the thresholds."""
    found = []
    for name, vectors in modalities.items():
        if vectors is None or vectors.num_items < 2:
            continue
        stats = modality_stats(vectors, name)
        found.append(stats)
        worst = max(stats.identical_share, stats.constant_column_share)
        if worst >= REFUSE_SHARE and not accept:
            hint = " (no images reached the encode job? its missing_images.txt lists them)" if name == "image" else ""
            raise UserError(f"{name} features{where} are degenerate: {stats.problem()}; a kNN graph over them is "
                            f"arbitrary{hint}. Set {ACCEPT_KEY}=true to train on them anyway")
        if worst >= WARN_SHARE:
            log.warning("%s features%s: %s%s", name, where, stats.problem(),
                        f" (accepted: {ACCEPT_KEY}=true)" if worst >= REFUSE_SHARE else "")
    return found
