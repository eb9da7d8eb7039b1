# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""One clone of a 2 GiB image holding ~300 MB of data, per mode, against `cp --sparse=always` of the same file.

    make bench-clone         (python benchmarks/clone.py --data-mb 300)
    make bench-clone BENCH_ARGS=--quick   (--data-mb 50 --rounds 1 --no-customize)

The image: the testbed's Debian guest disk grown to a 2 GiB virtual size, with
--data-mb of random data written past its filesystem (qemu-io), so ~300 MB are
allocated. It is defined on one testbed host; everything below runs inside that
host's namespace, with the library's own functions, as its host worker would:
`full_s` a full clone as the host worker makes it (clone.clone_volumes: libvirt's
volume copy and the clone's definition), `copy_s` `cp --sparse=always` of the
image's disk file, both timed until their output is on disk (fsync) after the
source was read once into the page cache, medians of --rounds; `virt_clone_s`
the same clone made by the virt-clone command (what a full clone of disks outside
any pool uses), for comparison; `linked_s` clone.clone_volumes(linked=True) (qcow2
overlay); `customize_s` customize.customize of the linked clone (one libguestfs
launch with inspection; left out by --no-customize, as in the quick run: bench-batch and bench-boot launch it).
Broken, in any run: a full clone whose disk is not of the image's virtual size or has a backing file, a linked
clone whose disk is not an overlay of the image's.
Prints one JSON line last: {"full_s", "copy_s", "full_vs_copy", "linked_s", "customize_s", ..., "quick"}.
Targets (full runs): full_s within 1.2x of copy_s; linked_s under 1 s.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'tests', 'integration'))

from bench_output import conclude, parse_args  # noqa: E402  pylint: disable=wrong-import-position
from maglica_testbed import MODULE_UTILS, PYTHON, TESTBED, Testbed  # noqa: E402  pylint: disable=wrong-import-position

HOST = 'host0'
IMAGE = 'bench.big'
QUICK = {'data_mb': 50, 'rounds': 1, 'customize': False}

# Runs inside the host's namespace (the disk paths exist only there).
INSIDE = r'''
import json, os, statistics, subprocess, sys, time, uuid
from maglica.host import clone  # noqa: E402  pylint: disable=wrong-import-position
from maglica.host import customize  # noqa: E402  pylint: disable=wrong-import-position
from maglica.cluster import virt  # noqa: E402  pylint: disable=wrong-import-position
from maglica.host import guest  # noqa: E402  pylint: disable=wrong-import-position
from maglica.cluster import domains  # noqa: E402  pylint: disable=wrong-import-position
uri, image_name, rounds, with_customize = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] == 'customize'
problems = []


def fsync(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def disk_info(path):
    return json.loads(subprocess.run(['qemu-img', 'info', '-U', '--output=json', path], stdout=subprocess.PIPE,
                                     check=True).stdout)


def check_full(path):
    info = disk_info(path)
    if info.get('virtual-size') != disk_info(source).get('virtual-size') or info.get('backing-filename'):
        problems.append('the full clone %s is not a copy of the image disk %s: %s' % (path, source, info))


def timed(step):
    os.sync()  # writes left by earlier steps (or by defining the image) must not land on this one's clock
    began = time.monotonic()
    step()
    return time.monotonic() - began


conn = virt.connect(uri)
image = conn.lookupByName(image_name)
info = virt.describe(image, with_sizes=True)
source = info['disks'][0]['path']
subprocess.run(['cat', source], stdout=subprocess.DEVNULL, check=True)  # both copies read it from the page cache
result = {'virtual_bytes': info['disks'][0]['capacity'], 'allocated_bytes': info['disks'][0]['allocation']}

copy = os.path.join(os.path.dirname(source), 'bench-copy.qcow2')
full = domains.clone_disk_paths(info, 'bench-full')
copies, fulls, virt_clones = [], [], []
for _round in range(rounds):
    copies.append(timed(lambda: (subprocess.run(['cp', '--sparse=always', source, copy], check=True), fsync(copy))))
    os.unlink(copy)
    fulls.append(timed(lambda: (clone.clone_volumes(conn, image, 'bench-full', clone.pool_volumes(conn, full), linked=False,
                                                    domain_uuid=str(uuid.uuid4())),
                                fsync(full[0][1]))))
    check_full(full[0][1])
    clone.remove_domain(conn, 'bench-full')
    virt_clones.append(timed(lambda: (clone.full_clone(uri, image_name, 'bench-full', full), fsync(full[0][1]))))
    check_full(full[0][1])
    clone.remove_domain(conn, 'bench-full')
result.update(copy_s=statistics.median(copies), full_s=statistics.median(fulls), virt_clone_s=statistics.median(virt_clones))

linked = domains.clone_disk_paths(info, 'bench-linked')
result['linked_s'] = timed(lambda: clone.clone_volumes(conn, image, 'bench-linked', clone.pool_volumes(conn, linked), linked=True,
                                                      domain_uuid=str(uuid.uuid4())))
if disk_info(linked[0][1]).get('backing-filename') != source:
    problems.append('the linked clone %s is not an overlay of %s: %s' % (linked[0][1], source, disk_info(linked[0][1])))

disks = [(d['path'], d['format']) for d in virt.describe(conn.lookupByName('bench-linked'), with_sizes=False)['disks']
         if d['device'] == 'disk' and d['path']]
settings = guest.GuestSettings('bench-linked', None, None, None)
changes = {}
if with_customize:
    result['customize_s'] = timed(lambda: changes.update(customize.customize(disks, settings)))
    result['customized_files'] = sorted(changes.get('changed_files') or [])
    if not result['customized_files']:
        problems.append('customising the linked clone changed no file')
result['problems'] = problems

clone.remove_domain(conn, 'bench-linked')
conn.close()
print(json.dumps(result))
'''


def make_image(testbed, workdir, data_mb):
    """The Debian test disk, grown to 2 GiB virtual, with `data_mb` MB of random data allocated past its filesystem."""
    image = os.path.join(workdir, 'big.qcow2')
    testbed.script('build_image.sh', 'debian', image)
    subprocess.run(['qemu-img', 'resize', '-q', image, '2G'], check=True)
    data = os.path.join(workdir, 'random.bin')
    with open(data, 'wb') as handle:
        for _mb in range(data_mb):
            handle.write(os.urandom(1048576))
    subprocess.run(['qemu-io', '-f', 'qcow2', '-c', 'write -q -s %s 1G %dM' % (data, data_mb), image], check=True)
    os.unlink(data)
    return image


def arguments(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument('--data-mb', type=int, default=300)
    parser.add_argument('--rounds', type=int, default=3, help='copies and full clones to take the median of')
    parser.add_argument('--customize', action=argparse.BooleanOptionalAction, default=True,
                        help='time one libguestfs customisation of the linked clone (25-30 s here)')
    return parse_args(parser, QUICK, '50 MB of data, one round, no customisation', argv)


def main():
    args = arguments()
    workdir = tempfile.mkdtemp(prefix='maglica-clone-', dir='/var/tmp')
    testbed = Testbed(1)
    testbed.start()
    try:
        testbed.define_image(HOST, IMAGE, make_image(testbed, workdir, args.data_mb))
        out = subprocess.run(['bash', os.path.join(TESTBED, 'testbed.sh'), 'exec', HOST, 'env', 'PYTHONPATH=%s' % MODULE_UTILS,
                              PYTHON, '-c', INSIDE, testbed.uri(HOST), IMAGE, str(args.rounds),
                              'customize' if args.customize else 'no'],
                             env=testbed.env, stdout=subprocess.PIPE, check=True, universal_newlines=True).stdout
    finally:
        testbed.stop()
        for name in os.listdir(workdir):
            os.unlink(os.path.join(workdir, name))
        os.rmdir(workdir)
    measured = json.loads(out.strip().splitlines()[-1])
    result = {'full_s': round(measured['full_s'], 2), 'copy_s': round(measured['copy_s'], 2),
              'full_vs_copy': round(measured['full_s'] / measured['copy_s'], 2), 'linked_s': round(measured['linked_s'], 3),
              'virt_clone_s': round(measured['virt_clone_s'], 2),
              'virtual_gib': round(measured['virtual_bytes'] / 2 ** 30, 2), 'allocated_mb': round(measured['allocated_bytes'] / 1e6),
              'rounds': args.rounds}
    if args.customize:
        result.update(customize_s=round(measured['customize_s'], 1), customized_files=measured['customized_files'])
    missed = []
    if result['full_vs_copy'] > 1.2:
        missed.append('full_vs_copy %s > 1.2' % result['full_vs_copy'])
    if result['linked_s'] >= 1:
        missed.append('linked_s %s >= 1' % result['linked_s'])
    return conclude(result, args.quick, measured['problems'], missed)


if __name__ == '__main__':
    sys.exit(main())
