# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Importing a 2 GiB qcow2 holding ~300 MB of data onto 3 hosts (--hosts) from a loopback URL, cold cache, against one
`curl` of the same URL to a file plus `cp --sparse=always` of that file into each of the 3 hosts' pools.

    make bench-image         (python benchmarks/image.py --data-mb 300)
    make bench-image BENCH_ARGS=--quick   (--data-mb 50 --modes overlay --hosts 2: no copy import)

The image: the testbed's Debian guest disk grown to 2 GiB virtual with --data-mb of random data written into it
(benchmarks/clone.py's make_image). It is served by an HTTP server on a loopback address (the one the integration
test uses). In the same run, each timed from a `sync` to a `sync`:
- `baseline_s`: `curl -o FILE URL`, then `cp --sparse=always FILE` into host0..host2's pool directories;
- `import_s`: image_import.import_image onto host0..host2 (one job per host, at once, through the client and host
  workers), with a cold cache, disk_mode copy (the default: the disk is a copy of the fetched file, and the cache
  entry goes once the copy is made);
- `import_overlay_s`: the same with disk_mode overlay (the disk is a qcow2 overlay on the cached file), the caches
  cold again.
`bytes_per_host`: what one host's pool directory (with its cache) grew by, in allocated bytes (du), after the
copy import; `bytes_per_host_overlay` after the overlay import; `dispatch_s` (submitted to acknowledged by the
last host worker) and `jobs_s` (first acknowledged to last finished) of the copy import.
Broken, in any run: an import that fails or leaves a host out, a cache hit where the cache is cold, an image not
defined on a host afterwards, a job a host worker refused. Prints one JSON line last.
Targets (full runs): ratio = import_s / baseline_s <= 1.3; bytes_per_host <= 1.1 x data_bytes (the file's allocation).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), 'tests', 'integration'))

import bench_workers  # noqa: E402  pylint: disable=wrong-import-position
from bench_output import conclude, parse_args  # noqa: E402  pylint: disable=wrong-import-position
from clone import make_image  # noqa: E402  pylint: disable=wrong-import-position
from maglica_testbed import Cloud, Testbed  # noqa: E402  pylint: disable=wrong-import-position
from maglica.controller import image_import  # noqa: E402  pylint: disable=wrong-import-position,wrong-import-order
from maglica.host import image_fetch  # noqa: E402  pylint: disable=wrong-import-position,wrong-import-order
from test_image_import import Server, sha256_of  # noqa: E402  pylint: disable=wrong-import-position

MODES = ('copy', 'overlay')  # the first is the headline: the default disk_mode
QUICK = {'data_mb': 50, 'modes': 'copy', 'hosts': 2}


def allocated(path):
    """Allocated bytes of a directory tree (du), 0 when it is not there."""
    if not os.path.exists(path):
        return 0
    return int(subprocess.run(['du', '-s', '-B1', path], stdout=subprocess.PIPE, check=True, universal_newlines=True).stdout.split()[0])


def timed(step):
    os.sync()
    began = time.monotonic()
    step()
    os.sync()
    return time.monotonic() - began


def modes(text):
    chosen = text.split(',')
    if 'copy' not in chosen or not set(chosen) <= set(MODES):
        raise argparse.ArgumentTypeError('a comma-separated list of %s, with copy' % ', '.join(MODES))
    return [mode for mode in MODES if mode in chosen]


def arguments(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument('--data-mb', type=int, default=300)
    parser.add_argument('--modes', type=modes, default=list(MODES), help='disk modes to import with (copy,overlay)')
    parser.add_argument('--hosts', type=int, default=3, help='testbed hosts to import onto at once')
    return parse_args(parser, QUICK, '50 MB of data, the copy import only, onto 2 hosts', argv)


def main():
    args = arguments()
    workdir = tempfile.mkdtemp(prefix='maglica-image-', dir='/var/tmp')
    testbed = Testbed(args.hosts)
    hosts = sorted(testbed.hosts)
    testbed.start()
    os.makedirs(os.path.join(workdir, 'cloud'))
    cloud = Cloud(testbed, os.path.join(workdir, 'cloud'))
    server = None
    broken = []
    try:
        cloud.start()
        source = make_image(testbed, workdir, args.data_mb)
        checksum = sha256_of(source)  # also reads it into the page cache: both sides serve it from memory
        data_bytes = os.stat(source).st_blocks * 512
        server = Server({'/big.qcow2': source})
        url = server.url('/big.qcow2')
        pools = {host: os.path.join(testbed.dir, 'hosts', host, 'lib', 'images') for host in hosts}

        fetched = os.path.join(workdir, 'fetched.qcow2')

        def baseline():
            subprocess.run(['curl', '-sf', '-o', fetched, url], check=True)
            for host in hosts:
                subprocess.run(['cp', '--sparse=always', fetched, os.path.join(pools[host], 'baseline.qcow2')], check=True)
        baseline_s = timed(baseline)
        for host in hosts:
            os.unlink(os.path.join(pools[host], 'baseline.qcow2'))

        results = {}
        for mode in args.modes:
            before = {host: allocated(pools[host]) for host in hosts}
            name = 'bench.%s' % mode
            seconds = timed(lambda: results.setdefault(mode, image_import.import_image(
                cloud.config, name, url, checksum, list(hosts), {'disk_mode': mode, 'domain_type': 'qemu'})))
            grown = [allocated(pools[host]) - before[host] for host in hosts]
            imported = results[mode]['imported']
            broken += ['%s import: no result from %s' % (mode, host) for host in hosts if host not in imported]
            broken += ['%s import: a cache hit on %s, whose cache was cold' % (mode, host) for host, r in imported.items() if r['cache_hit']]
            broken += ['%s import: %s is not defined on %s' % (mode, name, host) for host in hosts if name not in testbed.domains(host)]
            jobs = list(results[mode]['jobs'].values())
            # Where the time went, from the job log's timestamps: to the host workers, then the jobs themselves.
            results[mode] = {'seconds': seconds, 'bytes_per_host': max(grown),
                             'dispatch_s': max(j['acked'] - j['created'] for j in jobs),
                             'jobs_s': max(j['finished'] for j in jobs) - min(j['acked'] for j in jobs)}
            for host in hosts:  # cold again for the next mode
                testbed.virsh(host, 'undefine', '--remove-all-storage', name, check=False)
                shutil.rmtree(os.path.join(pools[host], image_fetch.CACHE_DIR), ignore_errors=True)
    finally:
        if server is not None:
            server.close()
        cloud.stop()
        testbed.stop()
        # The host workers' logs go with the work directory: look for refused jobs first.
        refused = bench_workers.refusals(os.path.join(workdir, 'cloud'))
        shutil.rmtree(workdir, ignore_errors=True)
    if refused:
        broken.append(bench_workers.describe(refused))
    headline = results['copy']
    result = {'import_s': round(headline['seconds'], 2), 'baseline_s': round(baseline_s, 2),
              'ratio': round(headline['seconds'] / baseline_s, 2), 'disk_mode': 'copy',
              'bytes_per_host': headline['bytes_per_host'], 'data_bytes': data_bytes,
              'bytes_vs_data': round(headline['bytes_per_host'] / data_bytes, 2),
              'dispatch_s': round(headline['dispatch_s'], 2), 'jobs_s': round(headline['jobs_s'], 2),
              'hosts': len(hosts), 'virtual_gib': 2}
    if 'overlay' in results:
        overlay = results['overlay']
        result.update(import_overlay_s=round(overlay['seconds'], 2), ratio_overlay=round(overlay['seconds'] / baseline_s, 2),
                      bytes_per_host_overlay=overlay['bytes_per_host'],
                      bytes_vs_data_overlay=round(overlay['bytes_per_host'] / data_bytes, 2))
    missed = []
    if result['ratio'] > 1.3:
        missed.append('ratio %s > 1.3' % result['ratio'])
    if result['bytes_vs_data'] > 1.1:
        missed.append('bytes_vs_data %s > 1.1' % result['bytes_vs_data'])
    return conclude(result, args.quick, broken, missed)


if __name__ == '__main__':
    sys.exit(main())
