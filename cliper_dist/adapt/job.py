"""The adapt job: CLIPER features + interactions -> adapted item features that train reads unchanged.

Builds the MCR model (``model.py``) on column-sharded item IDs, trains it for ``epochs``
passes over the items (resumable: DCP checkpoints under ``OUT/adapt/``, refused under a
changed config), then rank 0 writes ``image_feat.npy`` / ``text_feat.npy`` (the adapted,
unit-norm features, optionally after the raw ones) and, last, ``manifest.json``. The
directory is then a feature folder for ``launch/train.py --features``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from cliper_dist import checkpoint, dirs, dist, files
from cliper_dist import config as config_lib
from cliper_dist.adapt.model import MCR, AdaptModelConfig
from cliper_dist.adapt.pairs import epoch_steps
from cliper_dist.data import schema
from cliper_dist.data.item_features import Features, load_job_features
from cliper_dist.data.recdata import RecData, load_rec_data
from cliper_dist.errors import UserError
from cliper_dist.parallel.columns import ColumnSplit
from cliper_dist.parallel.optim import ColumnAdam, OptimConfig, checkpoint_views
from cliper_dist.sharding.tables import ITEM_TABLE, IdTables

log = logging.getLogger(__name__)

WORK_DIR = "adapt"  # OUT/adapt: config.yaml, metrics.jsonl, checkpoints/ (what marks the directory's kind)
RESUMABLE_CHANGES = {"out", "epochs", "resume", "threads", "device", "checkpoint_every"}


@dataclass
class AdaptConfig:
    data: str = ""  # dataset directory or MMRec folder: the training interactions
    features: str = ""  # encode output or MMRec folder with image_feat/text_feat.npy ("" = data)
    out: str = ""  # adapted feature directory to write
    seed: int = 999
    epochs: int = 20  # passes over the items
    batch_size: int = 1024  # items per InfoNCE batch (each other's negatives)
    pairs_per_step: int = 1024  # co-interaction triples per step
    fusion: Literal["sa", "sum", "concat"] = "sa"  # CLIPER fusion of an encode output's text views
    tau: float = 0.1  # CLIPER view-weight temperature of the fusion
    concat_raw: bool = False  # write [raw, adapted] per modality instead of the adapted features alone
    checkpoint_every: int = 1  # epochs between resume checkpoints (0: none)
    threads: int = 0  # torch threads per rank (0: torch's default)
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto: cuda when available
    resume: Literal["auto", "never"] = "auto"  # auto: continue from OUT's last checkpoint if any
    model: AdaptModelConfig = field(default_factory=AdaptModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)


class Adapter:
    """The model, its optimizer and one step, on the same global batch at every rank."""

    def __init__(self, cfg: AdaptConfig, data: RecData, features: Features, info: dist.DistInfo):
        self.cfg, self.data, self.info = cfg, data, info
        self.split = ColumnSplit(info.rank, info.world_size)
        device = info.device
        text, image = features.modalities(cfg.fusion, cfg.tau)
        self.image, self.text = (None if v is None else v.whole().to(device) for v in (image, text))
        if self.image is None and self.text is None:
            raise UserError(f"{features.source}: no image or text features to adapt")
        self.tables = IdTables({ITEM_TABLE: data.num_items}, cfg.model.id_dim, self.split, cfg.seed, device,
                               "model.id_dim")
        self.model = MCR(cfg.model, None if self.image is None else self.image.shape[1],
                         None if self.text is None else self.text.shape[1], self.tables.blocks[ITEM_TABLE],
                         self.split, cfg.seed).to(device)
        self.params = dict(self.model.named_parameters())
        self.optimizer = ColumnAdam(self.params, set(self.model.tables), cfg.optim)
        self._views = checkpoint_views(self.params, self.optimizer, self.split, self.model.tables)

    def embed(self, items: np.ndarray) -> dict[str, torch.Tensor]:
        rows = torch.from_numpy(items).to(self.info.device)
        return self.model.embed(rows, None if self.image is None else self.image[rows],
                                None if self.text is None else self.text[rows])

    def step(self, items: np.ndarray, triples: tuple[np.ndarray, ...]) -> dict[str, float]:
        terms = self.model.loss(self.embed(items), tuple(self.embed(t) for t in triples) if len(triples[0]) else None)
        terms["total"].backward()
        self.optimizer.step()
        self.optimizer.zero_grad()
        return {k: float(v.detach()) for k, v in terms.items()}

    def train_epoch(self, epoch: int) -> dict[str, float]:
        totals: dict[str, float] = {}
        steps = 0
        for items, triples in epoch_steps(self.data, epoch, self.cfg.seed, self.cfg.batch_size,
                                          self.cfg.pairs_per_step):
            for k, v in self.step(items, triples).items():
                totals[k] = totals.get(k, 0.0) + v
            steps += 1
        return {k: v / steps for k, v in totals.items()}

    @torch.no_grad()
    def adapted(self, name: str, block: int = 65536) -> np.ndarray:
        """The unit-norm adapted features of modality ``name`` for every item (replicated heads:
        no communication)."""
        raw = self.image if name == "image" else self.text
        head = self.model.image if name == "image" else self.model.text
        return torch.cat([F.normalize(head(raw[lo:lo + block]), dim=-1)
                          for lo in range(0, len(raw), block)]).cpu().numpy()

    def state_dict(self) -> dict[str, Any]:
        """DCP state: the ID table's columns and H_id's (sharded), the replicated heads, Adam."""
        return {"tables": self.tables.state_dict(), **self._views, "optim_steps": self.optimizer.steps}


def load_inputs(cfg: AdaptConfig) -> tuple[RecData, Features]:
    data = load_rec_data(cfg.data)
    return data, load_job_features(cfg.data, cfg.features, data.num_items, "adapt")


def run(cfg: AdaptConfig, info: dist.DistInfo) -> dict | None:
    for key in ("data", "out"):
        if not getattr(cfg, key):
            raise UserError(f"adapt: '{key}' is required (--{key} or {key}=...)")
    for key in ("epochs", "batch_size"):
        if getattr(cfg, key) < 1:
            raise UserError(f"adapt: '{key}' must be >= 1; got {getattr(cfg, key)}")
    dirs.check_output(cfg.out, dirs.ADAPTED, {"--data": cfg.data, "--features": cfg.features})
    dist.check_shared_dir(cfg.out)
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    out, work = Path(cfg.out), Path(cfg.out) / WORK_DIR
    last = checkpoint.resolve(work) if cfg.resume == "auto" else None
    if last is not None:
        config_lib.refuse_changed(cfg, checkpoint.read_meta(last), RESUMABLE_CHANGES, "an adaptation")
    data, features = load_inputs(cfg)
    adapter = Adapter(cfg, data, features, info)
    dist.keep_freed_memory()
    history: list[dict] = []
    if last is not None:
        history = checkpoint.load(last, adapter.state_dict())["history"]
        log.info("resumed from %s (%d epochs done)", last, len(history))
    if info.is_main:
        work.mkdir(parents=True, exist_ok=True)
        (out / schema.MANIFEST).unlink(missing_ok=True)  # the directory is complete again only at the end
        config_lib.save(cfg, work / "config.yaml")
        files.write_jsonl(work / "metrics.jsonl", history)
        log.info("adapt: %d items, %d train interactions, features %s; %s", data.num_items, len(data.train_user),
                 features.describe(), adapter.tables.describe())
    start = time.perf_counter()
    for epoch in range(len(history), cfg.epochs):
        t0 = time.perf_counter()
        terms = adapter.train_epoch(epoch)
        record = {"epoch": epoch, **{k: round(v, 6) for k, v in terms.items()},
                  "temperature": round(1.0 / float(adapter.model.scale().detach()), 5),
                  "epoch_s": round(time.perf_counter() - t0, 3)}
        history.append(record)
        if info.is_main:
            with (work / "metrics.jsonl").open("a") as f:
                f.write(json.dumps(record) + "\n")
            log.info("epoch %d/%d loss %.4f (%s) T %.4f, %.1f items/s", epoch + 1, cfg.epochs, terms["total"],
                     ", ".join(f"{k} {v:.3f}" for k, v in terms.items() if k != "total"), record["temperature"],
                     data.num_items / record["epoch_s"])
        if cfg.checkpoint_every and ((epoch + 1) % cfg.checkpoint_every == 0 or epoch + 1 == cfg.epochs):
            checkpoint.save(work, checkpoint.LAST, epoch, adapter.state_dict(),
                            {"history": history, "config": config_lib.to_dict(cfg)}, info.rank)
    if not info.is_main:
        return None
    manifest = write_features(cfg, adapter, features, data, history, time.perf_counter() - start)
    log.info("adapt: wrote %s (%s)", out, ", ".join(f"{k} {tuple(v)}" for k, v in manifest["arrays"].items()))
    return manifest


def write_features(cfg: AdaptConfig, adapter: Adapter, features: Features, data: RecData, history: list[dict],
                   seconds: float) -> dict:
    out = Path(cfg.out)
    arrays = {}
    for name, file, raw in (("image", schema.MMREC_IMAGE, adapter.image), ("text", schema.MMREC_TEXT, adapter.text)):
        if raw is None:
            continue
        adapted = adapter.adapted(name)
        if cfg.concat_raw:
            adapted = np.concatenate([raw.cpu().numpy(), adapted], axis=1)
        with files.atomic_open(out / file, "wb") as f:
            np.save(f, adapted.astype(np.float32))
        arrays[file] = adapted.shape
    manifest = {"kind": "adapted features (CPMM-style MCR)", "config": config_lib.to_dict(cfg),
                "inputs": {"interactions": {"path": data.source, "sha256": files.file_sha256(data.source)},
                           "features": {"path": features.source, "sha256": _features_digest(features.source)}},
                "arrays": {k: list(v) for k, v in arrays.items()}, "history": history, "seconds": round(seconds, 3)}
    files.write_json(out / schema.MANIFEST, manifest)
    return manifest


def _features_digest(source: str) -> str:
    """The encode manifest's digest (it fingerprints its arrays), or the MMRec arrays' own."""
    path = Path(source)
    names = [schema.MANIFEST] if (path / schema.MANIFEST).is_file() else \
        [n for n in (schema.MMREC_IMAGE, schema.MMREC_TEXT) if (path / n).is_file()]
    return hashlib.sha256("".join(files.file_sha256(path / n) for n in names).encode()).hexdigest()
