# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Jobs through a client worker and 5 host workers while workers are killed, restarted and frozen.

    make bench-faults        (python benchmarks/faults.py --jobs 300 --kills 20)

Every job is a noop with a marker: one line per run in its host's effects file.
Prints one JSON line last: {"jobs", "kills", "lost", "duplicated_effects", "unfinished", "seconds"}.
Goal: lost = duplicated_effects = unfinished = 0, in under 120 s on 2 cores.
"""

from __future__ import annotations

import argparse
import collections
import os
import random
import signal
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'tests', 'integration'))

from bench_output import print_last  # noqa: E402  pylint: disable=wrong-import-position
from maglica_testbed import Cloud, exit_on_sigterm  # noqa: E402  pylint: disable=wrong-import-position
from maglica import client, messages  # noqa: E402  pylint: disable=wrong-import-position
from maglica.errors import DispatchError  # noqa: E402  pylint: disable=wrong-import-position

HOSTS = {'hw%d' % i: '127.0.0.1' for i in range(5)}


def submit_all(cloud, jobs, accepted, stop):
    """Submit every job, resending the same id until the client worker takes it (the id makes that safe)."""
    with client.Client(cloud.config, timeout=1) as library:
        for job in jobs:
            while not stop.is_set():
                try:
                    library.submit(job)
                    accepted.append(job['id'])
                    break
                except DispatchError:
                    continue


def states(cloud, ids):
    try:
        with client.Client(cloud.config, timeout=2) as library:
            return {j['id']: j['state'] for j in library.recent(len(ids) + 100)}
    except DispatchError:
        return None


def main():
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument('--jobs', type=int, default=300)
    parser.add_argument('--kills', type=int, default=20)
    parser.add_argument('--deadline', type=float, default=110.0, help='seconds until unfinished jobs are counted')
    parser.add_argument('--port', type=int, default=int(os.environ.get('MAGLICA_TEST_PORT_BASE', '15555')) + 20)
    parser.add_argument('--seed', type=int, default=7)
    args = parser.parse_args()
    exit_on_sigterm()
    rng = random.Random(args.seed)
    workdir = tempfile.mkdtemp(prefix='maglica-faults-')
    cloud = Cloud(None, workdir, hosts=HOSTS, port=args.port)
    cloud.start()
    started = time.monotonic()
    jobs = [messages.new_job('hw%d' % (i % len(HOSTS)), 'noop', {'marker': 'f%d' % i, 'delay': 0.02}, ttl=3600)
            for i in range(args.jobs)]
    accepted, stop = [], threading.Event()
    submitter = threading.Thread(target=submit_all, args=(cloud, jobs, accepted, stop))
    submitter.start()
    kills = 0
    victims = ['client'] + list(HOSTS)
    try:
        # Kill one worker every so often (the client worker among them), and freeze some for a while.
        while kills < args.kills:
            victim = 'client' if kills % 5 == 2 else rng.choice(victims[1:])
            if victim == 'client':
                cloud.kill_client_worker()
                cloud.start_client_worker()
            else:
                cloud.stop_host_worker(victim, signal.SIGKILL)
                cloud.start_host_worker(victim, wait=False)
            kills += 1
            if kills % 4 == 0:
                frozen = cloud.host_workers[rng.choice(victims[1:])]
                frozen.send_signal(signal.SIGSTOP)
                time.sleep(rng.uniform(1.0, 2.0))  # the fault itself: a worker frozen for a while
                frozen.send_signal(signal.SIGCONT)
            time.sleep(rng.uniform(0.5, 1.5))  # spacing between faults, not synchronisation
        submitter.join(timeout=args.deadline)
        ids = [j['id'] for j in jobs]
        final = {}
        while time.monotonic() - started < args.deadline:
            final = states(cloud, ids) or final
            if final and all(final.get(i) == 'succeeded' for i in accepted) and len(accepted) == len(jobs):
                break
            time.sleep(0.2)
    finally:
        stop.set()
        submitter.join()
        seconds = time.monotonic() - started
        cloud.stop()
    effects = collections.Counter()
    for host in HOSTS:
        effects.update(line.split()[0] for line in cloud.effects(host))
    lost = sum(1 for i in accepted if i not in final or (final[i] == 'succeeded' and effects[i] == 0))
    result = {
        'jobs': args.jobs,
        'kills': kills,
        'lost': lost,
        'duplicated_effects': sum(n - 1 for n in effects.values() if n > 1),
        'unfinished': sum(1 for j in jobs if final.get(j['id']) != 'succeeded'),
        'seconds': round(seconds, 1),
    }
    print_last(result)
    return 0 if result['lost'] == result['duplicated_effects'] == result['unfinished'] == 0 else 1


if __name__ == '__main__':
    sys.exit(main())
