# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Waiting in tests: on a condition, with a deadline - never a bare sleep as synchronisation; and the condition that a
process runs."""

from __future__ import annotations

import time


def wait_until(condition, timeout, what, interval=0.02):
    """Poll condition() until it returns something true; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError('timed out after %gs waiting for %s' % (timeout, what))
        time.sleep(interval)


def alive(pid):
    """Whether process `pid` runs (a zombie, dead but not reaped, does not)."""
    try:
        with open('/proc/%d/stat' % pid) as handle:
            return handle.read().rsplit(')', 1)[1].split()[0] != 'Z'
    except FileNotFoundError:
        return False
