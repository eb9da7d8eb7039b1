# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""state_push.py: how old a snapshot of the host counts as, on libvirt's test driver."""

from __future__ import annotations

import os
import time

from maglica.cluster import config, host_state
from maglica.host import state_push


def test_a_snapshot_counts_from_when_it_began_reading_libvirtd(monkeypatch):
    """A snapshot that began reading before the library changed a domain (and told the client worker so) must not
    pass for one taken after that change: its time is when it began, not when it ended. Seen in CI: `vm ensure`
    started a VM, and the next ensure read a snapshot begun before the start as taken after it, found the VM shut
    off and started it again ("domain is already running"). The reads are timed by a wrapper around the real
    snapshot of the real test driver: which side of a change a slow read ends on cannot be provoked reliably."""
    settings = config.validate({'hosts': [{'name': 'kvm1', 'uri': 'test:///default'}]})
    reads = []
    real = host_state.snapshot

    def timed(conn):
        began = time.monotonic()
        state = real(conn)
        reads.append((began, time.monotonic()))
        return state
    monkeypatch.setattr(host_state, 'snapshot', timed)
    read_fd, write_fd = os.pipe()
    try:
        watcher = state_push.StateWatcher(settings, settings.host('kvm1'), write_fd)
        assert watcher.take() is True
        (began, ended), = reads
        assert watcher.latest is not None and watcher.latest.at <= began < ended, (watcher.latest.at, began, ended)
        assert [d['name'] for d in watcher.latest.state['domains']] == ['test']
    finally:
        os.close(read_fd)
        os.close(write_fd)
