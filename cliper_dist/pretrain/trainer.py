"""One contrastive step of an open_clip model on this rank's slice of the global batch.

The model is wrapped in DDP. The loss is open_clip's ``ClipLoss`` with features gathered
across ranks *with* their gradients, each rank scoring its rows against the whole global
batch (``local_loss``): the mean of the ranks' losses, and the DDP-averaged gradient, are
exactly the single-process loss and gradient of the global batch.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch.nn.parallel import DistributedDataParallel

from cliper_dist import dist
from cliper_dist.encode.encoder import ClipEncoder, autocast, autocast_dtype
from cliper_dist.encode.pipeline import ImageNormalizer
from cliper_dist.errors import UserError

from open_clip.loss import ClipLoss  # open_clip is importable once encoder has fixed torchvision

MAX_LOGIT_SCALE = math.log(100)  # CLIP's clamp of the learned temperature


@dataclass
class ClipOptimConfig:
    lr: float = 5e-4  # peak learning rate (AdamW)
    warmup: int = 100  # steps of linear warmup
    schedule: Literal["cosine", "constant"] = "cosine"  # after warmup: cosine decay to 0, or constant
    weight_decay: float = 0.2  # on weight matrices and embeddings (ndim >= 2), not on gains, biases, scale
    beta1: float = 0.9
    beta2: float = 0.98
    eps: float = 1e-6

    def validate(self) -> None:
        if not (self.lr > 0 and self.eps > 0 and self.weight_decay >= 0 and self.warmup >= 0
                and 0 <= self.beta1 < 1 and 0 <= self.beta2 < 1):
            raise UserError("pretrain: optim needs lr > 0, eps > 0, weight_decay >= 0, warmup >= 0 and "
                            "0 <= beta1, beta2 < 1")


def learning_rate(step: int, optim: ClipOptimConfig, steps: int) -> float:
    """Linear warmup to ``optim.lr``, then constant or cosine decay to 0 at ``steps``."""
    if step < optim.warmup:
        return optim.lr * (step + 1) / optim.warmup
    if optim.schedule == "constant":
        return optim.lr
    progress = (step - optim.warmup) / max(1, steps - optim.warmup)
    return 0.5 * optim.lr * (1 + math.cos(math.pi * progress))


class ClipTrainer:
    """The model (DDP across ranks), AdamW and one contrastive step."""

    def __init__(self, encoder: ClipEncoder, normalizer: ImageNormalizer, optim: ClipOptimConfig, steps: int,
                 precision: str, seed: int, info: dist.DistInfo):
        self.normalizer, self.optim_cfg, self.steps, self.seed, self.info = normalizer, optim, steps, seed, info
        self.model = encoder.model.train()
        self.forward = DistributedDataParallel(self.model) if info.world_size > 1 else self.model
        self.dtype = autocast_dtype(info.device, precision)
        self.loss = ClipLoss(local_loss=True, gather_with_grad=True, rank=info.rank, world_size=info.world_size)
        decay = [p for p in self.model.parameters() if p.ndim >= 2]
        rest = [p for p in self.model.parameters() if p.ndim < 2]
        self.optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": optim.weight_decay},
                                            {"params": rest, "weight_decay": 0.0}],
                                           lr=optim.lr, betas=(optim.beta1, optim.beta2), eps=optim.eps)

    def step(self, step: int, pixels: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """One optimizer step; returns this rank's loss (the global loss is the mean over ranks).

        Any randomness of the forward (a tower's dropout) draws from (seed, step, rank): a
        resumed run repeats it.
        """
        device = self.info.device
        torch.manual_seed((self.seed * 1_000_003 + step) * self.info.world_size + self.info.rank)
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate(step, self.optim_cfg, self.steps)
        with autocast(device, self.dtype):
            image, text, scale = self.forward(self.normalizer(pixels, device), tokens.to(device))[:3]
            loss = self.loss(image, text, scale)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        with torch.no_grad():
            self.model.logit_scale.clamp_(0, MAX_LOGIT_SCALE)
        return loss.detach()

    def state_dict(self) -> dict[str, Any]:
        return {"state_dict": self.model.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any], source: str) -> None:
        try:
            self.model.load_state_dict(state["state_dict"])
        except RuntimeError as e:  # same config text, other architecture: the model's .json changed
            raise UserError(f"{source} does not fit the model (did its config file change?): "
                            f"{str(e).splitlines()[-1].strip()[:300]}") from None
        self.optimizer.load_state_dict(state["optimizer"])


class Window:
    """Loss and throughput since the last record: summed on the device, reduced once per record."""

    def __init__(self, info: dist.DistInfo):
        self.info = info
        self.start()

    def start(self) -> None:
        """Open a window: call after a record's evaluation and checkpoint, which it does not time."""
        self.loss_sum = torch.zeros((), dtype=torch.float64, device=self.info.device)
        self.steps, self.corrupt, self.started = 0, 0, time.perf_counter()

    def add(self, loss: torch.Tensor, corrupt: int) -> None:
        self.loss_sum += loss
        self.steps += 1
        self.corrupt += corrupt

    def rate(self, batch_size: int) -> float:
        return self.steps * batch_size / max(time.perf_counter() - self.started, 1e-9)

    def close(self, batch_size: int) -> dict[str, float]:
        """The window's global mean loss, samples/s and corrupt images met."""
        rate = self.rate(batch_size)
        totals = torch.stack([self.loss_sum, torch.tensor(float(self.corrupt), dtype=torch.float64,
                                                          device=self.info.device)])
        if torch.distributed.is_initialized():
            torch.distributed.all_reduce(totals)
        loss, corrupt = totals.tolist()
        return {"loss": round(loss / (self.steps * self.info.world_size), 5), "samples_per_s": round(rate, 1),
                "corrupt_images": int(corrupt)}
