"""What the train job drives for ``model.name=sasrec``: epochs, full-ranking evaluation and the
checkpoint state of the sequential task (the job's loop is ``train/job.py``).

Every random draw derives from (seed, epoch): the batch order and negatives (``data.py``) and
the dropout masks (the generator is reseeded per epoch and rank), so a resumed run repeats an
uninterrupted one and no RNG state is saved.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.distributed as dist

from cliper_dist.dist import DistInfo, Progress
from cliper_dist.parallel.optim import OptimConfig
from cliper_dist.phases import Phases
from cliper_dist.seq.data import Sequences, train_batches
from cliper_dist.seq.model import SASRecConfig, SeqModel, evaluate

SPLITS = ("valid", "test")


def evaluated_users(seqs: Sequences) -> np.ndarray:
    """The users with a valid or test target, sorted."""
    return np.flatnonzero((seqs.valid >= 0) | (seqs.test >= 0))


class SeqTrainer:
    primary = "ndcg@10"  # the valid metric early stopping watches
    shown = ("hr@10", "ndcg@10")  # what the epoch's log line prints

    def __init__(self, cfg: SASRecConfig, optim: OptimConfig, seqs: Sequences, features: torch.Tensor | None,
                 info: DistInfo, seed: int, batch_size: int, eval_batch_users: int, eval_users: np.ndarray | None,
                 estimate: dict | None = None):
        self.cfg, self.optim_cfg, self.seqs, self.info = cfg, optim, seqs, info
        self.seed, self.batch_size, self.eval_batch_users = seed, batch_size, eval_batch_users
        self.eval_users, self.estimate = eval_users, estimate  # a sample of users (eval_users), labelled
        self.model = SeqModel(cfg, optim, seqs.num_items, seed, info.rank, info.world_size, info.device, features)
        self.build_seconds: dict[str, float] = {}
        lengths = np.minimum(np.diff(seqs.indptr), cfg.max_len + 1) - 1
        self.steps_per_epoch = -(-int((lengths >= 1).sum()) // batch_size)

    def describe(self) -> str:
        s, c = self.seqs, self.cfg
        table = (f"torchrec row_wise item table {s.num_items} x {c.embedding_dim} ({c.table_optimizer} fused, "
                 f"lr {c.table_lr}); rank {self.info.rank} holds rows [{self.model.lo}, {self.model.hi})"
                 if self.model.table else "no ID table (item_input=features)")
        content = "" if self.model.content is None else (
            f"; features {tuple(self.model.content.features.shape)} projected to {c.embedding_dim}")
        return (f"sasrec: {s.num_users} users, {s.num_items} items, {len(s.items)} training interactions, "
                f"loss {c.loss}, item input {c.item_input}, L={c.max_len}, {c.blocks} block(s) x {c.heads} head(s), "
                f"{self.info.world_size} rank(s)\n{table}{content}")

    def train_epoch(self, epoch: int, phases: Phases) -> float:
        """The epoch's mean loss over its global batches."""
        torch.manual_seed(int(np.random.SeedSequence([self.seed, epoch, self.info.rank]).generate_state(1)[0]))
        decay = self.optim_cfg.lr_decay ** (epoch / self.optim_cfg.lr_decay_epochs)
        for group in self.model.optimizer.param_groups:
            group["lr"] = self.optim_cfg.lr * decay
        total, steps = torch.zeros((), dtype=torch.float64), 0
        progress = Progress(self.steps_per_epoch, desc=f"epoch {epoch + 1}", unit="step")
        with phases("steps"):
            for batch in train_batches(self.seqs, self.cfg.max_len, self.batch_size, epoch, self.seed,
                                       self.info.rank, self.info.world_size):
                total += self.model.step(batch)
                steps += 1
                progress.update(1)
            progress.close()
            if dist.is_initialized() and self.info.world_size > 1:
                dist.all_reduce(total)  # each rank's loss is its share of the batch's
        return float(total) / max(steps, 1)

    def evaluate(self) -> dict[str, dict[str, float]]:
        return {split: evaluate(self.model, self.seqs, split, self.info.rank, self.info.world_size,
                                self.eval_batch_users, self.eval_users) for split in SPLITS}

    def state_dict(self, with_optimizer: bool) -> dict:
        return self.model.state_dict(with_optimizer)
