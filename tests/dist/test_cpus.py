"""With ``CLIPER_BIND_CPUS=1``, each CPU rank of a host runs on its own share of the cores
(``dist.bind_cpus``); by default, on all of them."""

from __future__ import annotations

import os

import pytest

from cliper_dist import dist


@pytest.mark.parametrize("cpus,ranks,shares", [
    (list(range(4)), 2, [[0, 1], [2, 3]]),
    (list(range(5)), 2, [[0, 1, 2], [3, 4]]),  # the first rank takes the remainder
    ([3, 7, 1], 3, [[3], [7], [1]]),  # in the order given (dist orders by socket and core)
    ([0, 1], 3, [[], [], []]),  # fewer cores than ranks: unbound
    ([0, 1], 1, [[]]),  # one rank: unbound
])
def test_shares_are_disjoint_consecutive_and_cover_the_cpus(cpus, ranks, shares):
    assert [dist.cpu_share(cpus, r, ranks) for r in range(ranks)] == shares


def affinities(bind: bool) -> tuple[list[int], list[list[int]]]:
    """This rank's cores and those of each of its threads, after joining the group."""
    if bind:
        os.environ[dist.BIND_CPUS_ENV] = "1"
    dist.init(device="cpu")
    threads = []
    for t in os.listdir("/proc/self/task"):
        try:
            threads.append(sorted(os.sched_getaffinity(int(t))))
        except ProcessLookupError:
            pass  # ended meanwhile (init's connection deadline timer)
    return sorted(os.sched_getaffinity(0)), threads


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs 2 cores")
def test_two_ranks_split_the_hosts_cores_and_their_threads_follow(ranks):
    allowed = sorted(os.sched_getaffinity(0))
    (own_0, threads_0), (own_1, threads_1) = ranks.run(affinities, True)
    assert own_0 and own_1 and not set(own_0) & set(own_1)
    assert sorted(own_0 + own_1) == allowed
    assert len(threads_0) > 1 and all(t == own_0 for t in threads_0)  # gloo's threads included
    assert all(t == own_1 for t in threads_1)
    assert [own for own, _ in ranks.run(affinities, False)] == [allowed, allowed]


def test_a_world_of_one_keeps_every_core(monkeypatch):
    monkeypatch.setenv(dist.BIND_CPUS_ENV, "1")
    allowed = os.sched_getaffinity(0)
    assert dist.bind_cpus(0, 1) == []
    assert os.sched_getaffinity(0) == allowed
