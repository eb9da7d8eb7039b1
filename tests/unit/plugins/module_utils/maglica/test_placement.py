# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""placement.py: the seed's score (active x 10 / weight), best first, ties by configuration order."""

from __future__ import annotations

from maglica import placement


def test_score():
    assert placement.score(0, 10) == 0
    assert placement.score(3, 10) == 3.0
    assert placement.score(4, 20) == 2.0
    assert placement.score(1, 3) == 10.0 / 3


def test_weight_doubles_capacity():
    assert placement.score(4, 20) == placement.score(2, 10)


def test_rank_least_loaded_first():
    ranked = placement.rank([
        {'host': 'a', 'weight': 10, 'active': 3},
        {'host': 'b', 'weight': 10, 'active': 1},
        {'host': 'c', 'weight': 40, 'active': 6},
    ])
    assert [(c['host'], c['score']) for c in ranked] == [('b', 1.0), ('c', 1.5), ('a', 3.0)]
    assert set(ranked[0]) == {'host', 'weight', 'active', 'score'}


def test_weight_decides_between_equal_loads():
    ranked = placement.rank([{'host': 'small', 'weight': 5, 'active': 2}, {'host': 'big', 'weight': 50, 'active': 2}])
    assert [c['host'] for c in ranked] == ['big', 'small']


def test_ties_keep_configuration_order():
    candidates = [{'host': h, 'weight': 10, 'active': 1} for h in ('z', 'm', 'a')]
    assert [c['host'] for c in placement.rank(candidates)] == ['z', 'm', 'a']
    assert [c['host'] for c in placement.rank(list(reversed(candidates)))] == ['a', 'm', 'z']


def test_rank_does_not_change_its_input():
    candidates = [{'host': 'a', 'weight': 10, 'active': 0}]
    placement.rank(candidates)
    assert candidates == [{'host': 'a', 'weight': 10, 'active': 0}]
    assert placement.rank([]) == []
