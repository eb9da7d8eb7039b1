# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A request that fails inside a batch costs that request only, on both job log stores: SQLite undoes it alone
(its savepoint); PostgreSQL, where a failed statement spoils the whole transaction, undoes the batch and answers
its requests again one by one (worker.BatchFailed)."""

from __future__ import annotations

import pytest
import zmq

from maglica.protocol import messages
from unit_helpers import client_worker_in_process, plain_worker_config, wait_until


@pytest.fixture
def worker(tmp_path, joblog_backend, request):
    cfg = plain_worker_config(str(tmp_path))
    running = client_worker_in_process(cfg, request.getfixturevalue('postgres_dsn') if joblog_backend == 'postgresql' else None)
    yield cfg, running
    running.close()


def test_a_request_that_fails_in_a_batch_costs_only_itself(worker, monkeypatch):
    cfg, running = worker
    jobs = [messages.new_job('kvm1', 'noop', {'marker': str(n)}) for n in range(3)]
    real_add = running.log.add

    def failing_add(job, *args, **kwargs):
        # A failure in the database cannot be had on demand for one request of three: this one is the test's.
        row = real_add(job, *args, **kwargs)
        if job['id'] == jobs[1]['id']:
            running.log.db.execute('SELECT * FROM no_such_table')  # a real statement that fails, in the batch's transaction
        return row
    monkeypatch.setattr(running.log, 'add', failing_add)
    context = zmq.Context()
    sockets = []
    try:
        for job in jobs:
            sock = context.socket(zmq.REQ)
            sock.linger = 0
            sock.connect(cfg.endpoint('rep'))
            sock.send(messages.encode({'type': 'submit', 'job': job}))
            sockets.append(sock)
        # All three in one batch: taken off the socket here, then handed to serve_waiting as its batch.
        waiting = []
        wait_until(lambda: waiting.extend(running.receive(zmq)) or len(waiting) == 3, 5, 'three waiting requests')
        monkeypatch.setattr(running, 'receive', lambda _zmq: waiting)
        running.serve_waiting(zmq)

        def replies():
            running.release()
            return all(sock.poll(0) for sock in sockets)
        wait_until(replies, 10, 'three replies')
        answers = [messages.decode(sock.recv()) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()
        context.term()
    assert [a['ok'] for a in answers] == [True, False, True], answers
    assert 'internal error' in answers[1]['error']
    assert [running.log.get(job['id'])['state'] for job in (jobs[0], jobs[2])] == ['dispatched', 'dispatched']
    assert running.log.get(jobs[1]['id']) is None, 'the failed request is undone'
