# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""From the clone task's start to a clone that answers SSH with its new host key, against a plain boot of the
same image to SSH-ready on the same host, in the same run.

    make bench-boot         (python benchmarks/boot.py --rounds 3)
    make bench-boot BENCH_ARGS=--quick   (--rounds 1 --no-warm --no-plain: one clone to SSH, nothing to compare)

One testbed host (in the testbed's network namespace) with the bootable Debian 12 image (ifupdown) defined as
an original image, and a plain domain on a fresh copy of the same disk. Each round, interleaved:
  cold   the image's layout not yet known to the host worker (its disk file touched: a new layout key), so the
         customisation launches libguestfs AND inspects; cloud.clone(wait_for='ssh') timed from the call;
  warm   the same, the layout known from the cold clone; and with the host worker's spares on (--spare-images 1,
         the default as deployed), the spare the cold clone left: no copy, no launch, no inspection;
  plain  the plain domain started, timed until its sshd proves it holds the image's own host key
         (reach.ssh_answers: the same strict check as the clone's).
Each clone is removed, and the plain domain's disk copied afresh, between measurements (outside the clock).
The phases of each clone are taken from its job: `job_s` (submit to finished: copy, libguestfs, start) and
`boot_s` (finished to SSH-ready). The quick run makes one cold clone to SSH only (a guest under TCG takes a minute
or more to boot): no warm clone, no plain boot, so no ratio.
Broken, in any run: a clone that does not answer SSH with the host key it reported (the run stops there), a clone
that reports no host key or one of the image's own.
Prints one JSON line last: {"clone_to_ssh_s", "boot_to_ssh_s", "ratio", "cold_clone_to_ssh_s", "cold_ratio", ..., "quick"}.
Target (full runs, issue 21): ratio <= 1.3 and cold_ratio <= 1.3.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'tests', 'integration'))

from bench_output import conclude, parse_args  # noqa: E402  pylint: disable=wrong-import-position
import bench_workers  # noqa: E402  pylint: disable=wrong-import-position
from maglica_testbed import Cloud, Testbed, read_guest_files  # noqa: E402  pylint: disable=wrong-import-position
from maglica.controller import cloud as maglica_cloud  # noqa: E402  pylint: disable=wrong-import-position,wrong-import-order
from maglica.controller import reach  # noqa: E402  pylint: disable=wrong-import-position,wrong-import-order
from maglica.host.spares import SPARED_NOTE  # noqa: E402  pylint: disable=wrong-import-position,wrong-import-order
HOST = 'host0'
IMAGE = 'bench-boot.original'
PLAIN = 'bench-boot-plain'
MEMORY_MIB = 1024
TIMEOUT = 1200
QUICK = {'rounds': 1, 'warm': False, 'plain': False}
TARGET_RATIO = 1.3  # clone to SSH against the plain boot, warm and cold


def log(text):
    print('bench-boot: %s' % text, file=sys.stderr, flush=True)


def image_host_keys(testbed, disk_path):
    """The image's own public host keys, read from its disk (outside the clock)."""
    names = ['/etc/ssh/ssh_host_%s_key.pub' % t for t in ('rsa', 'ecdsa', 'ed25519')]
    files = read_guest_files(testbed, HOST, disk_path, names)
    return [files[n].strip() for n in names if files.get(n)]


def fresh_plain(testbed, disk):
    testbed.virsh(HOST, 'destroy', PLAIN, check=False)
    testbed.virsh(HOST, 'undefine', '--remove-all-storage', PLAIN, check=False)
    testbed.define_image(HOST, PLAIN, disk, memory=MEMORY_MIB)


def remove(testbed, name):
    testbed.virsh(HOST, 'destroy', name, check=False)
    testbed.virsh(HOST, 'undefine', '--remove-all-storage', name, check=False)


def clone_to_ssh(cloud, testbed, name):
    began = time.monotonic()
    result = maglica_cloud.clone(cloud.config, IMAGE, name, host=HOST, wait_for='ssh', wait_for_timeout=TIMEOUT, timeout=TIMEOUT)
    total = time.monotonic() - began
    job = result['job']
    job_s = job['finished'] - job['created'] if job.get('finished') and job.get('created') else None
    spared = SPARED_NOTE in ((result.get('result') or {}).get('customization') or {}).get('notes', [])
    remove(testbed, name)
    return total, job_s, result.get('ssh_host_keys') or [], spared


def plain_to_ssh(cloud, testbed, public_keys):
    began = time.monotonic()
    testbed.virsh(HOST, 'start', PLAIN)
    reach.wait(cloud.config, HOST, PLAIN, 'ssh', public_keys, TIMEOUT)
    return time.monotonic() - began


def arguments(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument('--rounds', type=int, default=3)
    parser.add_argument('--warm', action=argparse.BooleanOptionalAction, default=True, help='a warm clone each round')
    parser.add_argument('--plain', action=argparse.BooleanOptionalAction, default=True, help='a plain boot each round')
    parser.add_argument('--spare-images', type=int, default=1, help="the host worker's spare_images (0: no spares)")
    return parse_args(parser, QUICK, 'one round, one cold clone to SSH; no warm clone, no plain boot, no ratio', argv)


def key_blob(key):
    """The key itself of "TYPE BASE64 [COMMENT]", whatever the comment."""
    return key.split()[1] if len(key.split()) > 1 else key.strip()


def key_problems(name, reported, image_keys):
    """What is wrong with the host keys a clone reported (it must have its own, none of the image's)."""
    if not reported:
        return ['clone %s reported no SSH host key' % name]
    image_blobs = {key_blob(key) for key in image_keys}
    kept = [key for key in reported if key_blob(key) in image_blobs]
    return ['clone %s kept the image\'s host key(s): %s' % (name, kept)] if kept else []


def main():
    args = arguments()
    workdir = tempfile.mkdtemp(prefix='maglica-boot-', dir='/var/tmp')
    testbed = Testbed(1)
    testbed.start()
    cloud = None
    try:
        disk = testbed.bootable_image('ifupdown')
        testbed.define_image(HOST, IMAGE, disk, memory=MEMORY_MIB)
        image_disk = '/var/lib/libvirt/images/%s.qcow2' % IMAGE
        # The image's own keys, read with libguestfs (outside the clock): the plain boot must show them, the clones not.
        keys = image_host_keys(testbed, image_disk) if args.plain else []
        cloud = Cloud(testbed, workdir)
        # The host worker as deployed (the testbed turns spares off for the tests): the cold clone of each round
        # leaves a spare of the image, which the warm clone takes.
        cloud.reconfigure(host_worker={'spare_images': args.spare_images})
        cloud.start()
        warm, cold, plain, phases, broken = [], [], [], [], []
        for index in range(args.rounds):
            # A new mtime is a new layout key: this clone's customisation must inspect the image again.
            os.utime(testbed.outside_path(HOST, image_disk))
            name = 'bench-cold-%d' % index
            total, job_s, reported, _spared = clone_to_ssh(cloud, testbed, name)
            broken += key_problems(name, reported, keys)
            cold.append(total)
            log('round %d: cold clone to SSH %.1fs (job %.1fs)' % (index, total, job_s or 0))
            if args.warm:
                name = 'bench-warm-%d' % index
                total, job_s, reported, spared = clone_to_ssh(cloud, testbed, name)
                broken += key_problems(name, reported, keys)
                warm.append(total)
                phases.append({'job_s': round(job_s or 0, 1), 'boot_s': round(total - (job_s or 0), 1), 'spare': spared})
                log('round %d: warm clone to SSH %.1fs (job %.1fs%s)' % (index, total, job_s or 0, ', from a spare' if spared else ''))
            if args.plain:
                fresh_plain(testbed, disk)
                total = plain_to_ssh(cloud, testbed, keys)
                plain.append(total)
                log('round %d: plain boot to SSH %.1fs' % (index, total))
                remove(testbed, PLAIN)
    finally:
        if cloud is not None:
            cloud.stop()
        testbed.stop()
    refused = bench_workers.refusals(workdir)
    if refused:
        broken.append(bench_workers.describe(refused))
    result = {'cold_clone_to_ssh_s': round(statistics.median(cold), 1), 'rounds': args.rounds, 'spare_images': args.spare_images}
    if warm:
        result.update(clone_to_ssh_s=round(statistics.median(warm), 1), warm_phases=phases)
    if plain:
        result['boot_to_ssh_s'] = round(statistics.median(plain), 1)
        result['cold_ratio'] = round(result['cold_clone_to_ssh_s'] / result['boot_to_ssh_s'], 2)
        if warm:
            result['ratio'] = round(result['clone_to_ssh_s'] / result['boot_to_ssh_s'], 2)
    if 'ratio' in result:
        missed = ['%s %s > %s' % (key, result[key], TARGET_RATIO) for key in ('ratio', 'cold_ratio') if result[key] > TARGET_RATIO]
    else:
        missed = ['no ratio: a full run needs --warm and --plain']
    return conclude(result, args.quick, broken, missed)


if __name__ == '__main__':
    sys.exit(main())
