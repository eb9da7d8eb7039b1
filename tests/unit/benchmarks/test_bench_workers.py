# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Benchmarks' workers and the jobs they refuse (issue 17): real client and host workers over real ZeroMQ.

bench-faults' ownership phase ran its host workers through benchmarks/ownership_host_worker.py, which did not
know the test action `noop`: every filler job was dropped, 24 jobs ended "unfinished" and the phase proved
nothing, without a word. Its launcher must run noop jobs, and a benchmark must find refusals and say so.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from maglica.cluster import config
from maglica.protocol import messages
from maglica.controller.client import Client
from maglica.errors import DispatchError
from unit_helpers import Daemon, free_ports, wait_until, worker_env, write_yaml

BENCHMARKS = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..', '..', 'benchmarks'))
sys.path.insert(0, BENCHMARKS)

import bench_workers  # noqa: E402  pylint: disable=wrong-import-position

LAUNCHER = os.path.join(BENCHMARKS, 'ownership_host_worker.py')
START_TIMEOUT = 15
JOB_TIMEOUT = 15


def write_config(base, hosts):
    pub, rep = free_ports(2)
    return write_yaml(os.path.join(base, 'maglica.conf'), {
        'hosts': list(hosts), 'client': {'host': '127.0.0.1', 'bind': '127.0.0.1', 'pub_port': pub, 'rep_port': rep},
        'security': {'curve': False},
        'jobs': {'database': os.path.join(base, 'jobs.sqlite'), 'republish_interval': 0.2, 'request_timeout': 5.0},
        'host_worker': {'state_dir': os.path.join(base, 'state'), 'heartbeat_interval': 0.5, 'concurrency': 1}})


def answers(cfg):
    try:
        with Client(cfg, timeout=0.5) as client:
            return client.hosts()
    except DispatchError:
        return None


class Launched(object):
    """A host worker run as bench-faults runs it: benchmarks/ownership_host_worker.py, its log where the benchmark's is."""

    def __init__(self, path, name, log_path):
        self.log = open(log_path, 'wb')
        self.proc = subprocess.Popen([sys.executable, LAUNCHER, '--config', path, '--name', name], stdout=self.log,
                                     stderr=subprocess.STDOUT, env=worker_env())

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


@pytest.fixture(scope='module')
def cloud(tmp_path_factory):
    """A client worker that knows `noop`; host `launched` runs the ownership launcher, host `production` the
    production host worker (python -m maglica.host.worker), which does not know `noop`."""
    base = str(tmp_path_factory.mktemp('bench-workers'))
    path = write_config(base, ['launched', 'production'])
    cfg = config.load(path)
    daemons = [Daemon('maglica.client_worker.worker', ['--config', path], os.path.join(base, 'client_worker.log'))]
    try:
        wait_until(lambda: answers(cfg), START_TIMEOUT, 'the client worker')
        daemons.append(Launched(path, 'launched', os.path.join(base, 'host_worker-launched.log')))
        daemons.append(Daemon('maglica.host.worker', ['--config', path, '--name', 'production'],
                              os.path.join(base, 'host_worker-production.log'), production=True))
        wait_until(lambda: all(h['alive'] for h in answers(cfg) or [{'alive': False}]), START_TIMEOUT, 'both host workers')
        yield base, cfg
    finally:
        for daemon in reversed(daemons):
            daemon.stop()


def test_ownership_launcher_runs_noop_jobs(cloud):
    """The fillers of bench-faults' ownership phase are noop jobs: its host workers must run them, not drop them."""
    base, cfg = cloud
    job = messages.new_job('launched', 'noop', {'marker': 'filler'})
    with Client(cfg) as client:
        client.submit(job)
        wait_until(lambda: client.status(job['id'])['state'] in messages.FINAL_STATES or bench_workers.refusals(base),
                   JOB_TIMEOUT, 'the noop job to end or be refused')
        done = client.status(job['id'])
    assert not bench_workers.refusals(base, 'host_worker-launched.log'), bench_workers.describe(bench_workers.refusals(base))
    assert done['state'] == 'succeeded', done
    with open(os.path.join(base, 'state', 'launched.effects')) as handle:
        assert handle.read().splitlines() == ['%s filler' % job['id']]


def test_jobs_a_host_worker_refuses_are_found_and_named(cloud):
    base, cfg = cloud
    job = messages.new_job('production', 'noop', {'marker': 'refused'})
    with Client(cfg) as client:
        client.submit(job)
    log = os.path.join(base, 'host_worker-production.log')
    found = wait_until(lambda: bench_workers.refusals(base, os.path.basename(log)), JOB_TIMEOUT,
                       'the production host worker to drop the job')
    assert list(found) == [log] and bench_workers.count(found) >= 1
    problem = bench_workers.describe(found)
    assert 'refused' in problem and log in problem and 'notice.action must be one of' in problem, problem
    with pytest.raises(bench_workers.WorkersRefused, match='notice.action must be one of'):
        bench_workers.check(base)
    assert bench_workers.describe({}) is None


def test_a_job_the_client_worker_refuses_is_not_resent_for_ever(tmp_path):
    """The fault benchmarks resend a job while the client worker does not answer; a refusal is an answer."""
    path = write_config(str(tmp_path), ['kvm1'])
    cfg = config.load(path)
    production = Daemon('maglica.client_worker.worker', ['--config', path], tmp_path / 'client_worker.log', production=True)
    try:
        wait_until(lambda: answers(cfg), START_TIMEOUT, 'the production client worker')
        with Client(cfg, timeout=2) as client:
            with pytest.raises(bench_workers.WorkersRefused, match='job.action must be one of'):
                bench_workers.submit(client, messages.new_job('kvm1', 'noop', {}))
            accepted = bench_workers.submit(client, messages.new_job('kvm1', 'vm.remove', {'name': 'gone'}))
            assert accepted['state'] in ('queued', 'dispatched'), accepted
    finally:
        production.stop()
