# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Jobs through a client worker and 5 host workers while workers are killed, restarted and frozen; then clones
on two real libvirtds while host workers are killed with jobs queued, and one hostname submitted at once.

    make bench-faults        (python benchmarks/faults.py --jobs 300 --kills 20 --clones 8 --failover-jobs 300 --failovers 5)
    make bench-faults BENCH_ARGS=--quick   (--jobs 100 --kills 8 --clones 4 --clone-kills 3 --deadline 60
                                            --failover-jobs 100 --failovers 2)

Phase 1: every job is a noop with a marker, one line per run in its host's effects file.
Phase 2 (ownership): clone jobs whose names or disks collide with other domains' and images' disks, clones that
collide with nothing, and concurrent submissions of one hostname (to either host), while the host workers
(concurrency 1, so jobs sit queued) are killed and restarted. Counted afterwards on the hosts themselves.
Prints one JSON line last: {"jobs", "kills", "lost", "duplicated_effects", "unfinished", "foreign_deleted",
"same_name_clones", "missing_clones", "refused_collisions", "clones_of_colliding_names", "clones_reconciled",
"clone_jobs", "clone_kills", "failover_jobs", "failovers", "failover_s_p50", "failover_s_p99", "failover_s_max",
"failover_lost", "failover_duplicated", "failover_unfinished", "refused_by_workers", "seconds", "quick"}.
Phase 3 (failover, issue 21): two client workers on a PostgreSQL job log (a server of the run's own), noop jobs
submitted without a pause while the active client worker is killed (kill -9) --failovers times; `failover_s` is
from the kill until the standby takes requests (joblog.lease_s is the default 5 s). Target: failover_s_p99 < 10.
Goal: lost = duplicated_effects = unfinished = foreign_deleted = same_name_clones = missing_clones = 0, and
failover_lost = failover_duplicated = failover_unfinished = 0. Any of
them not 0 is broken behaviour and fails the run, quick or not; so do jobs the workers refuse (bench_workers),
and an ownership phase whose kills never caught a clone job queued or running (clones_reconciled 0: it proved
nothing).
"""

from __future__ import annotations

import argparse
import collections
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'tests', 'integration'))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'tests'))

import bench_workers  # noqa: E402  pylint: disable=wrong-import-position
from bench_output import conclude, parse_args  # noqa: E402  pylint: disable=wrong-import-position
from maglica_testbed import MODULE_UTILS, NOOP_WORKER, PYTHON, Cloud, Testbed, exit_on_sigterm, wait_until  # noqa: E402  pylint: disable=wrong-import-position
from postgres_server import PostgresServer  # noqa: E402  pylint: disable=wrong-import-position
from maglica.controller import client  # noqa: E402  pylint: disable=wrong-import-position
from maglica.protocol import messages, transport  # noqa: E402  pylint: disable=wrong-import-position
from maglica.errors import DispatchError  # noqa: E402  pylint: disable=wrong-import-position

GOALS = ('lost', 'duplicated_effects', 'unfinished', 'foreign_deleted', 'same_name_clones', 'missing_clones')
FAILOVER_GOALS = ('failover_lost', 'failover_duplicated', 'failover_unfinished')
QUICK = {'jobs': 100, 'kills': 8, 'clones': 4, 'clone_kills': 3, 'deadline': 60.0, 'failover_jobs': 100, 'failovers': 2}


HOSTS = {'hw%d' % i: '127.0.0.1' for i in range(5)}
LAUNCHER = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'ownership_host_worker.py')
IMAGES = '/var/lib/libvirt/images'


class OwnershipCloud(Cloud):
    """The testbed's cloud, its host workers without guest customisation (see ownership_host_worker.py)."""

    def start_host_worker(self, host, wait=True):
        command = [PYTHON, LAUNCHER, '--config', self.path, '--name', host]
        self.host_workers[host] = self.testbed.popen_in(host, ['env', 'PYTHONPATH=%s' % MODULE_UTILS] + command,
                                                        self.log('host_worker-%s' % host))
        if wait:
            self.wait_alive(host)
        return self.host_workers[host]


def submit_all(cloud, jobs, accepted, stop):
    """Submit every job, resending the same id until the client worker takes it (the id makes that safe)."""
    with client.Client(cloud.config, timeout=1) as library:
        for job in jobs:
            if bench_workers.submit(library, job, stop) is not None:
                accepted.append(job['id'])


def guarded(target, errors, stop):
    """`target` for a thread: a refused job (WorkersRefused) is kept in `errors` and stops the other submitters."""
    def run(*args):
        try:
            target(*args)
        except bench_workers.WorkersRefused as e:
            errors.append(str(e))
            stop.set()
    return run


def start_submitter(cloud, jobs):
    """A thread submitting `jobs` (submit_all), started: (thread, ids accepted so far, the event that stops it, the
    refusals that stopped it)."""
    accepted, stop, errors = [], threading.Event(), []
    submitter = threading.Thread(target=guarded(submit_all, errors, stop), args=(cloud, jobs, accepted, stop))
    submitter.start()
    return submitter, accepted, stop, errors


def states(cloud, ids):
    try:
        with client.Client(cloud.config, timeout=2) as library:
            return {j['id']: j['state'] for j in library.recent(len(ids) + 100)}
    except DispatchError:
        return None


def final_states(cloud, jobs, accepted, errors, deadline):
    """{id: state} of the jobs once every accepted one succeeded and all were accepted, or as they are at
    `deadline` (time.monotonic()). A job a host worker dropped never ends: the wait stops at the first refusal."""
    ids = [j['id'] for j in jobs]
    final = {}
    while time.monotonic() < deadline and not errors and not bench_workers.refusals(cloud.workdir):
        final = states(cloud, ids) or final
        if final and all(final.get(i) == 'succeeded' for i in accepted) and len(accepted) == len(jobs):
            break
        time.sleep(0.2)  # polling the job log, with the deadline above
    return final


def runs_of(cloud):
    """{job id: how many times a host worker ran it}, from the noop effect lines."""
    effects = collections.Counter()
    for host in HOSTS:
        effects.update(line.split()[0] for line in cloud.effects(host))
    return effects


def fingerprint(testbed, host, path):
    try:
        st = os.stat(testbed.outside_path(host, path))
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


def _count_in(path, text):
    with open(path, errors='replace') as handle:
        return sum(1 for line in handle if text in line)


def clone_job(host, hostname, mode):
    return messages.new_job(host, 'vm.clone', {'image': 'img.original', 'hostname': hostname, 'clone_mode': mode,
                                               'start': False}, ttl=3600)


def submit_one(library, job, stop):
    """The id the client worker answers with (the job's own, or the job already making that hostname)."""
    logged = bench_workers.submit(library, job, stop)
    return logged['id'] if logged is not None else None


def ownership_phase(args, rng):
    """Clones around colliding names and disks, and one hostname submitted at once, while host workers are killed."""
    testbed = Testbed(2)
    testbed.start()
    workdir = tempfile.mkdtemp(prefix='maglica-ownership-')
    cloud = None
    try:
        blank = os.path.join(workdir, 'blank.qcow2')
        subprocess.run(['qemu-img', 'create', '-q', '-f', 'qcow2', blank, '64M'], check=True)
        foreign, colliding = {}, []
        for host in testbed.hosts:
            testbed.define_image(host, 'img.original', blank, 64)
            foreign[(host, 'img.original')] = ['%s/img.original.qcow2' % IMAGES]
        for i in range(args.clones):
            host = 'host%d' % (i % 2)
            # A VM renamed from c<i> keeps its disk c<i>.qcow2: the disk a clone called c<i> would make.
            testbed.define_image(host, 'c%d' % i, blank, 64)
            testbed.virsh(host, 'domrename', 'c%d' % i, 'keep%d' % i)
            foreign[(host, 'keep%d' % i)] = ['%s/c%d.qcow2' % (IMAGES, i)]
            # An image whose disk is d<i>.qcow2: the disk a clone called d<i> would make.
            testbed.define_image(host, 'd%d' % i, blank, 64)
            testbed.virsh(host, 'domrename', 'd%d' % i, 'd%d.original' % i)
            foreign[(host, 'd%d.original' % i)] = ['%s/d%d.qcow2' % (IMAGES, i)]
            colliding += [(host, 'c%d' % i), (host, 'd%d' % i)]
        before = {key: [fingerprint(testbed, key[0], p) for p in paths] for key, paths in foreign.items()}

        cloud = OwnershipCloud(testbed, workdir, port=args.port + 10)
        cloud.reconfigure(host_worker={'concurrency': 1, 'batch_window': 0})
        cloud.start()
        modes = ['linked', 'full']
        jobs = [clone_job(host, name, rng.choice(modes)) for host, name in colliding]
        jobs += [clone_job('host%d' % (i % 2), 'ok%d' % i, rng.choice(modes)) for i in range(args.clones)]
        rng.shuffle(jobs)
        # Jobs that keep each host's single slot busy, so that the clones behind them sit queued when it dies.
        spaced = []
        for job in jobs:
            spaced += [messages.new_job(job['host'], 'noop', {'delay': 0.3}, ttl=3600), job]
        dups = ['dup%d' % i for i in range(max(2, args.clones // 2))]
        accepted, stop, errors = set(), threading.Event(), []

        def submit_dup(name, barrier):
            with client.Client(cloud.config, timeout=1) as library:
                job = clone_job(rng.choice(list(testbed.hosts)), name, 'linked')
                barrier.wait()
                accepted.add(submit_one(library, job, stop))

        threads = []
        for name in dups:
            barrier = threading.Barrier(4)
            threads += [threading.Thread(target=guarded(submit_dup, errors, stop), args=(name, barrier)) for _n in range(4)]
        for thread in threads:
            thread.start()

        def submit_rest():
            with client.Client(cloud.config, timeout=1) as library:
                for job in spaced:
                    accepted.add(submit_one(library, job, stop))
        submitter = threading.Thread(target=guarded(submit_rest, errors, stop))
        submitter.start()
        started, kills = time.monotonic(), 0
        while kills < args.clone_kills and not stop.is_set():
            time.sleep(rng.uniform(0.8, 1.6))  # spacing between faults, not synchronisation
            victim = rng.choice(list(testbed.hosts))
            cloud.stop_host_worker(victim, signal.SIGKILL)
            cloud.start_host_worker(victim, wait=False)
            kills += 1
        submitter.join()
        for thread in threads:
            thread.join()
        accepted.discard(None)
        final = {}
        while time.monotonic() - started < args.deadline and not bench_workers.refusals(workdir):
            final = states(cloud, accepted) or final
            if final and all(final.get(i) in messages.FINAL_STATES for i in accepted):
                break
            time.sleep(0.2)
        logged = {}
        with client.Client(cloud.config, timeout=5) as library:
            for job in library.recent(len(accepted) + 100):
                logged[job['id']] = job
    finally:
        if cloud is not None:
            cloud.stop()
        domains = {host: testbed.domains(host) for host in testbed.hosts}
        after = {key: [fingerprint(testbed, key[0], p) for p in paths] for key, paths in foreign.items()}
        testbed.stop()
    clone_names = [name for _host, name in colliding] + ['ok%d' % i for i in range(args.clones)] + dups
    counts = {name: sum(1 for host in domains if name in domains[host]) for name in clone_names}
    wanted = ['ok%d' % i for i in range(args.clones)] + dups
    clone_ids = [i for i in accepted if logged.get(i, {}).get('action') == 'vm.clone']
    return {
        'clone_jobs': len(clone_ids),
        'clone_kills': kills,
        'foreign_deleted': sum(1 for key in foreign if key[1] not in domains[key[0]] or after[key] != before[key]),
        'same_name_clones': sum(max(0, n - 1) for n in counts.values()),
        'missing_clones': sum(1 for name in wanted if counts[name] == 0),
        'refused_collisions': sum(1 for i in clone_ids if logged[i]['state'] == 'failed' and 'already exists' in logged[i]['message']),
        'clones_of_colliding_names': sum(counts[name] for _host, name in colliding),
        # Times a restarted host worker found a clone job recorded but unfinished (queued or midway): the case under test.
        'clones_reconciled': sum(_count_in(os.path.join(workdir, 'host_worker-%s.log' % host), 'vm.clone reconciling')
                                 for host in testbed.hosts),
        'lost': sum(1 for i in accepted if i not in logged),
        'refused': bench_workers.refusals(workdir),
        'refused_at_submission': errors,
        'unfinished': sum(1 for i in accepted if logged.get(i, {}).get('state') not in messages.FINAL_STATES) +
        sum(1 for i in clone_ids if logged[i]['args']['hostname'] in wanted and logged[i]['state'] != 'succeeded'),
    }


class FailoverCloud(Cloud):
    """A cloud of noop hosts with two client workers, cw1 and cw2, on one PostgreSQL job log (issue 21)."""

    NAMES = ('cw1', 'cw2')

    def __init__(self, workdir, port, dsn):
        super().__init__(None, workdir, hosts=HOSTS, port=port)
        self.ports = {name: (port + 2 * n, port + 2 * n + 1) for n, name in enumerate(self.NAMES)}
        self.reconfigure(client={'workers': [{'name': name, 'host': '127.0.0.1', 'pub_port': pub, 'rep_port': rep}
                                             for name, (pub, rep) in self.ports.items()]},
                         joblog={'backend': 'postgresql', 'dsn': dsn})
        self.client_workers = {}

    def start_client_worker(self, name=None):
        names = [name] if name else list(self.NAMES)
        for one in names:
            self.client_workers[one] = subprocess.Popen(
                [PYTHON, NOOP_WORKER, 'maglica.client_worker.worker',
                 '--config', self.path, '--name', one], env=self.env, stdout=self.log('client_worker-%s' % one),
                stderr=subprocess.STDOUT)
        self.client_worker = self.client_workers[names[0]]
        if name is None:
            wait_until(lambda: self.active() is not None, 30, 'a client worker to be active')

    def answers(self, name, timeout=0.2):
        """Whether client worker `name` takes requests now (it is the active one)."""
        context = transport.zmq().Context.instance()
        sock = context.socket(transport.zmq().REQ)
        sock.linger = 0
        transport.secure_client(sock, self.config, 'library')
        try:
            sock.connect('tcp://127.0.0.1:%d' % self.ports[name][1])
            sock.send(messages.encode({'type': 'hosts'}))
            return bool(sock.poll(int(timeout * 1000)) and messages.decode(sock.recv()).get('ok'))
        finally:
            sock.close()

    def active(self):
        found = [name for name, proc in self.client_workers.items() if proc.poll() is None and self.answers(name)]
        return found[0] if len(found) == 1 else None

    def stop(self):
        super().stop()
        for proc in self.client_workers.values():
            if proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=30)


def failover_phase(args, postgres):
    """Noop jobs submitted without a pause while the active client worker is killed (kill -9) `args.failovers` times;
    each time the time until the standby takes requests is `failover_s`, and the killed one is started again."""
    cloud = FailoverCloud(tempfile.mkdtemp(prefix='maglica-failover-'), args.port + 2, postgres.create_database('failover'))
    cloud.start()
    started = time.monotonic()
    jobs = [messages.new_job('hw%d' % (i % len(HOSTS)), 'noop', {'marker': 'o%d' % i, 'delay': 0.02}, ttl=3600)
            for i in range(args.failover_jobs)]
    submitter, accepted, stop, errors = start_submitter(cloud, jobs)
    failovers = []
    final = {}
    try:
        for number in range(args.failovers):
            # Spread over the submissions: the next kill once a share of the jobs is in.
            wait_until(lambda: len(accepted) >= (number + 1) * len(jobs) // (args.failovers + 1) or errors, args.deadline,
                       'jobs accepted before failover %d' % (number + 1), interval=0.05)
            victim = cloud.active()
            if victim is None or errors:
                break
            cloud.client_workers[victim].kill()
            killed = time.monotonic()
            cloud.client_workers[victim].wait(timeout=30)
            taker = [name for name in cloud.NAMES if name != victim][0]
            wait_until(lambda: cloud.answers(taker), 60, 'client worker %s to take over' % taker, interval=0.05)
            failovers.append(time.monotonic() - killed)
            cloud.start_client_worker(victim)  # back as the standby
        submitter.join(timeout=args.deadline)
        final = final_states(cloud, jobs, accepted, errors, started + args.deadline + 60)
    finally:
        stop.set()
        submitter.join()
        cloud.stop()
    effects = runs_of(cloud)
    ids = [j['id'] for j in jobs]
    ordered = sorted(failovers)
    return {
        'failover_jobs': len(jobs),
        'failovers': len(failovers),
        'failover_s_p50': round(ordered[len(ordered) // 2], 2) if ordered else None,
        'failover_s_p99': round(ordered[min(len(ordered) - 1, int(round(0.99 * (len(ordered) - 1))))], 2) if ordered else None,
        'failover_s_max': round(max(ordered), 2) if ordered else None,
        'failover_lost': sum(1 for i in accepted if i not in final or (final[i] == 'succeeded' and effects[i] == 0)),
        'failover_duplicated': sum(n - 1 for i, n in effects.items() if n > 1 and i in set(ids)),
        'failover_unfinished': sum(1 for j in jobs if final.get(j['id']) != 'succeeded'),
        'failover_refused': errors + ([bench_workers.describe(bench_workers.refusals(cloud.workdir))]
                                      if bench_workers.refusals(cloud.workdir) else []),
    }


def arguments(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument('--jobs', type=int, default=300)
    parser.add_argument('--kills', type=int, default=20)
    parser.add_argument('--deadline', type=float, default=110.0, help='seconds until unfinished jobs are counted')
    parser.add_argument('--port', type=int, default=int(os.environ.get('MAGLICA_TEST_PORT_BASE', '15555')) + 20)
    parser.add_argument('--seed', type=int, default=7)
    parser.add_argument('--clones', type=int, default=8, help='ownership phase: clones per kind (0: no such phase)')
    parser.add_argument('--clone-kills', type=int, default=6, help='ownership phase: host worker kills')
    parser.add_argument('--failover-jobs', type=int, default=300, help='failover phase: jobs (0: no such phase)')
    parser.add_argument('--failovers', type=int, default=5, help='failover phase: kills of the active client worker')
    return parse_args(parser, QUICK, 'fewer jobs, kills and clones', argv)


def main():
    args = arguments()
    exit_on_sigterm()
    rng = random.Random(args.seed)
    workdir = tempfile.mkdtemp(prefix='maglica-faults-')
    cloud = Cloud(None, workdir, hosts=HOSTS, port=args.port)
    cloud.start()
    started = time.monotonic()
    jobs = [messages.new_job('hw%d' % (i % len(HOSTS)), 'noop', {'marker': 'f%d' % i, 'delay': 0.02}, ttl=3600)
            for i in range(args.jobs)]
    submitter, accepted, stop, errors = start_submitter(cloud, jobs)
    kills = 0
    victims = ['client'] + list(HOSTS)
    try:
        # Kill one worker every so often (the client worker among them), and freeze some for a while.
        while kills < args.kills and not errors:
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
        final = final_states(cloud, jobs, accepted, errors, started + args.deadline)
    finally:
        stop.set()
        submitter.join()
        cloud.stop()
    effects = runs_of(cloud)
    lost = sum(1 for i in accepted if i not in final or (final[i] == 'succeeded' and effects[i] == 0))
    refused = bench_workers.refusals(workdir)
    result = {
        'jobs': args.jobs,
        'kills': kills,
        'lost': lost,
        'duplicated_effects': sum(n - 1 for n in effects.values() if n > 1),
        'unfinished': sum(1 for j in jobs if final.get(j['id']) != 'succeeded'),
    }
    if args.clones and not errors and not refused:
        phase = ownership_phase(args, rng)
        result['lost'] += phase.pop('lost')
        result['unfinished'] += phase.pop('unfinished')
        refused.update(phase.pop('refused'))
        errors += phase.pop('refused_at_submission')
        result.update(phase)
    if args.failover_jobs and not errors and not refused:
        with PostgresServer() as postgres:
            phase = failover_phase(args, postgres)
        errors += phase.pop('failover_refused')
        result.update(phase)
    result['refused_by_workers'] = bench_workers.count(refused) + len(errors)
    result['seconds'] = round(time.monotonic() - started, 1)
    broken = ['%s: %d' % (key, result[key]) for key in GOALS + FAILOVER_GOALS if result.get(key, 0)]
    broken += errors + ([bench_workers.describe(refused)] if refused else [])
    if args.failover_jobs and not errors and result.get('failovers', 0) < args.failovers:
        broken.append('failovers: %d of %d: the active client worker could not be found to kill' % (result.get('failovers', 0), args.failovers))
    missed = []
    if result.get('failover_s_p99') is not None and result['failover_s_p99'] >= 10:
        missed.append('failover_s_p99 %s >= 10' % result['failover_s_p99'])
    if result.get('clone_kills') and not result.get('clones_reconciled'):
        broken.append('clones_reconciled: 0: no host worker was killed with a clone job queued or running, so the '
                      'ownership phase proved nothing')
    return conclude(result, args.quick, broken, missed)


if __name__ == '__main__':
    sys.exit(main())
