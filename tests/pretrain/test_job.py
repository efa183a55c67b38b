"""The pretrain job at real ranks: exact gathered loss, training, encode round-trip, resume."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from cliper_dist.data import schema
from cliper_dist.pretrain.job import CHECKPOINT, METRICS, OUTPUT, WORK_DIR
from tests.conftest import REPO, kill_rank_when, torchrun_cmd

ARGS = ["steps=40", "batch_size=8", "eval_items=20", "eval_every=20", "checkpoint_every=4", "workers=1",
        "optim.lr=1e-3", "optim.warmup=5"]


def three_steps(data: str, model: str, ckpt: str) -> tuple[list[float], dict, dict]:
    """Three steps of the job's trainer on global batches of 8, at a constant lr of 1e-3:
    (global losses, the last step's gradients, the final weights)."""
    from torch.utils.data import DataLoader

    from cliper_dist import dist
    from cliper_dist.data.dataset import DatasetDir
    from cliper_dist.encode.encoder import load_encoder
    from cliper_dist.encode.pipeline import default_image, split_preprocess
    from cliper_dist.encode.views import ViewsConfig
    from cliper_dist.pretrain.pairs import ItemPairs, ItemSource, PairSchedule, RankBatches, collate
    from cliper_dist.pretrain.trainer import ClipOptimConfig, ClipTrainer

    info = dist.init("cpu")
    views = ViewsConfig()
    encoder = load_encoder(model, ckpt, info.device)
    stage, normalizer = split_preprocess(encoder.preprocess)
    source = ItemSource(DatasetDir.open(data))
    pairs = ItemPairs(source, views, stage, default_image(""))
    schedule = PairSchedule(source.with_image, len(views.names), 8, seed=0)
    loader = DataLoader(pairs, batch_sampler=RankBatches(schedule, 0, 3, info.rank, info.world_size),
                        collate_fn=collate(encoder.tokenizer))
    optim = ClipOptimConfig(lr=1e-3, warmup=0, schedule="constant")
    trainer = ClipTrainer(encoder, normalizer, optim, steps=3, precision="fp32", seed=0, info=info)
    losses = []
    for step, (pixels, tokens, _) in enumerate(loader):
        loss = trainer.step(step, pixels, tokens)
        torch.distributed.all_reduce(loss)
        losses.append(float(loss) / info.world_size)
    grads = {k: p.grad.clone() for k, p in trainer.model.named_parameters()}
    return losses, grads, {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}


def test_gathered_loss_and_updates_equal_one_process_over_the_global_batch(ranks, demo_dataset, tiny_clip):
    """Losses, gradients (Adam alone would hide a gradient off by a factor) and weights."""
    model, ckpt = tiny_clip
    (one_losses, one_grads, one_state), = ranks.run(three_steps, str(demo_dataset), model, ckpt, nproc=1)
    two = ranks.run(three_steps, str(demo_dataset), model, ckpt, nproc=2)
    initial = torch.load(ckpt, weights_only=False)["state_dict"]
    assert all(not torch.equal(one_state[k], initial[k]) for k in ("visual.proj", "text_projection"))
    for losses, grads, state in two:
        np.testing.assert_allclose(losses, one_losses, rtol=1e-5, atol=1e-5)
        for key, value in one_grads.items():
            scale = float(value.abs().max())
            torch.testing.assert_close(grads[key], value, rtol=1e-4, atol=1e-5 * scale, msg=lambda m, k=key: f"{k}: {m}")
        # Adam divides by sqrt(v): on a rarely used weight (a late text position) float summation
        # order alone moves a step by ~1e-5; a wrong gradient moves many by ~lr = 1e-3
        for key, value in one_state.items():
            torch.testing.assert_close(state[key], value, rtol=1e-5, atol=5e-5, msg=lambda m, k=key: f"{k}: {m}")


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory, demo_dataset, tiny_clip) -> Path:
    """An uninterrupted 2-rank run of 40 steps."""
    from tests.conftest import run_with_timeout

    model, ckpt = tiny_clip
    out = tmp_path_factory.mktemp("pretrain") / "run"
    result = run_with_timeout(torchrun_cmd(2, REPO / "launch/pretrain.py", [
        "--data", demo_dataset, "--model", model, "--init", ckpt, "--out", out, *ARGS]), timeout=240)
    assert result.returncode == 0, result.stdout[-4000:]
    return out


def test_training_lowers_the_loss_and_records_held_out_retrieval(pretrained):
    records = [json.loads(line) for line in (pretrained / WORK_DIR / METRICS).read_text().splitlines()]
    assert [r["step"] for r in records] == [20, 40]
    assert records[1]["loss"] < records[0]["loss"]
    retrieval = records[-1]["retrieval"]
    assert set(retrieval) == {"title", "brand", "categories", "description", "global"}
    assert records[-1]["eval_items"] == 20
    # 20 items share 8 brands: repeated prompts raise that view's chance level
    assert retrieval["title"]["chance_r1"] <= 0.1 < retrieval["brand"]["chance_r1"]
    assert retrieval["brand"]["distinct_texts"] <= 8 < retrieval["title"]["distinct_texts"]
    manifest = json.loads((pretrained / schema.MANIFEST).read_text())
    assert manifest["final"] == records[-1] and manifest["checkpoint"] == OUTPUT


def test_the_checkpoint_round_trips_through_encode(pretrained, demo_dataset, tiny_clip, tmp_path, ranks):
    """encode --pretrained clip.pt loads the trained weights unchanged: its image features are
    the trained model's, and they differ from the initial checkpoint's."""
    from PIL import Image

    from cliper_dist.data.features import FeatureStore
    from cliper_dist.data.shards import read_shard
    from cliper_dist.encode.encoder import load_encoder

    model, init = tiny_clip
    result = ranks.launch("launch/encode.py", ["--data", demo_dataset, "--out", tmp_path / "features", "--model",
                                               model, "--pretrained", pretrained / OUTPUT])
    assert result.returncode == 0, result.stdout[-4000:]
    stored = FeatureStore.open(tmp_path / "features").array(schema.IMAGE)
    trained = torch.load(pretrained / WORK_DIR / CHECKPOINT, weights_only=False)["state_dict"]
    encoder = load_encoder(model, init, torch.device("cpu"))
    encoder.model.load_state_dict(trained)
    shard = schema.SHARD_DIR + "/" + json.loads((demo_dataset / schema.MANIFEST).read_text())["shards"][0]["name"]
    samples = list(read_shard(demo_dataset / shard))[:4]
    import io

    pixels = torch.stack([encoder.preprocess(Image.open(io.BytesIO(s["jpg"])).convert("RGB")) for s in samples])
    rows = [schema.key_index(s["__key__"]) for s in samples]
    with torch.no_grad():
        expected = encoder.model.encode_image(pixels).numpy()
        before = load_encoder(model, init, torch.device("cpu")).model.encode_image(pixels).numpy()
    np.testing.assert_allclose(stored[rows], expected, rtol=1e-4, atol=1e-5)
    assert not np.allclose(stored[rows], before, atol=1e-3)


@pytest.mark.slow  # the default run resumes train, encode and convert
def test_a_killed_run_resumes_to_the_weights_of_an_uninterrupted_one(pretrained, demo_dataset, tiny_clip, tmp_path,
                                                                       ranks):
    model, ckpt = tiny_clip
    out = tmp_path / "run"
    cmd = torchrun_cmd(2, REPO / "launch/pretrain.py",
                       ["--data", demo_dataset, "--model", model, "--init", ckpt, "--out", out, *ARGS])
    killed = kill_rank_when(cmd, lambda: (out / WORK_DIR / CHECKPOINT).is_file(), "the first checkpoint")
    assert killed.returncode != 0
    assert not (out / schema.MANIFEST).exists()
    assert torch.load(out / WORK_DIR / CHECKPOINT, weights_only=False)["step"] < 40
    resumed = ranks.launch("launch/pretrain.py", cmd[cmd.index("--data"):])
    assert resumed.returncode == 0, resumed.stdout[-4000:]
    assert "resumed from" in resumed.stdout
    final = torch.load(out / OUTPUT, weights_only=False)["state_dict"]
    reference = torch.load(pretrained / OUTPUT, weights_only=False)["state_dict"]
    for key, value in reference.items():
        torch.testing.assert_close(final[key], value, rtol=1e-5, atol=1e-6, msg=key)


def test_resuming_under_a_changed_config_is_refused(pretrained, demo_dataset, tiny_clip, ranks, tmp_path):
    import shutil

    model, ckpt = tiny_clip
    out = tmp_path / "run"
    shutil.copytree(pretrained, out)
    result = ranks.launch("launch/pretrain.py", ["--data", demo_dataset, "--model", model, "--init", ckpt,
                                                 "--out", out, *ARGS, "optim.lr=2e-3"], nproc=1)
    assert result.returncode != 0
    assert "made with another config (optim.lr: 0.001 -> 0.002)" in result.stdout
