# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Spare clones, run as root on a hypervisor by its host worker: a clone's disk copy and libguestfs appliance,
made before the clone is asked for.

Under software emulation a clone job's time is mostly one appliance launch (about 11 s on the testbed) and
inspection; writing the clone's files takes 3-4 s. libguestfs 1.48 cannot add a drive to a launched appliance
(hotplug was removed), so an appliance cannot wait for a disk that does not exist yet. A spare therefore is both:
a copy of an image's disks under hidden names beside them, and an appliance already launched on that copy. The
next clone of the image takes it (`take`): the files are linked to the clone's own disk paths, the clone is
customised in the running appliance, and a new spare is made behind it (`replenish`).

- A spare is keyed by batching.image_key (each disk's path, size and mtime): a changed image is never served by an
  old copy. A ready spare whose image changed is replaced at once (and one whose image went is removed), and a new
  spare is inspected in its appliance when the image's layout is not known yet: a clone some time after an image
  update finds its spare ready. A spare of another key is removed when the images it keeps
  (host_worker.spare_images) are full.
- Every spare file is listed in the worker's record (STATE_DIR/HOST.spares.json) from before it is made until it is
  removed or has become a clone's disk (which the clone job's own record then owns). A worker that was killed
  removes them when it starts again. Only names that begin with SPARE_PREFIX are removed, whatever the
  record says.
- A spare that nobody took for `idle_s` seconds is closed and its files removed: an idle appliance holds memory.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from .. import private
from ..errors import HostError
from .batching import LayoutCache, image_key
from .disk_files import copy_sparse
from .customize import Customization, Disks, customize_launched
from .guest import GuestFS, GuestSettings, inspect, launch

LOG = logging.getLogger('maglica.spares')

SPARE_PREFIX = '.maglica-spare-'
# The appliance's memory: enough for customisation, and held while the spare waits (libguestfs' default is 1280).
APPLIANCE_MIB = 512
STALE_CHECK_S = 1.0  # how often ready spares' images are looked at for a change (one stat per disk)
SPARED_NOTE = 'customised in a spare: its disk copy and appliance were made before the job'


def spare_path(path: str, token: str) -> str:
    """Where a spare's copy of the image disk `path` is made: beside it (so that a link makes it the clone's disk),
    hidden, named by the spare."""
    return os.path.join(os.path.dirname(path), '%s%s-%s' % (SPARE_PREFIX, token, os.path.basename(path)))


def remove_files(paths: Sequence[str]) -> None:
    for path in paths:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


@dataclass
class Spare:
    """One spare: its files [(path, format)] in the order of the image's disks, and the appliance launched on them."""

    key: str
    image: str
    sources: List[Tuple[str, str]]  # the image's disks it copies [(path, format)]
    disks: List[Tuple[str, str]]
    token: str  # names its files and its log lines
    handle: Optional[GuestFS] = None
    ready_at: float = 0.0

    @property
    def paths(self) -> List[str]:
        return [path for path, _format in self.disks]


class SpareClones:
    """The spares of the images a host worker cloned last. Thread-safe: clone jobs take and replenish at once."""

    def __init__(self, record_path: str, layouts: LayoutCache, images: int = 1, idle_s: float = 600.0,
                 launcher: Callable[[Disks, int], GuestFS] = launch) -> None:
        self.record_path = record_path
        self.layouts = layouts
        self.images = max(1, images)
        self.idle_s = idle_s
        self.launcher = launcher
        self.lock = threading.Lock()
        self.ready: Dict[str, Spare] = {}
        self.making: Dict[str, Spare] = {}
        # Taken by a clone job, by token, until its files are the clone's (placed) or removed (discard).
        self.taken: Dict[str, Spare] = {}
        self.threads: List[threading.Thread] = []
        self.closed = False
        self.checked_at = 0.0  # when expire() last compared the ready spares' images with their keys
        self.remove_leftovers()

    # -- the record -----------------------------------------------------------

    def remove_leftovers(self) -> None:
        """Remove the spare files an earlier run of the worker listed and left (it was killed)."""
        try:
            with open(self.record_path) as handle:
                record = json.load(handle)
        except FileNotFoundError:
            record = {}
        except (OSError, ValueError) as e:
            LOG.warning('ignoring the spare record %s: %s', self.record_path, e)
            record = {}
        listed = [path for part in ('ready', 'making', 'taken') for paths in dict(record.get(part) or {}).values()
                  for path in paths] if isinstance(record, dict) else []
        paths = [path for path in listed if isinstance(path, str) and os.path.isabs(path)
                 and os.path.basename(path).startswith(SPARE_PREFIX)]
        remove_files(paths)
        if paths:
            LOG.info('removed %d spare file(s) left by an earlier run: %s', len(paths), ', '.join(paths))
        private.make_dir(os.path.dirname(os.path.abspath(self.record_path)))
        self._save()

    def _save(self) -> None:
        """Write the record (under self.lock, or before any thread runs): the spares ready and being made, by image
        key, with their files."""
        private.write_json(self.record_path, self._state())

    def _state(self) -> Dict[str, Dict[str, List[str]]]:
        return {'ready': {key: spare.paths for key, spare in self.ready.items()},
                'making': {key: spare.paths for key, spare in self.making.items()},
                'taken': {token: spare.paths for token, spare in self.taken.items()}}

    # -- taking and making ----------------------------------------------------

    def take(self, key: Optional[str], sources: Sequence[str]) -> Optional[Spare]:
        """The ready spare of the image whose disks are `sources` (its image_key `key`), now the caller's; or None."""
        if not key:
            return None
        with self.lock:
            spare = self.ready.get(key)
            if spare is None or len(spare.disks) != len(sources):
                return None
            del self.ready[key]
            self.taken[spare.token] = spare
            self._save()
        LOG.info('spare %s taken for a clone of %s', spare.token, ', '.join(sources))
        return spare

    def replenish(self, image: str, sources: Sequence[Tuple[str, str]]) -> None:
        """Start making a spare of `image`, whose disks are `sources` [(path, format)], unless one is ready or being
        made. The oldest spares of other images go when more than `images` images would have one."""
        key = image_key(image, [path for path, _format in sources])
        if not key:
            return
        with self.lock:
            if self.closed or key in self.ready or key in self.making:
                return
            token = uuid.uuid4().hex[:12]
            spare = Spare(key, image, list(sources), [(spare_path(path, token), fmt) for path, fmt in sources], token)
            evicted = []
            while self.ready and len(self.ready) + len(self.making) >= self.images:
                oldest = min(self.ready.values(), key=lambda s: s.ready_at)
                evicted.append(self.ready.pop(oldest.key))
            if len(self.making) >= self.images:  # every place is being made already
                self._save()
                pending = None
            else:
                self.making[key] = spare
                self._save()  # listed before its files exist
                pending = threading.Thread(target=self._make, args=(spare,), name='spare-%s' % spare.token, daemon=True)
                self.threads = [t for t in self.threads if t.is_alive()] + [pending]
        for old in evicted:
            self.discard(old, 'another image was cloned')
        if pending is not None:
            pending.start()

    def _make(self, spare: Spare) -> None:
        began = time.monotonic()
        handle: Optional[GuestFS] = None
        try:
            for (source, _format), (path, _spare_format) in zip(spare.sources, spare.disks):
                copy_sparse(source, path)
            handle = self.launcher(spare.disks, APPLIANCE_MIB)
            if self.layouts.get(spare.key) is None:  # inspected here, so that the clone that takes it need not
                self.layouts.put(spare.key, inspect(handle)[0])
        except Exception as e:  # a spare is an optimisation: its failure is logged, and clones copy and launch as before
            LOG.warning('making a spare of %s failed: %s', spare.image, e)
            if handle is not None:
                handle.close()
            remove_files(spare.paths)
            with self.lock:
                self.making.pop(spare.key, None)
                self._save()
            return
        with self.lock:
            wanted = not self.closed and self.making.get(spare.key) is spare
            if wanted:
                spare.handle = handle
                spare.ready_at = time.monotonic()
                del self.making[spare.key]
                self.ready[spare.key] = spare
                self._save()
        if not wanted:
            spare.handle = handle
            self.discard(spare, 'the worker is stopping')
            return
        LOG.info('spare %s ready in %.1fs: %s', spare.token, time.monotonic() - began, ', '.join(spare.paths))

    def place(self, spare: Spare, targets: Sequence[str]) -> None:
        """Make a taken spare's files the clone's disks `targets` (in the image's disk order): hard links, so that
        nothing at a target is overwritten, then the spare's names go. The clone job's own record owns the targets
        (it listed them first): this record lists the files no more."""
        for (path, _format), target in zip(spare.disks, targets):
            try:
                os.link(path, target)
            except OSError as e:
                raise HostError('cannot make the spare %s the clone disk %s: %s' % (path, target, e))
            os.unlink(path)
        with self.lock:
            self.taken.pop(spare.token, None)
            self._save()

    def customize(self, spare: Spare, settings: GuestSettings) -> Customization:
        """Customise the clone whose disks the spare's files now are, in the spare's appliance (closed after)."""
        handle, spare.handle = spare.handle, None
        result = customize_launched(handle, settings, self.layouts.get(spare.key))
        self.layouts.put(spare.key, result.pop('layout'))
        result['notes'].append(SPARED_NOTE)
        return result

    def discard(self, spare: Spare, why: str) -> None:
        """Close a spare's appliance and remove its files (those still under the spare's names)."""
        if spare.handle is not None:
            handle, spare.handle = spare.handle, None
            try:
                handle.close()
            except Exception as e:  # the appliance is gone either way
                LOG.warning('closing the appliance of spare %s: %s', spare.token, e)
        remove_files(spare.paths)
        with self.lock:
            self.taken.pop(spare.token, None)
            self._save()
        LOG.info('spare %s removed (%s)', spare.token, why)

    def expire(self) -> None:
        """Remove the spares nobody took for idle_s seconds, and (once a second) those whose image changed or went:
        a changed image gets a new spare at once, so a clone some time after an update finds it ready."""
        now = time.monotonic()
        check = now - self.checked_at >= STALE_CHECK_S
        with self.lock:
            idle = [spare for spare in self.ready.values() if now - spare.ready_at >= self.idle_s]
            stale = [spare for spare in self.ready.values() if check and spare not in idle
                     and image_key(spare.image, [path for path, _format in spare.sources]) != spare.key]
            for spare in idle + stale:
                del self.ready[spare.key]
        if check:
            self.checked_at = now
        for spare in idle:
            self.discard(spare, 'idle for %ds' % self.idle_s)
        for spare in stale:
            self.discard(spare, 'its image changed')
            self.replenish(spare.image, spare.sources)

    def state(self) -> Dict[str, Dict[str, List[str]]]:
        """The spares ready and being made, by image key, with their files: what the record says."""
        with self.lock:
            return self._state()

    def close(self, wait: float = 0.0) -> None:
        """Remove every ready spare; one still being made removes itself when its launch ends (within `wait`)."""
        with self.lock:
            self.closed = True
            ready, self.ready = list(self.ready.values()), {}
            threads = list(self.threads)
        for spare in ready:
            self.discard(spare, 'the worker is stopping')
        deadline = time.monotonic() + wait
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
