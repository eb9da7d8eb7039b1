# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Helpers of the unit tests: polling with a deadline, free ports, worker daemons as subprocesses."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys

import yaml

MODULE_UTILS = os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..', 'plugins', 'module_utils'))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from polling import wait_until  # noqa: E402  pylint: disable=wrong-import-position

# The test suite's entry point for a worker daemon that knows the test action `noop`.
NOOP_WORKER = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'noop_action.py')


def files_holding(directory, secret):
    """Names of the files under `directory` whose bytes contain `secret`."""
    found = []
    for name in sorted(os.listdir(directory)):
        path = os.path.join(directory, name)
        if os.path.isfile(path):
            with open(path, 'rb') as handle:
                if secret.encode() in handle.read():
                    found.append(name)
    return found


def free_ports(count):
    """`count` distinct TCP ports on 127.0.0.1 that nothing listens on right now."""
    socks, ports = [], []
    try:
        while len(ports) < count:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(('127.0.0.1', 0))
            socks.append(sock)
            ports.append(sock.getsockname()[1])
    finally:
        for sock in socks:
            sock.close()
    return ports


def write_yaml(path, data):
    with open(str(path), 'w') as handle:
        yaml.safe_dump(data, handle)
    return str(path)


def worker_env():
    env = dict(os.environ)
    env['PYTHONPATH'] = MODULE_UTILS
    return env


class Daemon(object):
    """A worker daemon run as a subprocess, its stderr kept in a file.

    By default through the test entry point (tests/noop_action.py), which adds the test action `noop`;
    with production=True as installed, `python -m maglica.X`.
    """

    def __init__(self, module, args, log_path, production=False):
        self.log_path = str(log_path)
        self.log = open(self.log_path, 'wb')
        command = [sys.executable, '-m', module] if production else [sys.executable, NOOP_WORKER, module]
        self.proc = subprocess.Popen(command + list(args), stdout=self.log, stderr=subprocess.STDOUT, env=worker_env())

    @property
    def pid(self):
        return self.proc.pid

    def alive(self):
        return self.proc.poll() is None

    def output(self):
        with open(self.log_path, 'rb') as handle:
            return handle.read().decode('utf-8', 'replace')

    def stop(self, timeout=10):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        return self.proc.returncode


__all__ = ['Daemon', 'files_holding', 'free_ports', 'wait_until', 'worker_env', 'write_yaml']


def client_worker_in_process(cfg, postgres_dsn=None):
    """A ClientWorker built in this process on `cfg`: its job log SQLite's, or the PostgreSQL database at
    `postgres_dsn`, and then active (it holds the lease)."""
    from maglica.client_worker import worker  # pylint: disable=import-outside-toplevel
    if postgres_dsn:
        cfg.joblog.update(backend='postgresql', dsn=postgres_dsn)
    running = worker.ClientWorker(cfg)
    running.try_lease()  # a PostgreSQL log's worker starts standby; an SQLite log's is active already
    assert running.active, 'the client worker did not take the lease'
    return running


def plain_worker_config(base, hosts=('kvm1',)):
    """The configuration (loaded) of workers without CURVE on free ports, state under `base`: for a client worker
    and host workers built in the test's own process."""
    from maglica.cluster import config  # pylint: disable=import-outside-toplevel
    pub_port, rep_port = free_ports(2)
    return config.load(write_yaml(os.path.join(base, 'maglica.conf'), {
        'hosts': list(hosts),
        'client': {'host': '127.0.0.1', 'bind': '127.0.0.1', 'pub_port': pub_port, 'rep_port': rep_port},
        'security': {'curve': False, 'key_dir': os.path.join(base, 'keys')},
        'jobs': {'database': os.path.join(base, 'jobs.sqlite'), 'ttl': 60, 'republish_interval': 30, 'request_timeout': 5.0},
        'host_worker': {'state_dir': os.path.join(base, 'state'), 'heartbeat_interval': 30, 'concurrency': 2},
    }))
