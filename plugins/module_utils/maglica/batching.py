# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Customisations of clones that a host worker makes at the same time share one libguestfs launch.

A launch (and inspection) costs tens of seconds under software emulation; editing a
few files costs well under one. So: the first clone of an image is customised alone
and its layout is remembered; later clones skip inspection, and those that reach
customisation within `window` seconds of each other go through one appliance.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from concurrent.futures import Future

from . import customize

LOG = logging.getLogger('maglica.batching')


def image_key(image_name, disk_paths):
    """Identifies an image's content well enough to reuse its layout: name, and each disk's size and mtime."""
    stats = []
    for path in disk_paths:
        try:
            info = os.stat(path)
        except OSError:
            return None
        stats.append((path, info.st_size, int(info.st_mtime)))
    return (image_name, tuple(stats))


def customize_alone(key, disks, settings):
    """The customizer without batching: one launch per clone, always inspecting."""
    result = customize.customize(disks, settings)
    result.pop('layout', None)
    return result


class CustomizeBatcher(object):
    def __init__(self, window=1.0, max_batch=16, max_wait=5.0):
        self.window = window
        self.max_batch = max_batch
        self.max_wait = max_wait
        self.layouts = {}
        self.first_locks = {}
        self.lock = threading.Lock()
        self.pending = queue.Queue()
        self.thread = None

    def __call__(self, key, disks, settings):
        """Customise one clone; returns its result or raises its MaglicaError."""
        layout = self.layouts.get(key) if key else None
        if layout is None:
            with self._first_lock(key):
                layout = self.layouts.get(key) if key else None
                if layout is None:
                    result = customize.customize(disks, settings)
                    if key:
                        self.layouts[key] = result['layout']
                    result.pop('layout')
                    return result
        if not layout['batchable']:
            result = customize.customize(disks, settings, layout)
            result.pop('layout')
            return result
        done = Future()
        self.pending.put((disks, settings, layout, done))
        self._start()
        result = done.result()
        if isinstance(result, Exception):
            raise result
        return result

    def _first_lock(self, key):
        with self.lock:
            return self.first_locks.setdefault(key, threading.Lock())

    def _start(self):
        with self.lock:
            if self.thread is None:
                self.thread = threading.Thread(target=self._run, name='customize-batcher', daemon=True)
                self.thread.start()

    def _gather(self):
        """The next batch: the first waiting clone, and those that arrive within `window` of the last one."""
        batch = [self.pending.get()]
        started = time.monotonic()
        deadline = started + self.window
        while len(batch) < self.max_batch:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                batch.append(self.pending.get(timeout=remaining))
            except queue.Empty:
                break
            deadline = min(time.monotonic() + self.window, started + self.max_wait)
        return batch

    def _run(self):
        while True:
            batch = self._gather()
            LOG.info('customising %d clone(s) in one appliance', len(batch))
            try:
                results = customize.customize_batch([(disks, settings, layout) for disks, settings, layout, _done in batch])
            except Exception as e:  # the launch itself failed: every clone of the batch fails with it
                results = [e] * len(batch)
            for (_disks, _settings, _layout, done), result in zip(batch, results):
                done.set_result(result)
