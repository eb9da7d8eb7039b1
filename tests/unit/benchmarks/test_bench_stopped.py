# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A benchmark stopped by SIGTERM (kill, timeout, a cancelled CI job) leaves nothing running: its worker daemons and
its PostgreSQL server are stopped, and the server's files removed, as at a normal end (bench_output.parse_args)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys

from polling import alive
from unit_helpers import worker_env

TESTS = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..'))
BENCHMARKS = os.path.join(os.path.dirname(TESTS), 'benchmarks')

# A benchmark's shape: its arguments parsed, a PostgreSQL server and a cloud of workers started, work, then stopped
# in `finally` and `with` - which a SIGTERM must reach.
BENCHMARK = r'''
import argparse, json, sys, tempfile, time
sys.path[:0] = sys.argv[2:5]
from bench_output import parse_args
from postgres_server import PostgresServer
from maglica_testbed import Cloud
parse_args(argparse.ArgumentParser(), {}, 'the same', [])
with PostgresServer() as postgres:
    cloud = Cloud(None, tempfile.mkdtemp(prefix='maglica-stopped-'), hosts={'hw0': '127.0.0.1'}, port=int(sys.argv[1]))
    cloud.reconfigure(host_worker={'state_poll_interval': 0})
    cloud.start()
    try:
        pids = [cloud.client_worker.pid, postgres.proc.pid] + [proc.pid for proc in cloud.host_workers.values()]
        print(json.dumps({'pids': pids, 'postgres': postgres.base}), flush=True)
        time.sleep(600)  # the work; the test stops it
    finally:
        cloud.stop()
'''


def port_pair():
    """A free port whose next port is free too (a Cloud's PUB and REP)."""
    while True:
        with socket.socket() as first, socket.socket() as second:
            first.bind(('127.0.0.1', 0))
            port = first.getsockname()[1]
            try:
                second.bind(('127.0.0.1', port + 1))
            except OSError:
                continue
            return port


def test_a_benchmark_stopped_by_sigterm_stops_its_daemons_and_database(tmp_path):
    bench = subprocess.Popen([sys.executable, '-c', BENCHMARK, str(port_pair()), BENCHMARKS, TESTS, os.path.join(TESTS, 'integration')],
                             stdout=subprocess.PIPE, stderr=open(str(tmp_path / 'bench.log'), 'wb'), env=worker_env(), text=True)
    started = {}
    try:
        line = bench.stdout.readline()  # (the benchmark prints it once everything runs; it fails the test if it exits)
        assert line, 'the benchmark did not start:\n%s' % (tmp_path / 'bench.log').read_text()[-3000:]
        started = json.loads(line)
        assert all(alive(pid) for pid in started['pids'])
        bench.send_signal(signal.SIGTERM)
        assert bench.wait(60) != 0
        left = [pid for pid in started['pids'] if alive(pid)]  # (the benchmark's end waited for each)
        assert not left, 'still running after the benchmark was stopped: %s' % left
        assert not os.path.exists(started['postgres']), 'the PostgreSQL server files are left'
    finally:
        for pid in started.get('pids', []):  # a failed test leaves nothing either
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        if bench.poll() is None:
            bench.kill()
        bench.wait()
