# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one way the controller waits: a deadline, and pauses between attempts that grow from `first` to `most`."""

from __future__ import annotations

import time


class Waiter:
    """`while True: attempt; if waiter.expired(): give up; waiter.pause()` - a caller says what it waits on and
    what giving up means; the deadline and the pacing are here."""

    def __init__(self, timeout: float, first: float = 0.05, most: float = 0.5) -> None:
        self.start = time.monotonic()
        self.deadline = self.start + max(0.0, timeout)
        self.interval = first
        self.most = most

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def remaining(self) -> float:
        return max(0.0, self.deadline - time.monotonic())

    def expired(self) -> bool:
        return time.monotonic() >= self.deadline

    def pause(self) -> None:
        """Sleep until the next attempt (never past the deadline); the next pause is twice as long, up to `most`."""
        time.sleep(min(self.interval, self.remaining()))
        self.interval = min(self.interval * 2, self.most)
