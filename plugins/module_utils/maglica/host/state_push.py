# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The host's state, watched for the host worker (as root on the hypervisor): taken from the local libvirtd every
host_worker.state_poll_interval seconds in a thread of its own, and at once when the loop asks (after jobs ended).
The host worker's loop pushes it to the client worker (it owns the REQ socket): on a change, as a whole copy every
host_worker.state_interval, and when the client worker asks."""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import Any, Dict, Optional

from ..cluster import host_state, virt
from ..cluster.config import Config, Host

LOG = logging.getLogger('maglica.host.state')


@dataclass(frozen=True)
class Taken:
    """One snapshot of the host: the state, its digest, and time.monotonic() when its reading began."""
    state: Dict[str, Any]
    digest: str
    at: float


class StateWatcher:
    def __init__(self, config: Config, host: Host, wake_fd: int) -> None:
        self.config = config
        self.host = host
        self.interval = config.host_worker['state_poll_interval']
        self.wake_fd = wake_fd
        self.latest: Optional[Taken] = None
        self.lock = threading.Lock()  # one snapshot at a time: the thread's or the loop's
        self.last_error: Optional[str] = None
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self.run, name='state-watcher', daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stopped.set()
        if self.thread.is_alive():
            self.thread.join(timeout=10)

    def take(self) -> bool:
        """Take the host's state now; whether it differs from the one before. A libvirtd that does not answer keeps
        the last snapshot, which then grows old: the host worker stops vouching for it (current) and the library
        asks the libvirtd itself."""
        with self.lock:
            # Counted from before the first read: a snapshot begun before a change the library made here (and told
            # the client worker of, state_changed) must not pass for one taken after it.
            began = time.monotonic()
            try:
                with virt.Connection(self.config, self.host, readonly=True) as conn:
                    state = host_state.snapshot(conn)
            except Exception as e:  # reported once per kind of failure; the next poll tries again
                text = str(e)
                if text != self.last_error:
                    LOG.warning('cannot take the state of %s: %s', self.host.name, text)
                self.last_error = text
                return False
            if self.last_error is not None:
                LOG.info('the state of %s can be taken again', self.host.name)
                self.last_error = None
            before = self.latest
            self.latest = Taken(state, host_state.digest(state), began)
            return before is None or before.digest != self.latest.digest

    def current(self) -> Optional[Taken]:
        """The last snapshot while it is recent enough to vouch for (two polls and a second), else None."""
        latest = self.latest
        if latest is None or time.monotonic() - latest.at > 2 * self.interval + 1:
            return None
        return latest

    def run(self) -> None:
        while not self.stopped.wait(self.interval):
            if self.take():
                try:
                    os.write(self.wake_fd, b's')  # the loop pushes the change at once
                except BlockingIOError:
                    pass  # the loop has wake-ups waiting already
