import torch
import torch.nn.functional as F

import pytest

from cliper_dist.errors import UserError
from cliper_dist.model.fusion import FUSIONS, fuse_concat, fuse_sa, fuse_sum, get_fusion, view_similarity


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
