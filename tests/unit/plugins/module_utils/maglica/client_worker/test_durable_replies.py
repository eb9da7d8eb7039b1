# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The client worker tells nobody of a commit before the WAL's fsync after it has ended (store.WalSync; on
PostgreSQL, joblog_postgres.PostgresSync's durable commit).

The job log is written with synchronous=NORMAL and fsynced by a thread of the worker, so that the loop takes
requests while the disk works; the guarantee of synchronous=FULL must stay whole: a submitter gets its job's id
(and a host worker its reply, the PUB its notice) only once the job is on disk.
"""

from __future__ import annotations

import sqlite3
import threading

import psycopg
import pytest
import zmq

from maglica.client_worker import worker as client_worker
from maglica.client_worker.joblog_postgres import PostgresSync
from maglica.daemon.store import WalSync
from maglica.host.worker import HostWorker, Record
from maglica.protocol import messages
from unit_helpers import client_worker_in_process, plain_worker_config, wait_until


class HeldWalSync(WalSync):
    """A WalSync whose fsync waits until the test lets it go, or fails: a slow or failing disk cannot be
    provoked on demand, so the wait (and the failure) is this test's; the fsync itself is the real one."""

    def __init__(self, path, wake_fd, fail=False):
        self.gate = threading.Event()
        self.fail = fail
        super(HeldWalSync, self).__init__(path, wake_fd)

    def sync(self):
        self.gate.wait(30)
        if self.fail:
            raise OSError(5, 'Input/output error')
        super(HeldWalSync, self).sync()


@pytest.fixture
def held_worker(tmp_path, request):
    cfg = plain_worker_config(str(tmp_path))
    worker = client_worker.ClientWorker(cfg)
    worker.syncer.stop()
    worker.syncer = HeldWalSync(cfg.jobs['database'], worker.wake_write, fail=getattr(request, 'param', False))
    context = zmq.Context()
    library = context.socket(zmq.REQ)
    library.linger = 0
    library.connect(cfg.endpoint('rep'))
    yield cfg, worker, library
    worker.syncer.gate.set()
    library.close()
    context.term()
    worker.close()


def submit(worker, library):
    job = messages.new_job('kvm1', 'noop', {})
    library.send(messages.encode({'type': 'submit', 'job': job}))
    assert worker.rep.poll(5000)
    worker.serve_waiting(zmq)
    return job


def logged(cfg, job_id):
    """Whether another connection sees the job: it is committed (in the WAL), durable or not."""
    db = sqlite3.connect(cfg.jobs['database'])
    try:
        return db.execute('SELECT 1 FROM jobs WHERE id = ?', (job_id,)).fetchone() is not None
    finally:
        db.close()


def answered(worker, sock):
    """Whether `sock` has its reply, once the worker has sent what waited for a sync that ended (what its loop does
    when the sync thread wakes it)."""
    worker.release()
    return sock.poll(0)


def replied_only_after_the_sync(worker, library, committed, sync):
    """A job submitted over `library` is committed at once (`committed(job id)`: another connection sees it), but
    its submitter gets its id only once the worker's held `sync` (the syncer's, after the commit) has ended."""
    job = submit(worker, library)
    assert committed(job['id']), 'committed'
    worker.release()
    assert library.poll(300) == 0, 'no reply while %s has not ended' % sync
    worker.syncer.gate.set()
    wait_until(lambda: answered(worker, library), 10, 'the reply once %s has ended' % sync)
    reply = messages.decode(library.recv())
    assert reply['ok'] and reply['job']['id'] == job['id']
    assert worker.syncer.synced >= 1


def test_a_submitter_gets_its_job_id_only_once_the_log_is_on_disk(held_worker):
    cfg, worker, library = held_worker
    replied_only_after_the_sync(worker, library, lambda job_id: logged(cfg, job_id), 'the fsync after the commit')


@pytest.mark.parametrize('held_worker', [True], indirect=True)
def test_a_failed_fsync_stops_the_worker_without_a_reply(held_worker):
    _cfg, worker, library = held_worker
    submit(worker, library)
    worker.syncer.gate.set()
    wait_until(lambda: worker.syncer.error is not None, 10, 'the fsync to fail')
    with pytest.raises(RuntimeError, match='cannot be made durable'):
        worker.release()
    assert library.poll(300) == 0, 'nothing is said of a commit that may not be on disk'


def test_which_connections_leave_their_fsync_to_their_worker(tmp_path):
    cfg = plain_worker_config(str(tmp_path))
    worker = client_worker.ClientWorker(cfg)
    hw = HostWorker(cfg, 'kvm1')
    record = Record(str(tmp_path / 'other' / 'kvm1.sqlite'))
    try:
        # 1: NORMAL (the WAL's fsync is the worker's), 2: FULL (every commit fsyncs the WAL itself). The ownership
        # records a job writes before it makes a thing are durable at their commit.
        assert worker.log.db.execute('PRAGMA synchronous').fetchone()[0] == 1
        assert hw.record.db.execute('PRAGMA synchronous').fetchone()[0] == 1
        assert hw.intents.db.execute('PRAGMA synchronous').fetchone()[0] == 2
        assert record.db.execute('PRAGMA synchronous').fetchone()[0] == 2, 'FULL unless asked'
    finally:
        record.close()
        hw.close()
        worker.close()


def test_a_fetch_is_answered_without_waiting_for_the_fsync_of_others_commits(held_worker):
    # A host worker fetches only jobs whose notices it got - sent once their logging was on disk - so its fetch
    # need not wait behind the fsync of a submission that came meanwhile.
    cfg, worker, library = held_worker
    worker.syncer.gate.set()
    first = submit(worker, library)
    wait_until(lambda: answered(worker, library), 10, 'the first job logged')
    library.recv()
    worker.syncer.gate.clear()
    second = submit(worker, library)  # its fsync is held
    host = zmq.Context.instance().socket(zmq.REQ)
    host.linger = 0
    try:
        host.connect(cfg.endpoint('rep'))
        host.send(messages.encode({'type': 'fetch', 'host': 'kvm1', 'ids': [first['id']]}))
        assert worker.rep.poll(5000)
        worker.serve_waiting(zmq)
        assert host.poll(5000), 'the fetch is answered at once'
        assert [j['id'] for j in messages.decode(host.recv())['jobs']] == [first['id']]
        assert library.poll(0) == 0, 'the second submission is still waiting for its fsync'
        worker.syncer.gate.set()
        wait_until(lambda: answered(worker, library), 10, 'the second job logged')
        assert messages.decode(library.recv())['job']['id'] == second['id']
    finally:
        host.close()


# -- PostgreSQL (issue 21): the same guarantee, the durable commit made by PostgresSync ---------------------------

class HeldPostgresSync(PostgresSync):
    """A PostgresSync whose durable commit waits until the test lets it go (as HeldWalSync)."""

    def __init__(self, log, wake_fd):
        self.gate = threading.Event()
        super().__init__(log, wake_fd)

    def sync(self):
        self.gate.wait(30)
        super().sync()


def logged_in_postgresql(dsn, job_id):
    """As logged(), in the PostgreSQL job log at `dsn`."""
    with psycopg.connect(dsn) as other:
        return other.execute('SELECT 1 FROM jobs WHERE id = %s', (job_id,)).fetchone() is not None


def test_a_submitter_gets_its_job_id_only_once_the_postgresql_commit_is_durable(tmp_path, postgres_dsn):
    cfg = plain_worker_config(str(tmp_path))
    worker = client_worker_in_process(cfg, postgres_dsn)
    context = zmq.Context()
    library = context.socket(zmq.REQ)
    library.linger = 0
    try:
        worker.syncer.stop()
        worker.syncer.close()
        worker.syncer = HeldPostgresSync(worker.log, worker.wake_write)
        # The loop's commits do not wait for the disk; the sync thread's do.
        assert worker.log.db.execute('SHOW synchronous_commit').fetchone()[0] == 'off'
        assert worker.syncer.connection.execute('SHOW synchronous_commit').fetchone()[0] == 'on'
        library.connect(cfg.endpoint('rep'))
        replied_only_after_the_sync(worker, library, lambda job_id: logged_in_postgresql(postgres_dsn, job_id),
                                    'the durable commit after it')
    finally:
        worker.syncer.gate.set()
        library.close()
        context.term()
        worker.close()
