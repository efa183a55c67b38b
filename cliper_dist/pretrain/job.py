"""The pretrain job: contrastive training of an open_clip model on a catalog's own image-text pairs.

    torchrun --nproc_per_node 2 launch/pretrain.py --data DATASET_DIR --model MODEL \\
        [--init CKPT] --out DIR [steps=1000 batch_size=256 ...]

DDP over the dataset's items: every global step is a fixed set of (item, view) pairs
(``pairs.PairSchedule``), cut into equal rank slices, and one step of ``trainer.ClipTrainer``
(open_clip's ``ClipLoss`` over features gathered across ranks). The run loop: train, every
``eval_every`` steps a record (loss, samples/s, held-out retrieval), every
``checkpoint_every`` steps the resume state; at the end the checkpoint encode reads.

Output (``--out``): ``clip.pt``, an open_clip checkpoint (``{"state_dict": ...}``) that
``launch/encode.py --pretrained`` loads unchanged, and ``manifest.json`` (written last: the
directory is complete). ``pretrain/`` holds the config, ``metrics.jsonl`` (loss, samples/s
and held-out retrieval R@1/R@5 per view at every evaluation) and the resume checkpoint.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch.utils.data import DataLoader

from cliper_dist import config as config_lib
from cliper_dist import dirs, dist, files
from cliper_dist.data import schema
from cliper_dist.data.dataset import DatasetDir
from cliper_dist.encode.encoder import ClipEncoder, load_encoder, save_checkpoint
from cliper_dist.encode.pipeline import IMAGE_CORRUPT, default_image, split_preprocess
from cliper_dist.encode.views import ViewsConfig
from cliper_dist.errors import UserError
from cliper_dist.pretrain.pairs import ItemPairs, ItemSource, PairSchedule, RankBatches, collate
from cliper_dist.pretrain.retrieval import embed_items, gather_rows, retrieval_metrics
from cliper_dist.pretrain.trainer import ClipOptimConfig, ClipTrainer, Window, learning_rate

log = dist.log
WORK_DIR = "pretrain"  # OUT/pretrain: config.yaml, metrics.jsonl, checkpoint.pt (what marks the directory)
CHECKPOINT, METRICS, OUTPUT = "checkpoint.pt", "metrics.jsonl", "clip.pt"
# Keys a resumed run may change: how (not what) it computes, evaluates and saves.
RESUMABLE_CHANGES = {"out", "resume", "threads", "device", "workers", "eval_every", "checkpoint_every"}


@dataclass
class PretrainConfig:
    data: str = ""  # dataset directory (launch/convert.py output)
    model: str = ""  # open_clip model name or model config .json
    init: str = ""  # local checkpoint to start from ("" = random init: training from scratch)
    out: str = ""  # output directory
    seed: int = 0  # initial weights, held-out items, batches and views derive from it
    steps: int = 1000  # optimizer steps
    batch_size: int = 256  # global image-text pairs per step (a multiple of the world size)
    eval_items: int = 256  # items held out of training for retrieval (0: none)
    eval_every: int = 200  # steps between held-out evaluations (0: at the end only)
    checkpoint_every: int = 200  # steps between resume checkpoints (0: only the last step's)
    workers: int = 2  # DataLoader worker processes per rank (decode, resize, tokenize)
    threads: int = 0  # torch intra-op threads per rank (0: torch's default)
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto: cuda (nccl) where visible, else cpu (gloo)
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # auto: bf16 autocast on GPU, fp32 on CPU
    resume: Literal["auto", "never"] = "auto"  # auto: continue from OUT's checkpoint if any
    optim: ClipOptimConfig = field(default_factory=ClipOptimConfig)
    views: ViewsConfig = field(default_factory=ViewsConfig)  # the prompts, as encode builds them

    def validate(self, world_size: int) -> None:
        for key in ("data", "model", "out"):
            if not getattr(self, key):
                raise UserError(f"pretrain: '{key}' is required (--{key} or {key}=...)")
        if self.steps < 1 or self.batch_size < 1:
            raise UserError("pretrain: steps and batch_size must be >= 1")
        if self.batch_size % world_size:
            raise UserError(f"pretrain: batch_size={self.batch_size} must be a multiple of the world size "
                            f"{world_size} (every rank takes an equal slice of the global batch)")
        if min(self.eval_items, self.eval_every, self.checkpoint_every, self.workers, self.threads) < 0:
            raise UserError("pretrain: eval_items, eval_every, checkpoint_every, workers and threads must be >= 0")
        self.optim.validate()
        self.views.validate()


def split_items(with_image: np.ndarray, eval_items: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(training items, held-out items): a seeded draw of ``eval_items`` items with an image."""
    if eval_items >= len(with_image):
        raise UserError(f"pretrain: eval_items={eval_items} leaves no training items ({len(with_image)} items "
                        "have an image)")
    held = np.random.default_rng([seed, 1 << 20]).permutation(len(with_image))[:eval_items]
    mask = np.zeros(len(with_image), bool)
    mask[held] = True
    return with_image[~mask], with_image[np.sort(held)]


class Evaluator:
    """Held-out retrieval per view; rank r embeds items r::P, rank 0 scores all of them."""

    def __init__(self, trainer: ClipTrainer, pairs: ItemPairs, loader_args: dict, held_out: np.ndarray,
                 views: list[str], batch_size: int, info: dist.DistInfo):
        self.trainer, self.views, self.size = trainer, views, len(held_out)
        keys = [(int(i), -1) for i in held_out[info.rank::info.world_size]]
        batches = [keys[j:j + batch_size] for j in range(0, len(keys), batch_size)]
        self.loader = DataLoader(pairs, batch_sampler=batches, **loader_args)

    def __call__(self) -> dict[str, dict[str, float]] | None:
        model, info = self.trainer.model, self.trainer.info
        model.eval()
        rows = embed_items(model, self.trainer.normalizer, self.loader, len(self.views), info.device,
                           self.trainer.dtype)
        model.train()
        image, text, tokens = gather_rows(rows)
        return retrieval_metrics(image, text, tokens, self.views) if info.is_main else None


def run(cfg: PretrainConfig, info: dist.DistInfo) -> dict | None:
    """Train, evaluate, checkpoint; rank 0 writes ``clip.pt`` and the manifest and returns the latter."""
    cfg.validate(info.world_size)
    dataset = DatasetDir.open(cfg.data)
    dirs.check_output(cfg.out, dirs.PRETRAINED, {"--data": cfg.data, "--init": cfg.init})
    dist.check_shared_dir(cfg.out)
    out, work = Path(cfg.out), Path(cfg.out) / WORK_DIR
    resumed = _resume_state(cfg, work)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)

    torch.manual_seed(cfg.seed)  # the same initial weights on every rank (DDP also broadcasts rank 0's)
    encoder = load_encoder(cfg.model, cfg.init or None, info.device)
    image_stage, normalizer = split_preprocess(encoder.preprocess)
    source = ItemSource(dataset)
    with_image = source.with_image
    train_items, held_out = split_items(with_image, cfg.eval_items, cfg.seed)
    schedule = PairSchedule(train_items, len(cfg.views.names), cfg.batch_size, cfg.seed)
    trainer = ClipTrainer(encoder, normalizer, cfg.optim, cfg.steps, cfg.precision, cfg.seed, info)
    history: list[dict] = []
    start = 0
    if resumed is not None:
        trainer.load_state_dict(resumed, str(work / CHECKPOINT))
        start, history = resumed["step"], resumed["history"]
        log.info("pretrain: resumed from %s at step %d", work / CHECKPOINT, start)

    pairs = ItemPairs(source, cfg.views, image_stage, default_image(""))
    loader_args = {"collate_fn": collate(encoder.tokenizer), "num_workers": cfg.workers,
                   "pin_memory": info.device.type == "cuda"}
    loader = DataLoader(pairs, batch_sampler=RankBatches(schedule, start, cfg.steps, info.rank, info.world_size),
                        **loader_args, **({"prefetch_factor": 4} if cfg.workers else {}))
    evaluate = Evaluator(trainer, pairs, loader_args, held_out, cfg.views.names,
                         cfg.batch_size // info.world_size, info) if len(held_out) else None
    if info.is_main:
        work.mkdir(parents=True, exist_ok=True)
        (out / schema.MANIFEST).unlink(missing_ok=True)  # the directory is complete again only at the end
        config_lib.save(cfg, work / "config.yaml")
        files.write_jsonl(work / METRICS, history)
        log.info("pretrain: %s (D=%d) on %d items with an image (%d without: not trained on), %d held out; "
                 "%d views, global batch %d (%d per rank), %d steps = %.1f epochs, world size %d",
                 encoder.model_name, encoder.embed_dim, len(with_image), dataset.num_items - len(with_image),
                 len(held_out), len(cfg.views.names), cfg.batch_size, cfg.batch_size // info.world_size,
                 cfg.steps, cfg.steps / schedule.steps_per_epoch, info.world_size)

    window = Window(info)
    progress = dist.Progress(cfg.steps, desc="pretrain", unit="step")
    progress.update(start)
    for step, (pixels, tokens, status) in enumerate(loader, start):
        loss = trainer.step(step, pixels, tokens)
        window.add(loss, int((status == IMAGE_CORRUPT).sum()))
        progress.update(1)
        done = step + 1
        if done % 10 == 0 or done == cfg.steps:
            progress.set_postfix(loss=f"{float(loss):.3f}", samples_s=f"{window.rate(cfg.batch_size):.0f}")
        recording = _due(done, cfg.eval_every, cfg.steps)
        if recording:
            history.append(_record(done, schedule, cfg, trainer, window.close(cfg.batch_size), evaluate))
            if info.is_main:
                with (work / METRICS).open("a") as f:
                    f.write(json.dumps(history[-1]) + "\n")
                _log_record(history[-1], cfg.steps)
        saving = _due(done, cfg.checkpoint_every, cfg.steps)
        if saving and info.is_main:
            with files.atomic_open(work / CHECKPOINT, "wb") as f:
                torch.save({**trainer.state_dict(), "step": done, "history": history,
                            "config": config_lib.to_dict(cfg)}, f)
        if recording or saving:
            window.start()
    progress.close()
    dist.barrier()
    if not info.is_main:
        return None
    return _write_output(cfg, trainer, encoder, dataset, history, len(with_image), len(held_out))


def _due(done: int, every: int, steps: int) -> bool:
    """Whether a periodic action (every ``every`` steps; 0: none but the last) falls after step ``done``."""
    return (every > 0 and done % every == 0) or done == steps


def _record(done: int, schedule: PairSchedule, cfg: PretrainConfig, trainer: ClipTrainer, window: dict,
            evaluate: Evaluator | None) -> dict:
    """A metrics line: the window since the last line (or the resume), then held-out retrieval."""
    record = {"step": done, "epoch": round(done / schedule.steps_per_epoch, 3), **window,
              "lr": learning_rate(done - 1, cfg.optim, cfg.steps),
              "logit_scale": round(float(trainer.model.logit_scale.detach().exp()), 3)}
    if evaluate is not None:
        t0 = time.perf_counter()
        retrieval = evaluate()
        record.update({"eval_items": evaluate.size, "retrieval": retrieval,
                       "eval_s": round(time.perf_counter() - t0, 3)})
    return record


def _log_record(record: dict, steps: int) -> None:
    line = (f"step {record['step']}/{steps} (epoch {record['epoch']:.1f}) loss {record['loss']:.4f}, "
            f"{record['samples_per_s']:.0f} samples/s, scale {record['logit_scale']:.1f}")
    if "retrieval" in record:
        r = record["retrieval"]
        line += "; held-out R@1 i2t/t2i (chance) " + ", ".join(
            f"{v} {m['i2t_r1']:.2f}/{m['t2i_r1']:.2f} ({m['chance_r1']:.2f})" for v, m in r.items())
    log.info("%s", line)


def _resume_state(cfg: PretrainConfig, work: Path) -> dict | None:
    path = work / CHECKPOINT
    if cfg.resume != "auto" or not path.is_file():
        return None
    state = torch.load(path, map_location="cpu", weights_only=False)
    config_lib.refuse_changed(cfg, state, RESUMABLE_CHANGES, "a CLIP training run")
    return state


def _write_output(cfg: PretrainConfig, trainer: ClipTrainer, encoder: ClipEncoder, dataset: DatasetDir,
                  history: list[dict], with_image: int, held_out: int) -> dict:
    out = Path(cfg.out)
    save_checkpoint(trainer.model, out / OUTPUT)
    manifest = {"kind": "catalog-trained open_clip checkpoint", "checkpoint": OUTPUT,
                "checkpoint_sha256": files.file_sha256(out / OUTPUT), "model": cfg.model,
                "model_name": encoder.model_name, "embed_dim": encoder.embed_dim,
                "context_length": encoder.context_length,
                "init": {"path": encoder.checkpoint, "sha256": encoder.checkpoint_sha256},
                "dataset": str(dataset.path.resolve()), "items_with_image": with_image, "held_out": held_out,
                "config": config_lib.to_dict(cfg), "final": history[-1] if history else None}
    files.write_json(out / schema.MANIFEST, manifest)
    log.info("pretrain: wrote %s (encode with --model %s --pretrained %s)", out / OUTPUT, cfg.model, out / OUTPUT)
    return manifest
