import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cliper_dist.data.fusion import FUSIONS, fuse_concat, fuse_sa, fuse_sum, get_fusion, view_similarity
from cliper_dist.data.item_features import Features
from cliper_dist.errors import UserError


def test_similarity_and_fusions_follow_the_equations():
    torch.manual_seed(0)
    views, image = torch.randn(7, 5, 16), torch.randn(7, 16)
    sim = view_similarity(views, image, tau=0.1)
    for i in range(7):
        cos = torch.stack([F.cosine_similarity(views[i, j], image[i], dim=0) for j in range(5)])
        assert torch.allclose(sim[i], torch.softmax(cos / 0.1, dim=0), atol=1e-6)
    assert torch.allclose(sim.sum(1), torch.ones(7), atol=1e-6)
    expected_sa = torch.stack([sum(sim[i, j] * views[i, j] for j in range(5)) for i in range(7)])
    assert torch.allclose(fuse_sa(views, sim), expected_sa, atol=1e-5)
    assert torch.allclose(fuse_sum(views), views.sum(1))
    assert fuse_concat(views).shape == (7, 80) and torch.equal(fuse_concat(views)[:, 16:32], views[:, 1])
    assert torch.equal(FUSIONS["sa"].fixed(views, image, 0.1), fuse_sa(views, sim))
    assert FUSIONS["mlp"].trained and torch.equal(FUSIONS["mlp"].fixed(views, None, 0.1), fuse_sum(views))


def test_an_unknown_fusion_names_the_choices():
    with pytest.raises(UserError, match="model.fusion must be one of sum, concat, sa, mlp; got 'max'"):
        get_fusion("max")


@pytest.mark.parametrize("name", ["sa", "concat"])
def test_fused_text_read_in_blocks_is_the_fusion_of_the_whole(tmp_path, name):
    """FREEDOM reads its text columns and kNN queries a block of items at a time: blocks that do
    not divide the items must give the whole table's fusion, row for row and column for column."""
    rng = np.random.default_rng(0)
    np.save(tmp_path / "views.npy", rng.standard_normal((3, 50, 8), dtype=np.float32))
    np.save(tmp_path / "image.npy", rng.standard_normal((50, 8), dtype=np.float32))
    views, image = (np.load(tmp_path / f"{n}.npy", mmap_mode="r") for n in ("views", "image"))
    features = Features(image, views, None, str(tmp_path), 50)
    text = dataclasses.replace(features.text_vectors(get_fusion(name), 0.1), block=7)
    expected = FUSIONS[name].fixed(torch.from_numpy(np.array(views)).transpose(0, 1), torch.from_numpy(np.array(image)),
                                   0.1)
    assert text.width == expected.shape[1]
    assert torch.allclose(text.whole(), expected, atol=1e-6)
    assert torch.allclose(text.columns(3, 6), expected[:, 3:6], atol=1e-6) and text.columns(3, 6).is_contiguous()
    assert torch.allclose(text.read(np.array([4, 0, 49])), expected[[4, 0, 49]], atol=1e-6)
    image_vectors = dataclasses.replace(features.image_vectors(), block=7)
    assert torch.equal(image_vectors.whole(), torch.from_numpy(np.array(image)))
