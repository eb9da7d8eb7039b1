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

A batch of clones submitted together (jobs carrying the same `batch` id, `size` of them for
this host) is expected whole from the moment its first job arrives: the appliance waits for
every one of them, even those the worker's concurrency has not let start yet. A clone job
gives its concurrency slot back when it joins the shared appliance (`on_join`), so the next
one can copy: a batch of 6 under a concurrency of 2 still shares one launch, while no more
than 2 jobs copy at a time.

Every launch is logged as "appliance launch: ..." so that it can be counted.
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
from typing import (
    Callable,
    Dict,
    Iterator,
    List,
    Optional,
    Protocol,
    Sequence,
    Tuple,
    Union,
)

from .. import private
from . import customize
from .customize import Customization, Disks
from .guest import GuestSettings, Layout

LOG = logging.getLogger('maglica.batching')


class Customizer(Protocol):
    """What customises a clone: customize_alone, or the host worker's CustomizeBatcher (with `on_join` bound)."""

    def __call__(self, key: Optional[str], disks: Disks, settings: GuestSettings) -> Customization:
        """Customise the clone on `disks`, an image whose layout is cached under `key` (image_key)."""


# A clone waiting in the shared appliance: its disks, settings, image layout and where its result goes.
Waiting = Tuple[Disks, GuestSettings, Layout, 'Future[Union[Customization, Exception]]']


def image_key(image_name: str, disk_paths: Sequence[str]) -> Optional[str]:
    """Identifies an image's content well enough to reuse its layout: name, and each disk's path, size and mtime."""
    stats = []
    for path in disk_paths:
        try:
            info = os.stat(path)
        except OSError:
            return None
        # Nanoseconds: a spare (spares.py) copied from an image written within the same second is not its copy.
        stats.append([path, info.st_size, info.st_mtime_ns])
    return json.dumps([image_name, stats])


def customize_alone(key: Optional[str], disks: Disks, settings: GuestSettings,
                    on_join: Optional[Callable[[], None]] = None) -> Customization:
    """The customizer without batching or layout cache: one launch and one inspection per clone."""
    LOG.info('appliance launch: customising 1 clone alone (no batching)')
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
        self.layouts: Dict[str, Layout] = {}
        self.lock = threading.Lock()
        if path:
            self.layouts = self._read()

    def _read(self) -> Dict[str, Layout]:
        if not self.path or not os.path.exists(self.path):
            return {}
        try:
            with open(self.path) as handle:
                layouts = json.load(handle)
        except (OSError, ValueError) as e:
            LOG.warning('ignoring the layout cache %s: %s', self.path, e)
            return {}
        return layouts if isinstance(layouts, dict) else {}

    def get(self, key: Optional[str]) -> Optional[Layout]:
        return self.layouts.get(key) if key else None

    def put(self, key: Optional[str], layout: Layout) -> None:
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
    def __init__(self, window: float = 1.0, max_batch: int = 32, max_wait: float = 60.0,
                 cache_path: Optional[str] = None) -> None:
        self.window = window
        self.max_batch = max_batch
        self.max_wait = max_wait
        self.layouts = LayoutCache(cache_path)
        self.first_locks: Dict[Optional[str], threading.Lock] = {}
        self.cond = threading.Condition()
        self.waiting: List[Waiting] = []
        self.expected = 0
        # batch id -> [members not arrived yet (an int), when its first member arrived]; those members count in `expected`.
        self.batches: Dict[str, List[float]] = {}
        self.thread: Optional[threading.Thread] = None

    @contextlib.contextmanager
    def expecting(self, batch_id: Optional[str] = None, batch_size: int = 1) -> Iterator[None]:
        """Around a clone job: the batch waits for it to reach customisation (or to end without). The first job
        of a submitted batch makes it wait for all `batch_size` jobs of that batch, arrived or not."""
        with self.cond:
            pending = self.batches.get(batch_id) if batch_id else None
            if batch_id and pending is None:
                self.batches[batch_id] = [batch_size - 1, time.monotonic()]
                self.expected += batch_size
            elif pending is not None and pending[0] > 0:
                pending[0] -= 1  # counted when the batch's first job arrived
            else:
                self.expected += 1
        try:
            yield
        finally:
            with self.cond:
                self.expected -= 1
                if not self.expected:
                    self.batches.clear()
                self.cond.notify_all()

    def _expire_batches(self, now: float) -> None:
        """Members of a batch that have not come within max_wait (their submission failed) are expected no more."""
        for pending in self.batches.values():
            if pending[0] > 0 and now - pending[1] >= self.max_wait:
                self.expected -= int(pending[0])
                pending[0] = 0

    def __call__(self, key: Optional[str], disks: Disks, settings: GuestSettings,
                 on_join: Optional[Callable[[], None]] = None) -> Customization:
        """Customise one clone; returns its result or raises its MaglicaError. `on_join` is called when the clone
        joins the shared appliance (and waits there for the others)."""
        layout = self.layouts.get(key)
        if layout is None:
            with self._first_lock(key):
                layout = self.layouts.get(key)
                if layout is None:
                    LOG.info('appliance launch: customising 1 clone alone (learning the layout of its image)')
                    result = customize.customize(disks, settings)
                    self.layouts.put(key, result.pop('layout'))
                    return result
        if not layout['batchable']:
            LOG.info('appliance launch: customising 1 clone alone (its layout cannot share an appliance)')
            result = customize.customize(disks, settings, layout)
            result.pop('layout')
            return result
        if on_join is not None:
            on_join()
        done: Future[Union[Customization, Exception]] = Future()
        with self.cond:
            self.waiting.append((disks, settings, layout, done))
            self.cond.notify_all()
            if self.thread is None:
                self.thread = threading.Thread(target=self._run, name='customize-batcher', daemon=True)
                self.thread.start()
        outcome = done.result()
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    def _first_lock(self, key: Optional[str]) -> threading.Lock:
        with self.cond:
            return self.first_locks.setdefault(key, threading.Lock())

    def _gather(self) -> List[Waiting]:
        """Wait for the next batch: every running clone job arrived (then `window` more), or max_wait."""
        with self.cond:
            while not self.waiting:
                self.cond.wait()
            deadline = time.monotonic() + self.max_wait
            quiet_since: Optional[float] = None
            while len(self.waiting) < self.max_batch:
                now = time.monotonic()
                if now >= deadline:
                    break
                self._expire_batches(now)
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

    def _run(self) -> None:
        while True:
            batch = self._gather()
            LOG.info('appliance launch: customising %d clone(s) in one appliance', len(batch))
            results: Sequence[Union[Customization, Exception]]
            try:
                results = customize.customize_batch([(disks, settings, layout) for disks, settings, layout, _done in batch])
            except Exception as e:  # the launch itself failed: every clone of the batch fails with it
                results = [e] * len(batch)
            for (_disks, _settings, _layout, done), result in zip(batch, results):
                done.set_result(result)
