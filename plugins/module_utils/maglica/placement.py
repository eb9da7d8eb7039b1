# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Placement as the seed did it: the least loaded host, load = active domains x 10 / weight."""

from __future__ import annotations


def score(active_domains, weight):
    """Lower is better. A host of weight 20 carries twice the domains of one of weight 10 at the same score."""
    return active_domains * 10.0 / weight


def rank(candidates):
    """Score candidates [{host, weight, active}] and sort best first (ties by configuration order).

    Returns new dicts with a `score` key added.
    """
    scored = [dict(c, score=score(c['active'], c['weight']), order=i) for i, c in enumerate(candidates)]
    scored.sort(key=lambda c: (c['score'], c['order']))
    for entry in scored:
        del entry['order']
    return scored
