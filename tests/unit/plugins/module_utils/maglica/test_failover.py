# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Two client workers on one PostgreSQL job log (issue 21): one active, one standby, and the standby taking over
when the active one is killed (kill -9) or stopped (SIGSTOP) - real daemons, real CURVE sockets, a real
PostgreSQL server (tests/postgres_server.py).

Every job is a noop with a marker: its host worker appends `ID MARKER` to {state_dir}/{host}.effects each time it
runs, so counting lines proves each job ran exactly once.
"""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest
import zmq

from maglica.controller.client import Client
from maglica.protocol import messages
from postgres_server import PostgresServer
from test_workers import JOB_TIMEOUT, START_TIMEOUT, WORKER_HOSTS, Cloud
from unit_helpers import Daemon, free_ports, wait_until

LEASE_S = 2.0
# From the active one's death to the standby's first accepted job: the lease, the standby's next try, a round trip.
TAKEOVER_TIMEOUT = LEASE_S + 8


class PairCloud(Cloud):
    """Cloud (test_workers.py) with two client workers, cw1 and cw2, sharing a PostgreSQL job log."""

    def __init__(self, base, postgres_dsn):
        super().__init__(base, curve=True, postgres_dsn=postgres_dsn)
        self.client_workers = {}
        self.ports = {}

    def write_config(self, pub_port, rep_port):
        cw2_pub, cw2_rep = free_ports(2)
        self.ports = {'cw1': (pub_port, rep_port), 'cw2': (cw2_pub, cw2_rep)}
        self.extra_settings = {'client': {'host': '127.0.0.1', 'bind': '127.0.0.1', 'pub_port': pub_port, 'rep_port': rep_port,
                                          'workers': [{'name': name, 'host': '127.0.0.1', 'pub_port': pub, 'rep_port': rep}
                                                      for name, (pub, rep) in sorted(self.ports.items())]}}
        self.jobs_settings = {'request_timeout': 8.0}
        super().write_config(pub_port, rep_port)

    def joblog_settings(self):
        return {'joblog': {'backend': 'postgresql', 'dsn': self.postgres_dsn, 'lease_s': LEASE_S}}

    def start(self):
        self.write_config(*free_ports(2))
        for name in ('cw1', 'cw2'):
            self.start_client_worker(name)
        wait_until(lambda: self.active() is not None, START_TIMEOUT, 'one client worker to be active')
        for name in WORKER_HOSTS:
            self.start_host_worker(name)
        return self

    def start_client_worker(self, name):
        self.client_workers[name] = Daemon('maglica.client_worker.worker', ['--config', self.config_path, '--name', name],
                                           os.path.join(self.base, '%s.log' % name))

    def ask(self, name, timeout=2.0):
        """The reply of client worker `name` to a `hosts` request over the library's key, or None (no answer)."""
        context = zmq.Context.instance()
        sock = context.socket(zmq.REQ)
        sock.linger = 0
        from maglica.protocol import transport  # the library's CURVE client settings
        transport.secure_client(sock, self.config, 'library')
        try:
            sock.connect('tcp://127.0.0.1:%d' % self.ports[name][1])
            sock.send(messages.encode({'type': 'hosts'}))
            if not sock.poll(int(timeout * 1000)):
                return None
            return messages.decode(sock.recv())
        finally:
            sock.close()

    def active(self):
        """The name of the client worker that answers as active, when exactly one does."""
        answers = {name: self.ask(name) for name, daemon in self.client_workers.items() if daemon.alive()}
        active = [name for name, reply in answers.items() if reply is not None and reply.get('ok')]
        return active[0] if len(active) == 1 else None

    def stop(self):
        codes = super().stop()
        for name, daemon in self.client_workers.items():
            if daemon.proc.poll() is None:
                os.kill(daemon.pid, signal.SIGCONT)
            codes[name] = daemon.stop()
        return codes

    def runs(self, job_ids):
        """{job id: how many times a host worker ran it}."""
        counts = {job_id: 0 for job_id in job_ids}
        for host in WORKER_HOSTS:
            for line in self.effects(host):
                job_id = line.split()[0]
                if job_id in counts:
                    counts[job_id] += 1
        return counts


@pytest.fixture
def pair(tmp_path, postgres_dsn):
    cloud = PairCloud(str(tmp_path), postgres_dsn)
    try:
        yield cloud.start()
    finally:
        cloud.stop()


class Load(threading.Thread):
    """Submits noop jobs one after another, round-robin over the host workers, until stopped."""

    def __init__(self, cloud):
        super().__init__(daemon=True)
        self.cloud = cloud
        self.submitted = []
        self.errors = []
        self.halt = threading.Event()

    def run(self):
        with Client(self.cloud.config) as library:
            while not self.halt.is_set():
                job = messages.new_job(WORKER_HOSTS[len(self.submitted) % len(WORKER_HOSTS)], 'noop', {'marker': 'load'})
                try:
                    library.submit(job)
                except Exception as e:  # pylint: disable=broad-except  # a failover must not lose a submission: counted
                    self.errors.append('%s: %s' % (job['id'], e))
                    continue
                self.submitted.append(job['id'])

    def stop(self):
        self.halt.set()
        self.join(60)


def finished_exactly_once(cloud, job_ids):
    with Client(cloud.config) as library:
        states = {job_id: library.wait(job_id, JOB_TIMEOUT + TAKEOVER_TIMEOUT)['state'] for job_id in job_ids}
    assert set(states.values()) == {'succeeded'}, states
    runs = cloud.runs(job_ids)
    assert [job_id for job_id, count in runs.items() if count != 1] == [], 'jobs that did not run exactly once: %r' % runs


def test_one_client_worker_is_active_and_the_other_answers_standby_naming_it(pair):
    active = pair.active()
    standby = 'cw2' if active == 'cw1' else 'cw1'
    reply = pair.ask(standby)
    assert reply['ok'] is False and reply['code'] == 'standby' and reply['active'] == active, reply
    # The library tries the configured workers in turn: it gets its job in whichever order they are listed.
    job = messages.new_job('kvm1', 'noop', {'marker': 'either'})
    with Client(pair.config) as library:
        library.submit(job)
        assert library.wait(job['id'], JOB_TIMEOUT)['state'] == 'succeeded'
    assert pair.runs([job['id']]) == {job['id']: 1}


def test_kill_9_of_the_active_one_under_load_loses_and_repeats_no_job(pair):
    first = pair.active()
    load = Load(pair)
    load.start()
    wait_until(lambda: len(load.submitted) >= 30, JOB_TIMEOUT, 'jobs submitted to %s' % first)
    os.kill(pair.client_workers[first].pid, signal.SIGKILL)
    killed_at = len(load.submitted)
    wait_until(lambda: pair.active() not in (None, first), TAKEOVER_TIMEOUT, 'the standby to take over')
    wait_until(lambda: len(load.submitted) >= killed_at + 30, JOB_TIMEOUT, 'jobs submitted after the takeover')
    load.stop()
    assert load.errors == [], 'submissions failed during the failover: %s' % load.errors[:5]
    finished_exactly_once(pair, load.submitted)
    # The killed one, started again, is standby: the other holds the lease.
    pair.client_workers[first].stop()
    pair.start_client_worker(first)
    wait_until(lambda: (pair.ask(first) or {}).get('code') == 'standby', START_TIMEOUT, '%s to answer standby' % first)


def test_a_stopped_active_one_is_replaced_and_finds_itself_standby_when_continued(pair):
    first = pair.active()
    second = 'cw2' if first == 'cw1' else 'cw1'
    before = messages.new_job('kvm1', 'noop', {'marker': 'before'})
    with Client(pair.config) as library:
        library.submit(before)
    os.kill(pair.client_workers[first].pid, signal.SIGSTOP)
    stopped = time.monotonic()
    wait_until(lambda: (pair.ask(second) or {}).get('ok'), TAKEOVER_TIMEOUT, '%s to take over' % second)
    assert time.monotonic() - stopped >= LEASE_S * 0.9, 'the lease of the stopped one was taken before it ran out'
    during = messages.new_job('kvm10', 'noop', {'marker': 'during'})
    with Client(pair.config) as library:
        library.submit(during)
        assert library.wait(during['id'], JOB_TIMEOUT)['state'] == 'succeeded'
    os.kill(pair.client_workers[first].pid, signal.SIGCONT)
    wait_until(lambda: (pair.ask(first) or {}).get('code') == 'standby', START_TIMEOUT, 'the continued %s to answer standby' % first)
    assert pair.ask(first)['active'] == second
    after = messages.new_job('kvm1', 'noop', {'marker': 'after'})
    with Client(pair.config) as library:
        library.submit(after)
    finished_exactly_once(pair, [before['id'], during['id'], after['id']])
    assert 'is standby now' in pair.client_workers[first].output()


def test_a_client_worker_whose_database_goes_away_stops_for_its_supervisor_to_restart(tmp_path):
    """Its connection lost (the primary failed over, the server stopped), a client worker stops rather than answer
    with errors; its supervisor starts it again on the DSN (a multi-host one connects to the new primary)."""
    server = PostgresServer().start()
    try:
        cloud = Cloud(str(tmp_path), curve=False, postgres_dsn=server.create_database('gone'))
        cloud.start()
        try:
            assert cloud.run_noop('kvm1', 'before')['state'] == 'succeeded'
            server.stop()
            wait_until(lambda: not cloud.client_worker.alive(), START_TIMEOUT, 'the client worker to stop')
            assert cloud.client_worker.proc.returncode != 0
        finally:
            cloud.stop()
    finally:
        server.stop()
