"""Mean and spread over repeated runs (seeds), as every benchmark that repeats runs reports them."""

from __future__ import annotations

import statistics
from typing import Iterable


def mean_std(values: Iterable[float], digits: int) -> list[float]:
    """[mean, sample standard deviation (0 for one value)], each rounded to ``digits``."""
    values = list(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return [round(statistics.mean(values), digits), round(std, digits)]
