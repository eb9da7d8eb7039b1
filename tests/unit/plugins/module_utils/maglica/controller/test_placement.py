# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""placement.py: filter, score (seed: active x 10 / weight; resources), reservations, spread groups, batches placed
in order, with Hypothesis for its properties."""

from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from maglica.controller import placement
from maglica.errors import ConflictError


def seed_load(active, weight):
    return placement.score_seed(placement.HostState(host='h', weight=weight, active=active))


def test_seed_score():
    assert seed_load(0, 10) == 0
    assert seed_load(3, 10) == 3.0
    assert seed_load(4, 20) == 2.0
    assert seed_load(1, 3) == 10.0 / 3


def test_weight_doubles_capacity():
    assert seed_load(4, 20) == seed_load(2, 10)


def test_seed_policy_takes_the_least_loaded_host():
    states = [placement.HostState(host=h, weight=w, order=n, active=a, images={'img': placement.ImageOnHost(1024, 1, 1, 'default')})
              for n, (h, w, a) in enumerate((('a', 10, 3), ('b', 10, 1), ('c', 40, 6)))]
    decision = placement.decide(states, placement.Request('img', 'x'), 'seed')
    assert decision.host == 'b' and [(c['host'], c['score']) for c in decision.candidates] == [('b', 1.0), ('c', 1.5), ('a', 3.0)]


def test_weight_decides_between_equal_loads():
    states = hosts(('small', {'weight': 5, 'active': 2}), ('big', {'weight': 50, 'active': 2}))
    assert placement.decide(states, placement.Request('img', 'x'), 'seed').host == 'big'


def test_ties_keep_configuration_order():
    assert placement.decide(hosts(('z', {}), ('m', {}), ('a', {})), placement.Request('img', 'x'), 'seed').host == 'z'
    assert placement.decide(hosts(('a', {}), ('m', {}), ('z', {})), placement.Request('img', 'x'), 'seed').host == 'a'


# -- the engine (issue 13): filter, score, reservations, spread groups, batches -------------------

GIB_MB = 1024


def host(name, weight=10, memory_mb=8 * GIB_MB, cpus=4, image_mb=1024, image_vcpus=1, disk=1024 ** 3,
         pool_free=None, order=0, **kwargs):
    """A host holding image `img` (one disk of `disk` bytes in pool `default`, with `pool_free` bytes free)."""
    state = placement.HostState(host=name, weight=weight, order=order, memory_total_mb=memory_mb, cpus=cpus, **kwargs)
    state.images['img'] = placement.ImageOnHost(image_mb, image_vcpus, disk, 'default')
    state.pool_free_bytes['default'] = 100 * 1024 ** 3 if pool_free is None else pool_free
    return state


def hosts(*specs):
    return [host(name, order=n, **kw) for n, (name, kw) in enumerate(specs)]


def place_many(states, count, policy, **request):
    """Place `count` clones one after another, each reserved before the next; returns {host: clones}."""
    placed = {s.host: 0 for s in states}
    for n in range(count):
        decision = placement.place(states, placement.Request('img', 'vm%d' % n, **request), policy)
        placed[decision.host] += 1
    return placed


@pytest.mark.parametrize('policy', placement.POLICIES)
def test_reservations_spread_clones_in_flight(policy):
    """Four clones placed one after another on two equal hosts, none running yet: two and two."""
    assert place_many(hosts(('a', {}), ('b', {})), 4, policy) == {'a': 2, 'b': 2}


@pytest.mark.parametrize('policy', placement.POLICIES)
def test_weights_1_1_2_over_8_give_2_2_4(policy):
    states = hosts(('a', {'weight': 1}), ('b', {'weight': 1}), ('c', {'weight': 2}))
    assert place_many(states, 8, policy) == {'a': 2, 'b': 2, 'c': 4}


def test_start_false_counts_for_disk_and_a_slot_not_memory():
    state = host('a', pool_free=10 * 1024 ** 3)
    state.reserve('img', start=False, clone_mode='full', hostname='x')
    assert (state.committed_mb, state.reserved, state.pool_free_bytes['default']) == (0, 1, 9 * 1024 ** 3)
    state.reserve('img', start=True, clone_mode='linked', hostname='y')
    assert (state.committed_mb, state.committed_vcpus, state.pool_free_bytes['default']) == (1024, 1, 9 * 1024 ** 3)


def test_a_reservation_whose_domain_is_seen_counts_once():
    state = host('a', pool_free=10 * 1024 ** 3)
    state.domains['done'] = True       # surveyed running: its memory and disk are counted through the domain
    state.reserve('img', hostname='done')
    assert (state.committed_mb, state.pool_free_bytes['default']) == (0, 10 * 1024 ** 3)
    state.domains['defined'] = False   # defined, not started yet: the disk is there, the memory is still to come
    state.reserve('img', hostname='defined')
    assert (state.committed_mb, state.pool_free_bytes['default']) == (1024, 10 * 1024 ** 3)


def test_resources_filters_with_reasons():
    states = hosts(('small', {'memory_mb': 1126, 'committed_mb': 0}), ('full', {'pool_free': 512 * 1024 ** 2}),
                   ('ok', {}))
    request = placement.Request('img', 'web1', start=True)
    for s in states:
        s.images['img'].memory_mb = 2048
        s.images['img'].disk_bytes = 1024 ** 3
    decision = placement.decide(states, request, 'resources')
    assert decision.host == 'ok'
    assert decision.filtered == [{'host': 'small', 'reason': 'small: 1.1 GiB uncommitted, clone needs 2 GiB'},
                                 {'host': 'full', 'reason': 'full: 512 MiB free in pool default, clone needs 1 GiB'}]
    assert [c['host'] for c in decision.candidates] == ['ok']
    assert set(decision.candidates[0]) == {'host', 'weight', 'score', 'active', 'reserved', 'free_memory_mb',
                                           'free_disk_bytes', 'group_members'}
    # A linked clone copies nothing, and a clone that does not start commits no memory.
    assert placement.decide(states, placement.Request('img', 'web1', clone_mode='linked', start=False), 'resources').host == 'small'


def test_overcommit_multiplies_the_total():
    state = host('a', memory_mb=1024, image_mb=1536)
    with pytest.raises(placement.NoHostFits, match='a: 1 GiB uncommitted, clone needs 1.5 GiB'):
        placement.decide([state], placement.Request('img', 'x'), 'resources', overcommit=1.0)
    assert placement.decide([state], placement.Request('img', 'x'), 'resources', overcommit=2.0).host == 'a'


def test_no_host_fits_names_every_reason():
    states = hosts(('a', {'memory_mb': 512}), ('b', {'memory_mb': 256}), ('c', {}))
    del states[2].images['img']
    with pytest.raises(placement.NoHostFits) as caught:
        placement.decide(states, placement.Request('img', 'web1', exclude_hosts=()), 'resources')
    assert str(caught.value) == ('no host fits a clone of img as web1: a: 512 MiB uncommitted, clone needs 1 GiB; '
                                 'b: 256 MiB uncommitted, clone needs 1 GiB; c: does not hold image img')
    assert [f['host'] for f in caught.value.filtered] == ['a', 'b', 'c']
    assert isinstance(caught.value, ConflictError)


def test_seed_policy_does_not_filter_on_resources():
    states = hosts(('a', {'memory_mb': 512}))
    assert placement.decide(states, placement.Request('img', 'x'), 'seed').host == 'a'


def test_exclude_and_forced_host():
    states = hosts(('a', {}), ('b', {}), ('c', {}))
    decision = placement.decide(states, placement.Request('img', 'x', exclude_hosts=('a', 'b')), 'seed')
    assert decision.host == 'c' and decision.filtered == [{'host': 'a', 'reason': 'a: excluded (exclude_hosts)'},
                                                          {'host': 'b', 'reason': 'b: excluded (exclude_hosts)'}]
    assert placement.decide(states, placement.Request('img', 'x', host='b'), 'seed').host == 'b'
    small = hosts(('a', {}), ('b', {'memory_mb': 100}))
    with pytest.raises(placement.NoHostFits, match='host b fits a clone of img as x: b: 100 MiB uncommitted'):
        placement.decide(small, placement.Request('img', 'x', host='b'), 'resources')
    with pytest.raises(ConflictError, match="placement policy 'best' is not one of seed, resources"):
        placement.decide(states, placement.Request('img', 'x'), 'best')


@pytest.mark.parametrize('policy', placement.POLICIES)
def test_spread_group_goes_to_different_hosts_then_the_fewest_members(policy):
    # c is by far the least loaded: without a group every clone would go there first.
    states = hosts(('a', {'active': 5, 'committed_mb': 4096}), ('b', {'active': 5, 'committed_mb': 4096}), ('c', {}))
    states[0].groups['web'] = 0
    placed = place_many(states, 3, policy, spread_group='web')
    assert placed == {'a': 1, 'b': 1, 'c': 1}
    placed = place_many(states, 3, policy, spread_group='web')
    assert placed == {'a': 1, 'b': 1, 'c': 1}, 'past one each: the fewest members first'


def test_spread_group_counts_members_already_there():
    states = hosts(('a', {}), ('b', {}))
    states[0].groups['db'] = 1
    decision = placement.decide(states, placement.Request('img', 'db2', spread_group='db'), 'seed')
    assert decision.host == 'b' and [c['group_members'] for c in decision.candidates] == [0, 1]


def test_a_batch_placed_in_order_reserves_as_it_goes():
    states = hosts(('a', {'memory_mb': 2048}), ('b', {'memory_mb': 2048}))
    decisions = [placement.place(states, placement.Request('img', 'vm%d' % n), 'resources') for n in range(4)]
    assert [d.host for d in decisions] == ['a', 'b', 'a', 'b']
    with pytest.raises(placement.NoHostFits, match='a: 0 MiB uncommitted, clone needs 1 GiB; b: 0 MiB'):
        placement.place(states, placement.Request('img', 'vm4'), 'resources')


# -- properties ---------------------------------------------------------------------------------

HOST_SPECS = st.lists(st.tuples(st.integers(1, 4), st.integers(1, 16), st.integers(0, 6), st.integers(1, 8)), min_size=1, max_size=8)


@settings(max_examples=150, deadline=None)
@given(HOST_SPECS, st.integers(1, 40), st.sampled_from([1.0, 1.5]), st.booleans())
def test_never_places_beyond_capacity(specs, clones, overcommit, start):
    """Under resources, however many clones come, no host commits more memory or disk than it has."""
    states = []
    for n, (weight, memory_gib, running_gib, disk_gib) in enumerate(specs):
        state = host('h%d' % n, weight=weight, memory_mb=memory_gib * GIB_MB, committed_mb=min(running_gib, memory_gib) * GIB_MB,
                     pool_free=disk_gib * 1024 ** 3, order=n)
        states.append(state)
    for n in range(clones):
        request = placement.Request('img', 'vm%d' % n, start=start)
        try:
            chosen = placement.decide(states, request, 'resources', overcommit).host
        except placement.NoHostFits as e:
            assert len(e.filtered) == len(states)
            continue
        next(s for s in states if s.host == chosen).reserve('img', start, 'full', None, 'vm%d' % n)
    for state in states:
        assert state.committed_mb <= state.memory_total_mb * overcommit
        assert state.pool_free_bytes['default'] >= 0


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 4), min_size=1, max_size=6), st.integers(1, 5), st.sampled_from(placement.POLICIES))
def test_equal_hosts_fill_in_proportion_to_weight(weights, rounds, policy):
    """Empty equal hosts, sum(weights) x rounds clones: each host gets weight x rounds."""
    states = [host('h%d' % n, weight=w, memory_mb=1024 * GIB_MB, cpus=1024, order=n) for n, w in enumerate(weights)]
    placed = place_many(states, sum(weights) * rounds, policy)
    assert placed == {'h%d' % n: w * rounds for n, w in enumerate(weights)}


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 6), st.integers(1, 20))
def test_spread_group_members_differ_by_at_most_one(host_count, members):
    states = [host('h%d' % n, order=n, memory_mb=1024 * GIB_MB, active=n) for n in range(host_count)]
    place_many(states, members, 'resources', spread_group='g')
    counts = [s.groups.get('g', 0) for s in states]
    assert max(counts) - min(counts) <= 1 and sum(counts) == members


def test_a_host_in_maintenance_takes_nothing_and_says_why():
    states = hosts(('a', {}), ('b', {'maintenance': True}), ('c', {'active': 5}))
    decision = placement.decide(states, placement.Request('img', 'x'), 'seed')
    assert decision.host == 'a'
    assert [c['host'] for c in decision.candidates] == ['a', 'c']
    assert decision.filtered == [{'host': 'b', 'reason': 'b: in maintenance (maglica host activate b brings it back)'}]
    with pytest.raises(placement.NoHostFits, match=r'host b fits a clone of img as x: b: in maintenance'):
        placement.decide(states, placement.Request('img', 'x', host='b'), 'resources')
