# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What one no-op job costs the workers' SQLite, counted statement by statement (issue 21: dispatch regressed).

A no-op job carries no secret, makes no claim and records no ownership: it must not pay for those. The counts
are taken on the real request paths - a real ClientWorker and a real HostWorker in this process over real
ZeroMQ sockets, each job's requests answered one batch each (the worst case: no request shares a commit) -
with sqlite3's trace callback, which sees every statement a connection runs (BEGIN, SAVEPOINT and COMMIT too).
A change that adds statements to every job fails here, not weeks later in `make bench-dispatch`.
"""

from __future__ import annotations

import logging
import threading

import pytest
import zmq

from maglica.client_worker import worker as client_worker
from maglica.daemon.postgres import PostgresConnection
from maglica.controller.client import Client
from maglica.host import worker as host_worker
from maglica.protocol import messages
from unit_helpers import client_worker_in_process, plain_worker_config, wait_until

JOBS = 20
# Statements per no-op job, each request in its own batch. Before issue 21's fix: 28.5 (client worker) and
# 11 (host worker, its job's own statements: take, ownership, finish, outbox, mark_reported).
MAX_CLIENT_WORKER_STATEMENTS = 10
MAX_HOST_WORKER_STATEMENTS = 10
# On PostgreSQL each statement is a round trip: a job's three writing requests, alone in their batches, are each
# BEGIN with the lease's renewal (one round trip), the statement and COMMIT; its fetch is one SELECT.
MAX_CLIENT_WORKER_STATEMENTS_POSTGRESQL = 10


class Counter(object):
    """Statements run on sqlite3 connections (or a PostgresConnection), by the first word, while `counting` is set."""

    def __init__(self, *connections):
        self.statements = []
        self.counting = False
        for db in connections:
            if isinstance(db, PostgresConnection):
                self.wrap(db)
            else:
                db.set_trace_callback(self.trace)

    def wrap(self, db):
        execute, executemany, execute_statements = db.execute, db.executemany, db.execute_statements

        def counted_execute(sql, params=()):
            self.trace(sql)
            return execute(sql, params)

        def counted_statements(sql):
            self.trace(sql)  # several statements, one round trip
            return execute_statements(sql)

        def counted_executemany(sql, rows):
            rows = list(rows)
            for _row in rows:
                self.trace(sql)
            return executemany(sql, rows)
        db.execute, db.executemany, db.execute_statements = counted_execute, counted_executemany, counted_statements

    def trace(self, statement):
        if self.counting:
            self.statements.append(statement)

    def per_job(self):
        return len(self.statements) / float(JOBS)


def request(sock, worker, message):
    """Send one request on the REQ socket `sock` and have the client worker answer it in a batch of its own."""
    sock.send(messages.encode(message))
    assert worker.rep.poll(5000), 'the request reached the client worker'
    worker.serve_waiting(zmq)

    def answered():
        worker.release()  # what the loop does when the WAL's fsync has ended (its thread wakes it)
        return sock.poll(0)
    wait_until(answered, 5, 'the reply, once the job log is on disk')
    return messages.validate_reply(message['type'], messages.decode(sock.recv()))


def test_a_noop_job_costs_the_client_worker_few_statements(tmp_path, joblog_backend, request_fixture):
    cfg = plain_worker_config(str(tmp_path))
    worker = client_worker_in_process(cfg, request_fixture.getfixturevalue('postgres_dsn') if joblog_backend == 'postgresql' else None)
    most = MAX_CLIENT_WORKER_STATEMENTS_POSTGRESQL if joblog_backend == 'postgresql' else MAX_CLIENT_WORKER_STATEMENTS
    context = zmq.Context()
    library, host = context.socket(zmq.REQ), context.socket(zmq.REQ)
    try:
        for sock in (library, host):
            sock.linger = 0
            sock.connect(cfg.endpoint('rep'))
        counter = Counter(worker.log.db)
        jobs = [messages.new_job('kvm1', 'noop', {}) for _i in range(JOBS)]
        counter.counting = True
        for job in jobs:  # what a host worker sends for each job: a fetch, a report of its ack, one of its result
            assert request(library, worker, {'type': 'submit', 'job': job})['job']['state'] in ('queued', 'dispatched')
            assert [j['id'] for j in request(host, worker, {'type': 'fetch', 'host': 'kvm1', 'ids': [job['id']]})['jobs']] == [job['id']]
            request(host, worker, {'type': 'report', 'host': 'kvm1', 'acks': [job['id']], 'results': [], 'running': [job['id']]})
            reply = request(host, worker, {'type': 'report', 'host': 'kvm1', 'acks': [], 'running': [],
                                           'results': [{'id': job['id'], 'status': 'succeeded', 'message': '', 'data': {}}]})
            assert reply['taken'] == [job['id']]
        counter.counting = False
        assert all(worker.log.get(j['id'])['state'] == 'succeeded' for j in jobs)
        assert counter.per_job() <= most, \
            'a no-op job ran %.1f statements in the client worker:\n%s' % (counter.per_job(), '\n'.join(counter.statements[:40]))
    finally:
        library.close()
        host.close()
        context.term()
        worker.close()


@pytest.fixture
def request_fixture(request):
    """pytest's `request` (this module's request() sends a message)."""
    return request


@pytest.fixture
def serving_client_worker(tmp_path):
    """A real client worker answering in a thread of this process."""
    cfg = plain_worker_config(str(tmp_path))
    worker = client_worker.ClientWorker(cfg)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    yield cfg, worker
    worker.stopping = True
    thread.join(10)
    worker.close()


def test_a_noop_job_costs_the_host_worker_few_statements(serving_client_worker):
    cfg, cw = serving_client_worker
    hw = host_worker.HostWorker(cfg, 'kvm1')
    try:
        counter = Counter(hw.record.db, hw.intents.db)
        jobs = [messages.new_job('kvm1', 'noop', {}) for _i in range(JOBS)]
        with Client(cfg) as library:
            for job in jobs:
                library.submit(job)
        ids = [job['id'] for job in jobs]
        counter.counting = True
        for job_id in ids:  # the host worker's own path for each job, as run() takes it
            hw.to_fetch.add(job_id)
            hw.fetch()
            wait_until(lambda: not hw.finished.empty(), 10, 'the noop job to end')
            hw.collect()
            hw.report()
        counter.counting = False
        wait_until(lambda: all(cw.log.get(i)['state'] == 'succeeded' for i in ids), 10, 'every job to succeed')
        assert counter.per_job() <= MAX_HOST_WORKER_STATEMENTS, \
            'a no-op job ran %.1f statements in the host worker:\n%s' % (counter.per_job(), '\n'.join(counter.statements[:40]))
    finally:
        hw.close()


def test_a_quick_job_is_acknowledged_in_the_report_of_its_result(serving_client_worker, caplog):
    """A job that ends at once costs one report, not two: its acknowledgement waits a moment (host_worker.ACK_WAIT_S)
    and goes with its result. Each report is a round trip that both workers pay for (issue 21: dispatch regressed).
    And each worker logs one line per job at INFO, at its end: a line costs a no-op job a tenth of its CPU."""
    caplog.set_level(logging.INFO)
    cfg, cw = serving_client_worker
    reports = []
    answer = cw.request_report

    def counted(data):  # (runs in the client worker's thread)
        reports.append((list(data.get('acks') or []), [result['id'] for result in data.get('results') or []]))
        return answer(data)
    cw.request_report = counted
    hw = host_worker.HostWorker(cfg, 'kvm1')
    thread = threading.Thread(target=hw.run, daemon=True)
    thread.start()
    try:
        with Client(cfg) as library:
            for _i in range(JOBS):  # one at a time: no job can share a report with another's
                job = messages.new_job('kvm1', 'noop', {})
                library.submit(job)
                wait_until(lambda: cw.log.get(job['id'])['state'] == 'succeeded', 10, 'the job to succeed')
        acknowledged_alone = [acks for acks, results in reports if set(acks) - set(results)]
        # (a loaded machine may delay a job's thread past the wait: a few reports of acknowledgements alone are allowed)
        assert len(acknowledged_alone) <= JOBS // 4, \
            '%d of %d no-op jobs were acknowledged in a report of their own: %r' % (len(acknowledged_alone), JOBS, reports)
        for logger in ('maglica.host.worker', 'maglica.client_worker.worker'):
            lines = [r.getMessage() for r in caplog.records if r.name == logger and r.levelno >= logging.INFO and r.getMessage().startswith('job ')]
            assert len(lines) == JOBS, '%s logged %d lines at INFO for %d jobs: %s' % (logger, len(lines), JOBS, lines[:6])
    finally:
        hw.stopping = True
        thread.join(10)
        hw.close()
