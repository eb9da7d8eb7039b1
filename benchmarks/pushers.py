# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A real client worker (CURVE on, its production entry point) for N hosts, and N host workers' pushes simulated
in one process over real CURVE sockets with real keys: no 1,000 daemons. Used by bench-list and bench-placement.

The simulated host workers push their states once (all sockets at once, as N host workers started together would),
then each reports a heartbeat that vouches for its state (`state_digest`) every `heartbeat_s` seconds, spread over
the period as host workers on their own clocks send them: the steady load a client worker of N hosts carries,
measured on its process (`usage`)."""

from __future__ import annotations

import json
import multiprocessing
import os
import resource
import subprocess
import time

import zmq

import bench_workers  # pylint: disable=wrong-import-position
from maglica_testbed import MODULE_UTILS, PYTHON  # pylint: disable=wrong-import-position
from maglica.cluster import config as maglica_config
from maglica.cluster import host_state
from maglica.controller.client import Client
from maglica.protocol import curve, messages, transport
from polling import wait_until

REPLY_TIMEOUT_S = 60.0
HEARTBEAT_SLICES = 50


def _send_all(sockets, make):
    """One request on every socket at once, then every reply; the replies that were not ok, by host."""
    for host, sock in sockets.items():
        sock.send(messages.encode(make(host)))
    refused = {}
    deadline = time.monotonic() + REPLY_TIMEOUT_S
    for host, sock in sockets.items():
        if not sock.poll(max(1, int((deadline - time.monotonic()) * 1000))):
            raise RuntimeError('no reply for %s within %gs' % (host, REPLY_TIMEOUT_S))
        reply = messages.decode(sock.recv())
        if not reply.get('ok'):
            refused[host] = reply.get('error')
    return refused


def _pusher(config_path, states_path, heartbeat_s, pushed, stop):
    """The simulated host workers (a process of their own, so that the measuring process keeps its core)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    config = maglica_config.load(config_path)
    with open(states_path) as handle:
        states = json.load(handle)
    digests = {host: host_state.digest(state) for host, state in states.items()}
    context = zmq.Context()
    context.set(zmq.MAX_SOCKETS, len(states) + 64)
    sockets = {}
    for host in states:
        sock = context.socket(zmq.REQ)
        sock.linger = 0
        transport.secure_client(sock, config, host)
        sock.connect(config.endpoint('rep'))
        sockets[host] = sock
    refused = _send_all(sockets, lambda host: {'type': 'state', 'host': host, 'digest': digests[host], 'state': states[host]})
    if refused:
        raise RuntimeError('states refused: %s' % list(refused.items())[:3])
    pushed.set()
    # Each host worker reports on its own clock: the heartbeats of a period come spread over it, a slice at a time.
    hosts = list(sockets)
    slices = [hosts[n::HEARTBEAT_SLICES] for n in range(HEARTBEAT_SLICES)]
    turn = 0
    while not stop.wait(heartbeat_s / HEARTBEAT_SLICES):
        _send_all({host: sockets[host] for host in slices[turn % HEARTBEAT_SLICES]},
                  lambda host: {'type': 'report', 'host': host, 'pid': os.getpid(), 'state_digest': digests[host], 'state_age_s': 0.0})
        turn += 1
    for sock in sockets.values():
        sock.close()
    context.term()


def _raise_fd_limit():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class PushedCloud:
    def __init__(self, workdir, hosts, states, port, heartbeat_s=5.0, max_age=60.0, sections=None):
        """`hosts`: the configuration's host entries; `states`: {host: its state, as host_state.snapshot gives it};
        `sections`: more of the configuration (placement)."""
        self.workdir = workdir
        self.states = states
        self.heartbeat_s = heartbeat_s
        self.key_dir = os.path.join(workdir, 'keys')
        for name in [curve.SERVER, curve.LIBRARY] + [h['name'] for h in hosts]:
            curve.create(self.key_dir, name)
            if name != curve.SERVER:
                curve.allow(self.key_dir, name, curve.public_path(self.key_dir, name))
        self.config_path = os.path.join(workdir, 'maglica.conf')
        with open(self.config_path, 'w') as handle:
            json.dump(dict(sections or {}, hosts=hosts,
                           client={'host': '127.0.0.1', 'bind': '127.0.0.1', 'pub_port': port, 'rep_port': port + 1},
                           security={'curve': True, 'key_dir': self.key_dir}, host_state={'max_age': max_age},
                           jobs={'database': os.path.join(workdir, 'jobs.sqlite')}), handle)  # JSON is YAML
        self.config = maglica_config.load(self.config_path)
        self.states_path = os.path.join(workdir, 'states.json')
        with open(self.states_path, 'w') as handle:
            json.dump(states, handle)
        self.client_worker = None
        self.pusher = None
        self.stop_pushing = multiprocessing.Event()

    def start(self):
        self.client_worker = subprocess.Popen(
            [PYTHON, '-m', 'maglica.client_worker.worker', '--config', self.config_path], preexec_fn=_raise_fd_limit,
            env=dict(os.environ, PYTHONPATH=MODULE_UTILS), stdout=open(os.path.join(self.workdir, 'client_worker.log'), 'wb'),
            stderr=subprocess.STDOUT)
        wait_until(self._answers, 30, 'the client worker to answer')
        pushed = multiprocessing.Event()
        self.pusher = multiprocessing.Process(target=_pusher, args=(self.config_path, self.states_path, self.heartbeat_s,
                                                                    pushed, self.stop_pushing), daemon=True)
        self.pusher.start()
        wait_until(lambda: pushed.is_set() or self.pusher.exitcode is not None, 300, 'the simulated host workers to push')
        if not pushed.is_set():
            raise RuntimeError('the simulated host workers failed (exit %s)' % self.pusher.exitcode)

    def _answers(self):
        if self.client_worker.poll() is not None:
            with open(os.path.join(self.workdir, 'client_worker.log')) as handle:
                raise RuntimeError('the client worker exited:\n%s' % handle.read()[-2000:])
        try:
            with Client(self.config, timeout=1) as client:
                return client.hosts() is not None
        except Exception:  # not up yet
            return False

    def usage(self):
        """(resident memory in MiB, CPU seconds so far) of the client worker process."""
        with open('/proc/%d/status' % self.client_worker.pid) as handle:
            rss_kib = next(int(line.split()[1]) for line in handle if line.startswith('VmRSS:'))
        return rss_kib / 1024.0, bench_workers.cpu_seconds(self.client_worker.pid)

    def steady_cpu_percent(self, seconds):
        """The client worker's CPU share over `seconds` of heartbeats from every host."""
        _rss, before = self.usage()
        time.sleep(seconds)  # a measuring window, not a wait for a condition
        _rss, after = self.usage()
        return round(100.0 * (after - before) / seconds, 2)

    def stop(self):
        self.stop_pushing.set()
        if self.pusher is not None:
            self.pusher.join(timeout=60)
            if self.pusher.is_alive():
                self.pusher.terminate()
        if self.client_worker is not None and self.client_worker.poll() is None:
            self.client_worker.terminate()
            self.client_worker.wait(timeout=30)
