"""The job as a world of one: CLIPER's arrays, bad inputs, exports, resume and re-merge."""

from __future__ import annotations

import io
import json
import shutil

import numpy as np
import torch
from PIL import Image

from cliper_dist.data.dataset import DatasetDir
from cliper_dist.encode.encoder import load_encoder
from cliper_dist.data.shards import read_shard
from cliper_dist.encode.pipeline import default_image
from cliper_dist.data.features import FeatureStore
from cliper_dist.encode.store import part_path
from cliper_dist.encode.views import ViewsConfig, item_views, view_pieces
from tests.conftest import REPO
from tests.encode.conftest import encode_in_process

CPU = torch.device("cpu")


def direct_encode(enc, sample: dict) -> tuple[np.ndarray, np.ndarray]:
    """One item through the model without the pipeline: image (D,), views (C, D) chunk sums."""
    try:
        image = Image.open(io.BytesIO(sample["jpg"])).convert("RGB")
    except (KeyError, OSError):
        image = default_image("")
    with torch.no_grad():
        img = enc.model.encode_image(enc.preprocess(image)[None])[0]
        views = []
        for v in item_views(json.loads(sample["json"]), ViewsConfig()):
            fits = len(enc.tokenizer.encode(v.prompt)) + 2 <= enc.context_length
            views.append(enc.model.encode_text(enc.tokenizer([v.prompt] if fits else view_pieces(v, 230))).sum(0))
    return img.numpy(), torch.stack(views).numpy()


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_rows_are_cliper_representations_of_their_items(single_features, encode_dataset, tiny_clip):
    feats = FeatureStore.open(single_features)
    data = DatasetDir.open(encode_dataset)
    n = data.num_items
    image, views = feats.array("image"), feats.array("text_views")
    assert image.shape == (n, 64) and views.shape == (5, n, 64)
    enc = load_encoder(*tiny_clip, CPU)
    samples = {int(s["__key__"]): s for name in data.shard_names for s in read_shard(str(data.shard_path(name)))}
    for i in (0, 37, 119, n - 4, n - 3, n - 2, n - 1):  # demo items, corrupt, no image, no text, long text
        img, v = direct_encode(enc, samples[i])
        np.testing.assert_allclose(image[i], img, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(views[:, i], v, rtol=1e-4, atol=1e-5)


def test_similarity_and_fusions_follow_the_formulas(single_features):
    feats = FeatureStore.open(single_features)
    image, views = np.asarray(feats.array("image")), np.asarray(feats.array("text_views")).transpose(1, 0, 2)
    tau = feats.manifest.tau
    cos = (views * image[:, None]).sum(-1) / (np.linalg.norm(views, axis=-1) * np.linalg.norm(image, axis=-1)[:, None])
    sim = feats.array("similarity")
    np.testing.assert_allclose(sim.sum(axis=1), 1.0, rtol=0, atol=1e-5)
    np.testing.assert_allclose(sim, softmax(cos / tau), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(feats.array("fused_sa"), np.einsum("nc,ncd->nd", sim, views), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(feats.array("fused_sum"), views.sum(1), rtol=1e-5, atol=1e-5)
    concat = feats.fused_concat()
    assert concat.shape == (len(image), 5 * 64)
    np.testing.assert_array_equal(concat[7].reshape(5, 64), views[7])
    # MMRec reads exactly these files, row = itemID
    np.testing.assert_array_equal(np.load(single_features / "image_feat.npy"), image)
    np.testing.assert_array_equal(np.load(single_features / "text_feat.npy"), feats.array("fused_sa"))


def test_bad_inputs_are_counted_and_listed(single_features, encode_dataset):
    n = DatasetDir.open(encode_dataset).num_items
    m = FeatureStore.open(single_features).manifest
    assert m.counts.missing_image == 1 and m.counts.corrupt_image == 1
    assert m.counts.empty_text_fields["title"] == 1
    assert m.counts.chunked_views["description"] == 1 and m.counts.chunked_views["global"] >= 1
    lines = (single_features / "missing_images.txt").read_text().splitlines()
    assert lines == [f"{n - 4}\tBAD-CORRUPT\tcorrupt", f"{n - 3}\tBAD-NOIMAGE\tmissing"]
    status = np.load(single_features / "image_status.npy")
    assert status[n - 4] == 2 and status[n - 3] == 1 and (status[:n - 4] == 0).all()
    timing = m.timing
    assert timing["items_encoded"] == n and timing["shards_encoded"] == 14 and timing["total_s"] > 0
    stats = json.loads((single_features / "stats.json").read_text())
    assert stats["ranks"][0]["missing_image"] == 1 and stats["ranks"][0]["data_wait_s"] >= 0


def test_rerun_encodes_only_missing_parts_and_remerges_with_a_new_tau(single_features, encode_dataset, tiny_clip,
                                                                      tmp_path):
    out = tmp_path / "feats"
    shutil.copytree(single_features, out)
    part_path(out, "shard-000003.tar").unlink()
    part_path(out, "shard-000005.tar").unlink()  # the empty shard
    (out / "parts" / ".shard-000004.npz.tmp-123-456").write_bytes(b"half")  # left by a killed writer
    m = encode_in_process(encode_dataset, out, *tiny_clip, "tau=0.5")
    assert m.timing["shards_encoded"] == 2 and m.timing["items_encoded"] == 10
    assert not list((out / "parts").glob(".*"))
    for name in ("image", "text_views"):
        np.testing.assert_array_equal(np.load(out / f"{name}.npy"), np.load(single_features / f"{name}.npy"))
    before, after = np.load(single_features / "similarity.npy"), np.load(out / "similarity.npy")
    assert m.tau == 0.5 and not np.allclose(before, after)
    assert after.std(axis=1).mean() < before.std(axis=1).mean()  # a higher tau flattens the softmax


def test_shipped_configs_load():
    from cliper_dist import config
    from cliper_dist.encode.job import EncodeConfig

    cliper = config.load(EncodeConfig, REPO / "configs" / "encode" / "cliper.yaml", ["data=d", "out=o", "model=m"])
    assert cliper.text.mode == "chunk" and cliper.views.names[-1] == "global" and cliper.tau == 0.1
    cliper.validate()
    long = config.load(EncodeConfig, REPO / "configs" / "encode" / "long-clip.yaml", ["text.mode=chunk"])
    assert long.text.context_length == 248 and long.text.mode == "chunk"


def test_long_clip_checkpoint_runs_through_the_job(one_shard_dataset, tiny_clip, tmp_path):
    from cliper_dist.encode.encoder import save_random_checkpoint

    model, _ = tiny_clip
    ckpt = save_random_checkpoint(model, tmp_path / "long-clip.pt", seed=5, context_length=248)
    m = encode_in_process(one_shard_dataset, tmp_path / "feats", model, str(ckpt), "text.mode=truncate")
    assert m.context_length == 248 and m.text["mode"] == "truncate"
    views = np.load(tmp_path / "feats" / "text_views.npy")
    assert views.shape == (5, 10, 64) and np.isfinite(views).all()
