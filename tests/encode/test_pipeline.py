"""Worker-side batches: whole shards per worker, uint8 images equal to open_clip's transform."""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader

from cliper_dist.data import schema
from cliper_dist.data.dataset import DatasetDir
from cliper_dist.encode.encoder import load_encoder
from cliper_dist.encode.pipeline import (IMAGE_CORRUPT, IMAGE_MISSING, IMAGE_OK, ShardBatches, default_image,
                                         split_preprocess)
from cliper_dist.encode.views import TextConfig, ViewsConfig

CPU = torch.device("cpu")


def test_uint8_stage_plus_device_normalise_equals_open_clip_preprocess(tiny_clip):
    enc = load_encoder(*tiny_clip, CPU)
    to_uint8, normalize = split_preprocess(enc.preprocess)
    rng = np.random.default_rng(0)
    for size in ((96, 96), (120, 70), (31, 200)):
        img = Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8))
        img = Image.open(io.BytesIO(_jpeg(img)))  # a decoded JPEG, as in the shards
        u8 = to_uint8(img)
        assert u8.dtype == torch.uint8
        assert torch.equal(normalize(u8[None], CPU)[0], enc.preprocess(img))


def _jpeg(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG")
    return buf.getvalue()


def batches(dataset, enc, batch_size=4, workers=2, **text):
    data = DatasetDir.open(dataset)
    shards = [(n, str(data.shard_path(n))) for n in data.shard_names]
    stage, _ = split_preprocess(enc.preprocess)
    ds = ShardBatches(shards, stage, enc.tokenizer, enc.context_length, ViewsConfig(), TextConfig(**text),
                      batch_size, default_image(""))
    return list(DataLoader(ds, batch_size=None, num_workers=workers))


def test_workers_split_shards_without_gap_or_overlap(encode_dataset, tiny_clip):
    enc = load_encoder(*tiny_clip, CPU)
    data = DatasetDir.open(encode_dataset)
    got = batches(encode_dataset, enc)
    seen = np.concatenate([b.index.numpy() for b in got])
    assert sorted(seen.tolist()) == list(range(data.num_items))
    lasts = [b.shard for b in got if b.last]
    assert sorted(lasts) == sorted(data.shard_names)  # one last batch per shard, the empty one included
    empty = [b for b in got if len(b.index) == 0]
    assert len(empty) == 1 and empty[0].last and data.shard_sizes[empty[0].shard] == 0
    assert all(0 < len(b.index) <= 4 for b in got if b is not empty[0])


def test_bad_inputs_are_flagged_and_long_text_chunked(encode_dataset, tiny_clip):
    enc = load_encoder(*tiny_clip, CPU)
    n = DatasetDir.open(encode_dataset).num_items
    got = {int(i): (b, k) for b in batches(encode_dataset, enc, workers=0) for k, i in enumerate(b.index)}
    corrupt, missing, notext, long = (got[i] for i in range(n - 4, n))
    assert corrupt[0].image_status[corrupt[1]] == IMAGE_CORRUPT
    assert missing[0].image_status[missing[1]] == IMAGE_MISSING
    assert notext[0].image_status[notext[1]] == IMAGE_OK
    assert notext[0].empty_fields[notext[1]].all()
    b, k = long
    chunks = torch.bincount(b.owner, minlength=len(b.index) * 5).view(-1, 5)
    assert chunks[k, 3] == 4 and chunks[k, 4] > 1  # description and global view are cut; title is not
    assert chunks[k, :3].tolist() == [1, 1, 1]
    rows = b.tokens[b.owner == k * 5 + 3]
    prefix = enc.tokenizer(["The product description is"])[0, 1:5]
    assert all(torch.equal(r[1:5], prefix) for r in rows)  # every chunk carries its view prompt
    truncated = {int(i): (b, k) for b in batches(encode_dataset, enc, workers=0, mode="truncate")
                 for k, i in enumerate(b.index)}[n - 1]
    assert len(truncated[0].tokens) == len(truncated[0].index) * 5


def test_missing_image_uses_the_configured_default(tmp_path):
    path = tmp_path / "default.png"
    Image.new("RGB", (10, 10), (255, 0, 0)).save(path)
    assert default_image(str(path)).getpixel((0, 0)) == (255, 0, 0)
    assert default_image("").getpixel((0, 0)) == (128, 128, 128)


def test_shard_names_follow_schema(encode_dataset):
    assert DatasetDir.open(encode_dataset).shard_names[0] == schema.shard_name(0)
