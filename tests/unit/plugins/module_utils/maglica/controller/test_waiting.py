# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The controller's one waiter: its pauses grow to a ceiling and never pass the deadline."""

from __future__ import annotations

from maglica.controller import waiting


def test_pauses_grow_to_the_ceiling_and_stop_at_the_deadline(monkeypatch):
    clock = {'now': 100.0}
    slept = []
    monkeypatch.setattr(waiting.time, 'monotonic', lambda: clock['now'])

    def sleep(seconds):  # a fake clock: the waiter's arithmetic, not the machine's speed, is under test
        slept.append(round(seconds, 3))
        clock['now'] += seconds
    monkeypatch.setattr(waiting.time, 'sleep', sleep)
    waiter = waiting.Waiter(1.0, first=0.1, most=0.3)
    while not waiter.expired():
        waiter.pause()
    assert slept == [0.1, 0.2, 0.3, 0.3, 0.1] and waiter.remaining() == 0.0 and round(waiter.elapsed(), 3) == 1.0


def test_a_negative_timeout_is_already_expired():
    assert waiting.Waiter(-5).expired()
