# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Customisations of clones that a host worker makes at the same time share one libguestfs launch.

A launch (and inspection) costs tens of seconds under software emulation; editing a
few files costs well under one. So the layout of each image (distribution, mounts)
is learnt once, by customising its first clone alone, and kept in the host worker's
state directory; later clones skip inspection, and every clone job running at the
same time joins one appliance: the batch closes when each running clone job has
reached customisation (or `max_wait` passes), plus `window` seconds for stragglers.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import threading
import time
from concurrent.futures import Future
from typing import Any, Dict, Optional

from . import customize, private

LOG = logging.getLogger('maglica.batching')


def image_key(image_name, disk_paths):
    """Identifies an image's content well enough to reuse its layout: name, and each disk's path, size and mtime."""
    stats = []
    for path in disk_paths:
        try:
            info = os.stat(path)
        except OSError:
            return None
        stats.append([path, info.st_size, int(info.st_mtime)])
    return json.dumps([image_name, stats])


def customize_alone(key, disks, settings):
    """The customizer without batching or layout cache: one launch and one inspection per clone (the seed's way)."""
    result = customize.customize(disks, settings)
    result.pop('layout', None)
    return result


class LayoutCache:
    """Image layouts by image key, in memory and in a JSON file (0600) that outlives the worker.

    Several clone jobs learn layouts of different images at once: a put reads the file again, adds its
    layout and writes it through a temporary file of its own, all under one lock (a thread lock, and
    an flock on `PATH.lock` for another process on the same file), so no writer loses another's layout
    or fails on another's temporary file.
    """

    def __init__(self, path: Optional[str] = None) -> None:
        self.path = path
        self.layouts: Dict[str, Any] = {}
        self.lock = threading.Lock()
        if path:
            self.layouts = self._read()

    def _read(self) -> Dict[str, Any]:
        if not self.path or not os.path.exists(self.path):
            return {}
        try:
            with open(self.path) as handle:
                layouts = json.load(handle)
        except (OSError, ValueError) as e:
            LOG.warning('ignoring the layout cache %s: %s', self.path, e)
            return {}
        return layouts if isinstance(layouts, dict) else {}

    def get(self, key: Optional[str]) -> Optional[Dict[str, Any]]:
        return self.layouts.get(key) if key else None

    def put(self, key: Optional[str], layout: Dict[str, Any]) -> None:
        if not key:
            return
        with self.lock:
            if not self.path:
                self.layouts[key] = layout
                return
            private.make_dir(os.path.dirname(os.path.abspath(self.path)))
            lock_path = self.path + '.lock'
            fd = os.open(lock_path, os.O_CREAT | os.O_RDWR, private.FILE_MODE)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                layouts = dict(self._read(), **{key: layout})
                private.write_json(self.path, layouts)
                self.layouts = dict(layouts, **self.layouts)
                self.layouts[key] = layout
            finally:
                os.close(fd)  # releases the flock


class CustomizeBatcher(object):
    def __init__(self, window=1.0, max_batch=32, max_wait=60.0, cache_path=None):
        self.window = window
        self.max_batch = max_batch
        self.max_wait = max_wait
        self.layouts = LayoutCache(cache_path)
        self.first_locks = {}
        self.cond = threading.Condition()
        self.waiting = []
        self.expected = 0
        self.thread = None

    @contextlib.contextmanager
    def expecting(self):
        """Around a clone job: the batch waits for it to reach customisation (or to end without)."""
        with self.cond:
            self.expected += 1
        try:
            yield
        finally:
            with self.cond:
                self.expected -= 1
                self.cond.notify_all()

    def __call__(self, key, disks, settings):
        """Customise one clone; returns its result or raises its MaglicaError."""
        layout = self.layouts.get(key)
        if layout is None:
            with self._first_lock(key):
                layout = self.layouts.get(key)
                if layout is None:
                    result = customize.customize(disks, settings)
                    self.layouts.put(key, result.pop('layout'))
                    return result
        if not layout['batchable']:
            result = customize.customize(disks, settings, layout)
            result.pop('layout')
            return result
        done = Future()
        with self.cond:
            self.waiting.append((disks, settings, layout, done))
            self.cond.notify_all()
            if self.thread is None:
                self.thread = threading.Thread(target=self._run, name='customize-batcher', daemon=True)
                self.thread.start()
        result = done.result()
        if isinstance(result, Exception):
            raise result
        return result

    def _first_lock(self, key):
        with self.cond:
            return self.first_locks.setdefault(key, threading.Lock())

    def _gather(self):
        """Wait for the next batch: every running clone job arrived (then `window` more), or max_wait."""
        with self.cond:
            while not self.waiting:
                self.cond.wait()
            deadline = time.monotonic() + self.max_wait
            quiet_since = None
            while len(self.waiting) < self.max_batch:
                now = time.monotonic()
                if now >= deadline:
                    break
                if len(self.waiting) >= self.expected:
                    quiet_since = quiet_since or now
                    if now - quiet_since >= self.window:
                        break
                    self.cond.wait(min(deadline, quiet_since + self.window) - now)
                else:
                    quiet_since = None
                    self.cond.wait(deadline - now)
            batch, self.waiting = self.waiting[:self.max_batch], self.waiting[self.max_batch:]
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
