# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Mutated messages from an authenticated peer against the client worker's REP socket; hostile images, servers
and guest agents against the host side (hostile.py).

    make bench-fuzz          (python benchmarks/fuzz.py --messages 20000 --images 300 --servers 100 --agents 300)
    make bench-fuzz BENCH_ARGS=--quick   (--messages 2000 --images 40 --servers 20 --agents 100)

Mutations: byte flips, truncations, structure-aware changes to valid requests
(fields dropped, retyped, oversized, unknown), deep nesting, huge frames,
multi-frame messages. Every message must get an answer; the worker must keep
its pid and its memory, and still run a valid job afterwards.
Broken, in any run: a message without an answer, a restarted worker, no valid job afterwards, a job the host
worker refused. Prints one JSON line last: {"messages", "worker_restarts", "rss_growth_mb", "valid_job_after",
"hostile_cases", "hostile_refused", "host_bytes_leaked", "worker_stalls", "hostile_image", "hostile_server",
"hostile_agent", "quick"}.

Then the hostile phases (hostile.py, seeded): qemu-img-made hostile images served over HTTP on 127.0.0.1 into the
host worker's run_import (libvirt's test driver, a pool in a temporary directory); misbehaving HTTP servers; lying
guest-agent replies into reach.guest_addresses and hostkeys.known_hosts_lines. Broken too, in any run: a hostile
case accepted (hostile_refused < hostile_cases), a byte run of the host secret in the pool or a message
(host_bytes_leaked), an import that did not end within max_download_time + 3 s (worker_stalls), a refusal for
another reason than the limit meant, anything left behind.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'tests', 'integration'))

import bench_workers  # noqa: E402  pylint: disable=wrong-import-position
import hostile  # noqa: E402  pylint: disable=wrong-import-position
from bench_output import conclude, parse_args  # noqa: E402  pylint: disable=wrong-import-position
from maglica_testbed import Cloud, exit_on_sigterm  # noqa: E402  pylint: disable=wrong-import-position
from maglica.protocol import curve  # noqa: E402  pylint: disable=wrong-import-position
from maglica.protocol import messages  # noqa: E402  pylint: disable=wrong-import-position
from maglica.protocol import transport  # noqa: E402  pylint: disable=wrong-import-position
from maglica.errors import DispatchError  # noqa: E402  pylint: disable=wrong-import-position

HOSTS = {'fz0': '127.0.0.1'}
QUICK = {'messages': 2000, 'images': 40, 'servers': 20, 'agents': 100}
ODD_VALUES = [None, True, -1, 2 ** 70, 1e308, '', 'x' * 5000, [], {}, [1, [2, [3]]], {'a': {'b': {}}}, '\u0000\ud7ff', 'kvm1\x00']


def valid_requests():
    job = messages.new_job('fz0', 'noop', {'marker': 'fuzz'})
    clone = messages.new_job('fz0', 'vm.clone', {'image': 'a', 'hostname': 'b', 'clone_mode': 'full', 'start': True,
                                                 'network': {'mode': 'static', 'address': '192.0.2.1'}})
    return [
        {'type': 'submit', 'job': job},
        {'type': 'submit', 'job': clone},
        {'type': 'status', 'id': job['id']},
        {'type': 'list', 'limit': 5},
        {'type': 'hosts'},
        {'type': 'report', 'host': 'fz0', 'acks': [job['id']], 'results': [{'id': job['id'], 'status': 'failed'}]},
    ]


def mutate_structure(rng, request):
    """Change one field somewhere in the request: drop it, retype it, or add an unknown one."""
    data = json.loads(json.dumps(request))
    target = data
    while isinstance(target, dict) and target and rng.random() < 0.5:
        key = rng.choice(list(target))
        if isinstance(target[key], dict) and target[key]:
            target = target[key]
        else:
            break
    if not isinstance(target, dict) or not target:
        return data
    choice = rng.random()
    key = rng.choice(list(target))
    if choice < 0.3:
        del target[key]
    elif choice < 0.8:
        target[key] = rng.choice(ODD_VALUES)
    else:
        target['unknown_%d' % rng.randrange(100)] = rng.choice(ODD_VALUES)
    return data


def frames_for(rng, requests, index):
    base = rng.choice(requests)
    kind = index % 10
    if kind < 4:
        return [messages.encode(mutate_structure(rng, base))]
    raw = bytearray(messages.encode(base))
    if kind < 7:
        for _flip in range(rng.randint(1, 10)):
            raw[rng.randrange(len(raw))] = rng.randrange(256)
        return [bytes(raw)]
    if kind == 7:
        return [bytes(raw[:rng.randrange(len(raw))])]
    if kind == 8:
        special = rng.randrange(4)
        if special == 0:
            return [b'[' * 100000 + b']' * 100000]
        if special == 1:
            return [b'x' * (messages.MAX_FRAME_BYTES + rng.randrange(1, 1000))]
        if special == 2:
            return [json.dumps({'version': 1, 'type': 'list', 'limit': rng.choice(ODD_VALUES)}).encode()]
        return [json.dumps({'version': rng.choice(ODD_VALUES), 'type': 'hosts'}).encode()]
    return [bytes(raw), bytes(raw)]  # multi-frame


def rss_mb(pid):
    with open('/proc/%d/status' % pid) as handle:
        for line in handle:
            if line.startswith('VmRSS:'):
                return int(line.split()[1]) / 1024.0
    return 0.0


def arguments(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument('--messages', type=int, default=20000)
    parser.add_argument('--port', type=int, default=int(os.environ.get('MAGLICA_TEST_PORT_BASE', '15555')) + 30)
    parser.add_argument('--seed', type=int, default=3)
    parser.add_argument('--images', type=int, default=300, help='hostile images')
    parser.add_argument('--servers', type=int, default=100, help='hostile server behaviours')
    parser.add_argument('--agents', type=int, default=300, help='hostile guest-agent replies')
    return parse_args(parser, QUICK, '2000 messages, 40 images, 20 servers, 100 agent replies', argv)


def main():
    args = arguments()
    exit_on_sigterm()
    rng = random.Random(args.seed)
    cloud = Cloud(None, tempfile.mkdtemp(prefix='maglica-fuzz-'), hosts=HOSTS, port=args.port)
    cloud.start()
    pid = cloud.client_worker.pid
    zmq = transport.zmq()
    context = zmq.Context()
    requests = valid_requests()
    unanswered = 0
    try:
        # Warm up before measuring memory, so that caches and the SQLite page cache count as baseline.
        sock = None
        rss_before = None
        for index in range(args.messages):
            if index == min(500, args.messages // 10):
                rss_before = rss_mb(pid)
            if sock is None:
                sock = context.socket(zmq.REQ)
                sock.linger = 0
                transport.secure_client(sock, cloud.config, curve.LIBRARY)
                sock.connect(cloud.config.endpoint('rep'))
            sock.send_multipart(frames_for(rng, requests, index))
            if sock.poll(5000):
                sock.recv()
            else:
                unanswered += 1
                sock.close()
                sock = None
        if sock is not None:
            sock.close()
        rss_after = rss_mb(pid)
        restarts = 0 if cloud.client_worker.poll() is None and cloud.client_worker.pid == pid else 1
        try:
            job = cloud.submit('fz0', 'noop', {'marker': 'after'})
            valid_after = cloud.wait_job(job['id'], 'succeeded', 30)['state'] == 'succeeded'
        except (AssertionError, DispatchError):
            valid_after = False
    finally:
        context.destroy(linger=0)
        cloud.stop()
    result = {'messages': args.messages, 'worker_restarts': restarts, 'rss_growth_mb': round(rss_after - (rss_before or rss_after), 1),
              'valid_job_after': valid_after}
    if unanswered:
        result['unanswered'] = unanswered
    broken = ['%d message(s) got no answer' % unanswered] if unanswered else []
    if restarts:
        broken.append('the client worker did not keep its process (pid %d)' % pid)
    if not valid_after:
        broken.append('a valid noop job did not succeed after the fuzzing')
    refused = bench_workers.refusals(cloud.workdir)
    if refused:
        broken.append(bench_workers.describe(refused))
    hostile_run = hostile.run_all(random.Random(args.seed), args.images, args.servers, args.agents)
    result.update(hostile_run['result'])
    if hostile_run['result']['hostile_refused'] < hostile_run['result']['hostile_cases']:
        counts = hostile_run['result']
        broken.append('%d of %d hostile cases were accepted' % (counts['hostile_cases'] - counts['hostile_refused'],
                                                                counts['hostile_cases']))
    broken.extend(hostile_run['problems'][:20])
    if len(hostile_run['problems']) > 20:
        broken.append('and %d more hostile-case problems' % (len(hostile_run['problems']) - 20))
    return conclude(result, args.quick, broken, [])


if __name__ == '__main__':
    sys.exit(main())
