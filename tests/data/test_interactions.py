import numpy as np
import pytest

from cliper_dist.data.interactions import Interactions, read_inter, split_per_user, write_inter
from cliper_dist.errors import UserError


def test_split_rule_per_user():
    rng = np.random.default_rng(0)
    sizes = {0: 2, 1: 5, 2: 9, 3: 10, 4: 25}
    user = np.concatenate([np.full(n, u) for u, n in sizes.items()])
    item = np.concatenate([rng.choice(100, n, replace=False) for n in sizes.values()])
    inter = split_per_user(user, item, seed=999)
    for u, n in sizes.items():
        s = inter.split[inter.user == u]
        counts = [(s == k).sum() for k in (0, 1, 2)]
        if n < 3:
            assert counts == [n, 0, 0]
        elif n < 10:
            assert counts == [n - 2, 1, 1]
        else:  # MMRec's sizes: valid n//10, test n//5 - n//10, the rest train
            assert counts == [n - n // 5, n // 10, n // 5 - n // 10]
    again = split_per_user(user, item, seed=999)
    assert np.array_equal(again.split, inter.split)


def test_inter_round_trip_and_validation(tmp_path):
    inter = Interactions(np.array([0, 0, 1, 1, 1]), np.array([2, 3, 0, 1, 2]), np.array([0, 1, 0, 2, 0]))
    write_inter(tmp_path / "x.inter", inter)
    back = read_inter(tmp_path / "x.inter")
    assert all(np.array_equal(a, b) for a, b in zip((inter.user, inter.item, inter.split), (back.user, back.item, back.split)))
    back.validate(num_users=2, num_items=4, source="x")
    with pytest.raises(UserError, match="item ids outside"):
        back.validate(num_users=2, num_items=3, source="x")
    empty_valid = Interactions(inter.user, inter.item, np.array([0, 0, 0, 2, 0]))
    with pytest.raises(UserError, match="the valid split is empty"):
        empty_valid.validate(2, 4, "x")


def test_rating_and_timestamp_columns_round_trip_and_old_files_load(tmp_path):
    inter = Interactions(np.array([0, 1]), np.array([5, 6]), np.array([0, 2]), rating=np.array([4.0, np.nan]),
                         timestamp=np.array([1388534400.0, 1.5]))
    write_inter(tmp_path / "x.inter", inter)
    assert (tmp_path / "x.inter").read_text().splitlines() == [
        "userID\titemID\trating\ttimestamp\tx_label", "0\t5\t4\t1388534400\t0", "1\t6\tnan\t1.5\t2"]
    back = read_inter(tmp_path / "x.inter")
    np.testing.assert_array_equal(back.timestamp, inter.timestamp)
    np.testing.assert_array_equal(back.rating, inter.rating)
    write_inter(tmp_path / "old.inter", Interactions(inter.user, inter.item, inter.split))
    old = read_inter(tmp_path / "old.inter")
    assert old.rating is None and old.timestamp is None


def test_leave_one_out_by_time():
    user = np.array([0, 0, 0, 0, 1, 1, 2, 2, 2])
    time = np.array([4., 1., 2., 2., 0., 1., 7., 7., 7.])
    split = split_per_user(user, np.arange(9), seed=0, timestamp=time, leave_one_out=True).split
    # user 0: times 1, 2, 2 (ties in row order), 4; user 1: two events, all train; user 2: all tied
    assert split.tolist() == [2, 0, 0, 1, 0, 0, 0, 1, 2]


def test_bad_inter_files(tmp_path):
    p = tmp_path / "bad.inter"
    p.write_text("user\titem\n1\t2\n")
    with pytest.raises(UserError, match="header must name"):
        read_inter(p)
    p.write_text("userID\titemID\tx_label\n1\t2\t7\n")
    with pytest.raises(UserError, match="x_label must be 0, 1 or 2"):
        read_inter(p)
    with pytest.raises(UserError, match="not found"):
        read_inter(tmp_path / "missing.inter")
