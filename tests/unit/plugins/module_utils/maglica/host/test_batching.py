# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""batching.py: the layout cache that outlives the host worker, written by every clone job that learns a layout."""

from __future__ import annotations

import json
import os
import stat
import threading
import time

from maglica.host.batching import CustomizeBatcher, LayoutCache
from maglica.host.worker import Slot

WRITERS = 4
PUTS = 25


def layout(n):
    # About the size of a real layout, so that writing the file takes a while.
    return {'distro': 'debian', 'hostname': 'image%d' % n, 'major_version': 12, 'batchable': True,
            'mountpoints': {'/': [0, '1'], '/boot': [0, '2']}, 'padding': ['x' * 64] * 64}


def hammer(caches, path):
    """Every writer puts layouts of its own images at the same time; returns the errors they met."""
    barrier = threading.Barrier(len(caches))
    errors = []

    def writer(index, cache):
        barrier.wait()
        for n in range(PUTS):
            try:
                cache.put('image-%d-%d' % (index, n), layout(n))
            except Exception as e:  # pylint: disable=broad-except
                errors.append('%s: %s' % (type(e).__name__, e))
    threads = [threading.Thread(target=writer, args=(i, c)) for i, c in enumerate(caches)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return errors


def expected_keys():
    return set('image-%d-%d' % (i, n) for i in range(WRITERS) for n in range(PUTS))


def test_layout_cache_first_clones_of_different_images_do_not_break_each_other(tmp_path):
    """One cache, as the host worker has it: first clones of different images put their layouts at once.
    A put that raises fails (and rolls back) a clone that was already customised."""
    path = str(tmp_path / 'kvm1.layouts.json')
    cache = LayoutCache(path)
    errors = hammer([cache] * WRITERS, path)
    assert errors == [], 'concurrent puts failed: %s' % errors[:3]
    with open(path) as handle:
        assert set(json.load(handle)) == expected_keys()
    assert set(LayoutCache(path).layouts) == expected_keys(), 'a restarted worker knows every layout'
    assert [name for name in os.listdir(str(tmp_path)) if name != 'kvm1.layouts.json' and not name.endswith('.lock')] == [], \
        'no temporary file is left behind'


def test_layout_cache_writers_keep_each_others_layouts(tmp_path):
    """Two caches on one file (a worker restarted while the old one still finishes a job): a write reads
    the file again under the lock, so neither loses what the other learnt."""
    path = str(tmp_path / 'kvm1.layouts.json')
    caches = [LayoutCache(path) for _index in range(WRITERS)]
    errors = hammer(caches, path)
    assert errors == [], 'concurrent puts failed: %s' % errors[:3]
    assert set(LayoutCache(path).layouts) == expected_keys()


def test_layout_cache_file_is_private(tmp_path):
    path = str(tmp_path / 'kvm1.layouts.json')
    LayoutCache(path).put('image', layout(0))
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_a_submitted_batch_is_expected_whole_from_its_first_job():
    """The shared appliance waits for every job of a batch from the moment the first one arrives, also for those
    the worker's concurrency has not started yet; other clone jobs count one each, as before."""
    batcher = CustomizeBatcher(window=0.1, max_wait=60)
    with batcher.expecting('a' * 32, 3):
        assert batcher.expected == 3, 'the first job of a batch of 3 makes the appliance wait for all 3'
        with batcher.expecting('a' * 32, 3), batcher.expecting():
            assert batcher.expected == 4, 'a later job of the batch was counted already; an unrelated clone adds one'
        assert batcher.expected == 2, 'the third job of the batch is still awaited'
    assert batcher.expected == 1
    with batcher.expecting('a' * 32, 3):
        assert batcher.expected == 1, 'the last job of the batch arrives'
    assert batcher.expected == 0 and batcher.batches == {}


def test_jobs_of_a_batch_that_never_come_are_not_awaited_for_ever():
    batcher = CustomizeBatcher(window=0.1, max_wait=5)
    with batcher.expecting('b' * 32, 6):
        batcher._expire_batches(time.monotonic() + 1)
        assert batcher.expected == 6
        batcher._expire_batches(time.monotonic() + 6)
        assert batcher.expected == 1, 'after max_wait only the job that came is expected'
        with batcher.expecting('b' * 32, 6):
            assert batcher.expected == 2, 'a job of that batch that comes late still counts'
    assert batcher.expected == 0


def test_a_slot_is_given_back_once_whether_the_clone_joins_the_appliance_or_not():
    """A clone job gives its concurrency slot back when it joins the shared appliance (on_join), and its end must not
    give it back a second time: that would let one more job copy than the concurrency allows."""
    slots = threading.Semaphore(2)
    with Slot(slots) as joined:
        joined.release()  # joined the appliance
        with Slot(slots), Slot(slots):
            assert not slots.acquire(blocking=False), 'two jobs work, the joined one holds no slot'
    with Slot(slots), Slot(slots):
        assert not slots.acquire(blocking=False), 'still exactly two slots after every job ended'
