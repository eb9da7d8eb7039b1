# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""No-op jobs through a client worker and 10 host workers, durable log and CURVE on, from concurrent submitters.

    make bench-dispatch      (python benchmarks/dispatch.py --jobs 5000 --submitters 4 --rate 1000)
    make bench-dispatch BENCH_ARGS=--quick   (--jobs 1000)

Each submitter is its own process with its own Client (REQ socket, library key).
Two runs of --jobs each: flat out (each submitter sends its next job as soon as the
last is accepted), which gives `jobs_per_s`: jobs over the time from the first
submission to the last job finished; then paced at --rate jobs/s in all (an open
load, as many users would make), which gives the latencies `p50_ms`/`p99_ms`: from
when a job was due to be sent to its `finished` time in the client worker's job log
(one machine, one clock). Flat out, the queue grows until the run ends, so its
latencies (in `flat_out`) measure the queue, not the dispatch.
Broken, in any run: a job that does not succeed within 120 s of the last submission (the run stops with a clear
message at once when a host worker refuses jobs).
Both runs are made on each job log store in turn (--stores): SQLite, then PostgreSQL (a server of the run's own,
tests/postgres_server.py, durable commits on).
Each run also says what a job cost in CPU (`cpu_ms_per_job`: user and system time of the client worker, the host
workers, the submitters and the PostgreSQL server with its backends, from /proc and getrusage, over the run, divided
by its jobs): on this 2-core machine, 1000 jobs/s needs well under 2 ms.
Prints one JSON line last: {"jobs", "jobs_per_s", "p50_ms", "p99_ms", "paced", "flat_out" (SQLite's),
"postgresql": {the same}, ..., "quick"}.
Targets (full runs): SQLite jobs_per_s >= 1000 and, at 1000 jobs/s offered, p99_ms < 50, on this 2-core machine;
PostgreSQL jobs_per_s >= 500.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
import sqlite3
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'tests', 'integration'))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'tests'))

import bench_workers  # noqa: E402  pylint: disable=wrong-import-position
from bench_output import conclude, parse_args  # noqa: E402  pylint: disable=wrong-import-position
from maglica_testbed import Cloud, wait_until  # noqa: E402  pylint: disable=wrong-import-position
from postgres_server import PostgresServer  # noqa: E402  pylint: disable=wrong-import-position
from maglica.controller import client  # noqa: E402  pylint: disable=wrong-import-position
from maglica.cluster import config as maglica_config  # noqa: E402  pylint: disable=wrong-import-position
from maglica.protocol import messages  # noqa: E402  pylint: disable=wrong-import-position
HOSTS = {'hw%d' % i: '127.0.0.1' for i in range(10)}
QUICK = {'jobs': 1000}


def submitter(config_path, index, count, every, start, out):
    """Submit `count` noop jobs round-robin over the hosts once `start` is set, one per `every` seconds (0: each as
    soon as the last is accepted); put [(id, sent_at)] on `out`. With a pace, sent_at is when the job was due, so
    a submitter held up by a slow answer does not hide the wait."""
    config = maglica_config.load(config_path)
    hosts = sorted(HOSTS)
    jobs = [messages.new_job(hosts[(index + i) % len(hosts)], 'noop', {}) for i in range(count)]
    sent = []
    with client.Client(config, timeout=10) as library:
        library.hosts()  # the CURVE handshake happens before the clock starts
        start.wait()
        cpu_before = own_cpu_s()
        began = time.time() + index * every / max(1, count)
        for number, job in enumerate(jobs):
            at = time.time()
            if every:
                due = began + number * every
                if due > at:
                    time.sleep(due - at)  # the pace of an open-loop load, not synchronisation
                at = due
            library.submit(job)
            sent.append((job['id'], at))
    out.put((sent, own_cpu_s() - cpu_before))


def own_cpu_s():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def worker_cpu(cloud, postgres):
    """{role: CPU seconds so far} of the run's daemons."""
    seconds = bench_workers.cpu_seconds
    cpu = {'client_worker': seconds(cloud.client_worker.pid), 'host_workers': sum(seconds(proc.pid) for proc in cloud.host_workers.values())}
    if postgres is not None:
        cpu['postgresql'] = seconds(postgres.proc.pid) + sum(seconds(pid) for pid in bench_workers.children(postgres.proc.pid))
    return cpu


def run_load(cloud, jobs, submitters, rate, postgres=None):
    """Submit `jobs` from `submitters` processes (at `rate` jobs/s in all, 0: flat out), until every job succeeded:
    its figures, and what each job cost in CPU (`postgres`: the PostgreSQL server the job log is in, counted too)."""
    start, out = multiprocessing.Event(), multiprocessing.Queue()
    shares = [jobs // submitters + (1 if i < jobs % submitters else 0) for i in range(submitters)]
    every = submitters / float(rate) if rate else 0
    procs = [multiprocessing.Process(target=submitter, args=(cloud.path, i, n, every, start, out)) for i, n in enumerate(shares)]
    for proc in procs:
        proc.start()
    before = worker_cpu(cloud, postgres)
    start.set()
    sent, submitters_cpu = {}, 0.0
    for _proc in procs:
        shares_sent, cpu = out.get(timeout=600)
        sent.update(shares_sent)
        submitters_cpu += cpu
    for proc in procs:
        proc.join()
    # Read the job log itself (a reader does not block the WAL writer): its `finished` times are the figures.
    # A job a host worker refused never ends: bench_workers.check stops the wait at once, saying which and why.
    by_id = wait_until(lambda: bench_workers.check(cloud.workdir) or finished_jobs(cloud, sent), 120,
                       'every job to succeed', interval=0.2)
    after = worker_cpu(cloud, postgres)
    cpu = dict({role: after[role] - before[role] for role in after}, submitters=submitters_cpu)
    cpu_ms = {role: round(1000 * seconds / len(sent), 3) for role, seconds in sorted(cpu.items())}
    cpu_ms['total'] = round(1000 * sum(cpu.values()) / len(sent), 3)
    latencies = [(by_id[i]['finished'] - at) * 1000 for i, at in sent.items()]
    elapsed = max(j['finished'] for j in by_id.values()) - min(sent.values())
    return {'jobs': len(sent), 'jobs_per_s': round(len(sent) / elapsed), 'p50_ms': round(percentile(latencies, 0.5), 1),
            'p99_ms': round(percentile(latencies, 0.99), 1), 'max_ms': round(max(latencies), 1), 'cpu_ms_per_job': cpu_ms}


def percentile(values, fraction):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


def arguments(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument('--jobs', type=int, default=5000, help='jobs of each of the two runs')
    parser.add_argument('--submitters', type=int, default=4)
    parser.add_argument('--rate', type=float, default=1000.0, help='offered jobs/s of the paced run')
    parser.add_argument('--port', type=int, default=int(os.environ.get('MAGLICA_TEST_PORT_BASE', '15555')) + 60)
    parser.add_argument('--stores', type=lambda text: text.split(','), default=['sqlite', 'postgresql'],
                        help='job log stores, each run in turn (comma-separated: sqlite,postgresql)')
    return parse_args(parser, QUICK, '1000 jobs per run', argv)


def run_store(args, store, postgres):
    """Both runs (flat out, paced) through a client worker whose job log is `store`: {'flat_out', 'paced'}."""
    cloud = Cloud(None, tempfile.mkdtemp(prefix='maglica-dispatch-%s-' % store), hosts=HOSTS,
                  port=args.port + (5 if store == 'postgresql' else 0))
    # The hosts have no libvirtd: a host worker would try to take its state from one every 2 s, and fail.
    cloud.reconfigure(host_worker={'state_poll_interval': 0})
    if store == 'postgresql':
        cloud.reconfigure(joblog={'backend': 'postgresql', 'dsn': postgres.create_database('dispatch')})
    cloud.start()
    try:
        server = postgres if store == 'postgresql' else None
        return {'flat_out': run_load(cloud, args.jobs, args.submitters, 0, server),
                'paced': run_load(cloud, args.jobs, args.submitters, args.rate, server)}
    finally:
        cloud.stop()


def main():
    args = arguments()
    runs = {}
    # PostgreSQL as a production server runs it: durable commits (fsync, synchronous_commit on), its own disk files.
    with PostgresServer() as postgres:
        for store in args.stores:
            try:
                runs[store] = run_store(args, store, postgres)
            except bench_workers.WorkersRefused as e:
                return conclude({'jobs': args.jobs, 'store': store, 'refused': str(e)}, args.quick, [str(e)], [])
    missed = []
    result = {'jobs': args.jobs, 'submitters': args.submitters, 'hosts': len(HOSTS), 'rate': args.rate}
    for store, target in (('sqlite', 1000), ('postgresql', 500)):
        if store not in runs:
            continue
        flat_out, paced = runs[store]['flat_out'], runs[store]['paced']
        figures = {'jobs_per_s': flat_out['jobs_per_s'], 'p50_ms': paced['p50_ms'], 'p99_ms': paced['p99_ms'], 'paced': paced,
                   'flat_out': flat_out}
        if store == 'sqlite':  # the headline figures, as before PostgreSQL
            result.update(figures)
        else:
            result[store] = figures
        if flat_out['jobs_per_s'] < target:
            missed.append('%s jobs_per_s %d < %d' % (store, flat_out['jobs_per_s'], target))
        if store == 'sqlite':
            if paced['jobs_per_s'] < 0.95 * args.rate:
                missed.append('paced jobs_per_s %d < 0.95 x %g offered' % (paced['jobs_per_s'], args.rate))
            if paced['p99_ms'] >= 50:
                missed.append('p99_ms %s >= 50' % paced['p99_ms'])
    # Every job succeeded, or run_load would have raised: nothing broken to report.
    return conclude(result, args.quick, [], missed)


def finished_jobs(cloud, sent):
    """{id: {finished}} of the jobs `sent` once all have succeeded, read from the job log itself, else None."""
    query = "SELECT id, finished FROM jobs WHERE state = 'succeeded'"
    if cloud.config.joblog['backend'] == 'postgresql':
        import psycopg  # pylint: disable=import-outside-toplevel
        with psycopg.connect(cloud.config.joblog['dsn']) as db:
            rows = db.execute(query).fetchall()
    else:
        db = sqlite3.connect('file:%s?mode=ro' % cloud.config.jobs['database'], uri=True)
        try:
            rows = db.execute(query).fetchall()
        finally:
            db.close()
    jobs = {i: {'finished': finished} for i, finished in rows if i in sent}
    return jobs if len(jobs) == len(sent) else None


if __name__ == '__main__':
    sys.exit(main())
