"""Losses that several models share."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def bpr(score_diff: torch.Tensor) -> torch.Tensor:
    """Mean BPR loss of score differences u.(i+) - u.(i-). MMRec's BPRLoss adds 1e-10 inside
    the log; -log sigmoid differs from it by less than 1e-10 / sigmoid(x)."""
    return -F.logsigmoid(score_diff).mean()
