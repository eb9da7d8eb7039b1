# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The host worker's record is fsynced by the worker where its promises need it (issue 21): a job taken is on
disk before it starts and before it is acknowledged, a result before it is reported - one fsync per turn of the
loop for both."""

from __future__ import annotations

import os
import sqlite3
import threading

import pytest

from maglica.client_worker import worker as client_worker
from maglica.controller.client import Client
from maglica.host import worker as host_worker
from maglica.protocol import messages
from unit_helpers import plain_worker_config, wait_until


@pytest.fixture
def cloud(tmp_path):
    """A client worker and a host worker, real, each running its loop in a thread of this process."""
    cfg = plain_worker_config(str(tmp_path))
    cw = client_worker.ClientWorker(cfg)
    hw = host_worker.HostWorker(cfg, 'kvm1')
    gate = threading.Event()
    real_sync = hw.record.sync

    def held_sync():
        # A disk that takes its time cannot be provoked on demand: this wait is the test's, the fsync the real one.
        gate.wait(30)
        real_sync()
    hw.record.sync = held_sync
    threads = [threading.Thread(target=w.run, daemon=True) for w in (cw, hw)]
    for thread in threads:
        thread.start()
    yield cfg, cw, hw, gate
    gate.set()
    cw.stopping = hw.stopping = True
    for thread in threads:
        thread.join(10)
    hw.close()
    cw.close()


def recorded(cfg, job_id):
    """The host record's row of the job, as another connection sees it: committed, on disk or not."""
    db = sqlite3.connect(os.path.join(cfg.host_worker['state_dir'], 'kvm1.sqlite'))
    try:
        return db.execute('SELECT state FROM jobs WHERE id = ?', (job_id,)).fetchone()
    finally:
        db.close()


def test_a_job_starts_and_is_acknowledged_only_once_its_record_is_on_disk(cloud):
    cfg, cw, hw, gate = cloud
    job = messages.new_job('kvm1', 'noop', {'marker': 'once'})
    with Client(cfg) as library:
        library.submit(job)
        wait_until(lambda: recorded(cfg, job['id']), 10, 'the host worker to record the job')
        effects = os.path.join(cfg.host_worker['state_dir'], 'kvm1.effects')
        assert not os.path.exists(effects), 'the job has not run: its record is not on disk yet'
        assert library.status(job['id'])['state'] == 'dispatched', 'nor is it acknowledged'
        gate.set()
        wait_until(lambda: library.status(job['id'])['state'] == 'succeeded', 10, 'the job to succeed')
    with open(effects) as handle:
        assert handle.read().split() == [job['id'], 'once']
