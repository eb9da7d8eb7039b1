# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""10 clones of one image onto one host: batched customisation against one clone after the other.

    make bench-batch         (python benchmarks/batch.py --clones 10 --serial 3)
    make bench-batch BENCH_ARGS=--quick   (--clones 3 --serial 0 --mode linked: no serial clone, so no ratio)

Serial: the seed's way, one job at a time, each with its own libguestfs launch and
inspection (host_worker.batch_window: 0, concurrency: 1); `serial_per_clone_s` is
the mean of --serial such clones. Batched: a first clone teaches the host worker the
image's layout (`first_clone_s`, kept in its state directory for every later clone),
then all clones are submitted at once; the host worker runs them concurrently and
customises them through one appliance, without inspection.
Broken, in any run: a clone job that fails, a job the host worker refuses, a clone missing from the host after,
batched clones that did not share an appliance (counted in the host worker's log: `appliance_launches`).
Prints one JSON line last: {"clones", "total_s", "per_clone_s", "serial_per_clone_s", "ratio", "first_clone_s", "quick"}.
Target (full runs): per_clone_s at most 1/3 of serial_per_clone_s.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import time

os.environ.setdefault('MAGLICA_TESTBED_DIR', '/var/tmp/maglica-bench-batch')
os.environ.setdefault('MAGLICA_TEST_ADDRESS_BASE', '81')
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'tests', 'integration'))

import bench_workers  # noqa: E402  pylint: disable=wrong-import-position
from bench_output import conclude, parse_args  # noqa: E402  pylint: disable=wrong-import-position
from maglica_testbed import Cloud, Testbed, exit_on_sigterm  # noqa: E402  pylint: disable=wrong-import-position

HOST = 'host0'
QUICK = {'clones': 3, 'serial': 0, 'mode': 'linked'}


def clone_args(name, mode):
    return {'image': 'bench.original', 'hostname': name, 'clone_mode': mode, 'start': False}


def arguments(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument('--clones', type=int, default=10)
    parser.add_argument('--serial', type=int, default=3, help='serial clones to average (0: none, no ratio)')
    parser.add_argument('--mode', choices=('full', 'linked'), default='full')
    parser.add_argument('--port', type=int, default=int(os.environ.get('MAGLICA_TEST_PORT_BASE', '15555')) + 40)
    return parse_args(parser, QUICK, '3 linked clones batched, no serial clone and so no ratio', argv)


def appliance_launches(log_path):
    """[clones customised] of each appliance launch the host worker logged (batching logs every launch)."""
    with open(log_path, errors='replace') as handle:
        text = handle.read()
    return [1 if alone else int(many) for alone, many in
            re.findall(r'appliance launch: customising (?:(1) clone alone|(\d+) clone\(s\) in one appliance)', text)]


def main():
    args = arguments()
    exit_on_sigterm()
    testbed = Testbed(1)
    testbed.start()
    workdir = tempfile.mkdtemp(prefix='maglica-batch-')
    cloud = Cloud(testbed, workdir, port=args.port)
    try:
        testbed.define_image(HOST, 'bench.original', testbed.image('debian'))
        cloud.reconfigure(host_worker={'batch_window': 0, 'concurrency': 1})
        cloud.start()
        started = time.monotonic()
        for index in range(args.serial):
            job = cloud.submit(HOST, 'vm.clone', clone_args('serial%d.bench' % index, args.mode))
            cloud.wait_job(job['id'], 'succeeded', 600)
        serial = (time.monotonic() - started) / args.serial if args.serial else None

        cloud.stop_host_worker(HOST)
        cloud.reconfigure(host_worker={'batch_window': 1.0, 'concurrency': args.clones})
        cloud.start_host_worker(HOST)
        started = time.monotonic()
        job = cloud.submit(HOST, 'vm.clone', clone_args('first.bench', args.mode))
        cloud.wait_job(job['id'], 'succeeded', 600)
        first = time.monotonic() - started
        started = time.monotonic()
        jobs = [cloud.submit(HOST, 'vm.clone', clone_args('batch%d.bench' % index, args.mode)) for index in range(args.clones)]
        for job in jobs:
            cloud.wait_job(job['id'], 'succeeded', 900)
        total = time.monotonic() - started
        names = ['serial%d.bench' % i for i in range(args.serial)] + ['first.bench'] + ['batch%d.bench' % i for i in range(args.clones)]
        defined = testbed.domains(HOST)
    finally:
        cloud.stop()
        testbed.stop()
    per_clone = total / args.clones
    result = {'clones': args.clones, 'mode': args.mode, 'total_s': round(total, 1), 'per_clone_s': round(per_clone, 2),
              'first_clone_s': round(first, 1)}
    if serial:
        result.update(serial_per_clone_s=round(serial, 2), ratio=round(per_clone / serial, 3))
    broken = ['clone %s is not defined on %s after its job succeeded' % (name, HOST) for name in names if name not in defined]
    launches = appliance_launches(os.path.join(workdir, 'host_worker-%s.log' % HOST))
    result['appliance_launches'] = len(launches)
    if args.clones > 1 and max(launches[args.serial + 1:] or [0]) < 2:
        broken.append('the %d batched clones never shared an appliance: launches after the first clone customised %s clone(s)'
                      % (args.clones, launches[args.serial + 1:]))
    refused = bench_workers.refusals(workdir)
    if refused:
        broken.append(bench_workers.describe(refused))
    if not serial:
        missed = ['no ratio: a full run needs --serial 1 or more']
    else:
        missed = [] if per_clone <= serial / 3 else ['per_clone_s %.2f > serial_per_clone_s / 3 (%.2f)' % (per_clone, serial / 3)]
    return conclude(result, args.quick, broken, missed)


if __name__ == '__main__':
    sys.exit(main())
