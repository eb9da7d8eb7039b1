# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Live migration of a booted clone by Maglica against `virsh migrate --live --p2p --copy-storage-all` of its twin,
in one run: total time and downtime.

    make bench-migrate                       (python benchmarks/migrate.py --rounds 2)
    make bench-migrate BENCH_ARGS=--quick    (--rounds 1: one migration each, one way)

Two full clones of the bootable Debian 12 image (ifupdown, 1 GiB of memory), `maglica` and `twin`, booted on host2
and reached over SSH. Each round migrates both from host2 to host1 and back (host1 and host2 are migration peers in
the testbed), interleaved, the order swapped every round:
  maglica  cloud.vm_migrate(name, host): the job in the source's host worker (peer to peer, QEMU migration TLS,
           disks copied, the destination persistent, the source undefined and its disks deleted), timed from the call;
  virsh    `virsh migrate --live --p2p --tls --copy-storage-all --persistent --undefinesource` of the twin to the same
           destination (the same work: TLS, the same disk copied whole, persistent, source undefined), timed around
           the command; its source disk is deleted after the clock.
Full clones, so that both copy the same disk (a linked clone's overlay alone would favour Maglica).
Downtime: the guest is pinged every 10 ms from the testbed's network (the guests sit on its segment) during each
migration; the longest gap between two answered pings is its downtime as the network sees it (`gap_ms`). The
guest's own clock cannot show it here: under TCG the guest's clock stops while QEMU is paused. QEMU's own figure
(libvirt's completed-job `downtime`) is reported beside it.
Broken, in any run: a guest whose boot_id changed, or that does not answer SSH after a migration.
Then, on the same testbed, the drain phase (benchmarks/drain_phase.py): host2 holds 2 x N running linked clones of
a small image (no kernel: each sits in its firmware, a QEMU to migrate live and cheap); N are migrated one after
another (cloud.vm_migrate_to, to the destinations the drain's own plan gives), then the drain of host2 moves the
other N, `max_parallel` N. `drain.ratio` = drain / sequential.
Prints one JSON line last. Targets (full runs): total ratio <= 1.1, downtime (gap) ratio <= 1.1, drain ratio <= 0.6
(N = 4).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import statistics
import struct
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'tests', 'integration'))

from bench_output import conclude, parse_args  # noqa: E402  pylint: disable=wrong-import-position
import bench_workers  # noqa: E402  pylint: disable=wrong-import-position
from guests import Booted  # noqa: E402  pylint: disable=wrong-import-position
from maglica_testbed import Cloud, Testbed  # noqa: E402  pylint: disable=wrong-import-position
from maglica.controller import cloud as maglica_cloud  # noqa: E402  pylint: disable=wrong-import-position,wrong-import-order
from maglica.controller import vm as maglica_vm  # noqa: E402  pylint: disable=wrong-import-position,wrong-import-order
from drain_phase import drain_phase  # noqa: E402  pylint: disable=wrong-import-position

IMAGE = 'bench-migrate.original'
NAMES = {'maglica': 'bench-mig-maglica', 'virsh': 'bench-mig-twin'}
HOSTS = ('host2', 'host1')
MEMORY_MIB = 1024
TIMEOUT = 1200
PING_INTERVAL = 0.01
TARGET = 1.1
QUICK = {'rounds': 1, 'both_ways': False, 'drain_vms': 2}
DRAIN_IMAGE = 'drain-bench.original'
DRAIN_TARGET = 0.6


def log(text):
    print('bench-migrate: %s' % text, file=sys.stderr, flush=True)


class Pinger:
    """ICMP echo every 10 ms while a migration runs (a raw socket: this runs as root; no ping binary needed); the
    longest gap between two answered echoes, in ms, and the echoes lost."""

    def __init__(self, address):
        self.address = address
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
        self.sock.settimeout(PING_INTERVAL)
        self.ident = os.getpid() & 0xffff
        self.sent = 0
        self.answered = []  # monotonic times of the answers
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    @staticmethod
    def checksum(data):
        if len(data) % 2:
            data += b'\0'
        total = sum(struct.unpack('!%dH' % (len(data) // 2), data))
        total = (total >> 16) + (total & 0xffff)
        total += total >> 16
        return ~total & 0xffff

    def run(self):
        seen = set()
        while not self.stopping.is_set():
            seq = self.sent & 0xffff
            header = struct.pack('!BBHHH', 8, 0, 0, self.ident, seq)
            packet = struct.pack('!BBHHH', 8, 0, self.checksum(header + b'maglica'), self.ident, seq) + b'maglica'
            self.sock.sendto(packet, (self.address, 0))
            self.sent += 1
            deadline = time.monotonic() + PING_INTERVAL
            while time.monotonic() < deadline:
                try:
                    data, (source, _port) = self.sock.recvfrom(2048)
                except socket.timeout:
                    break
                offset = (data[0] & 0x0f) * 4  # past the IP header
                kind, _code, _sum, ident, answer = struct.unpack('!BBHHH', data[offset:offset + 8])
                if source == self.address and kind == 0 and ident == self.ident and answer not in seen:
                    seen.add(answer)
                    self.answered.append(time.monotonic())

    def stop(self):
        self.stopping.set()
        self.thread.join(timeout=30)
        self.sock.close()
        gaps = [b - a for a, b in zip(self.answered, self.answered[1:])]
        return {'gap_ms': round(max(gaps) * 1000, 1) if gaps else None, 'lost': self.sent - len(self.answered)}


def migrate_maglica(cloud, testbed, name, source, destination):
    result = maglica_cloud.vm_migrate(cloud.config, name, destination, live=True, timeout=TIMEOUT)
    log('maglica job: %s s in the job, %s s in libvirt\'s migration call' % (result['result'].get('seconds'), result['result'].get('migrate_s')))
    return result['result'].get('downtime_ms')


def migrate_virsh(cloud, testbed, name, source, destination):
    # The source libvirtd reaches the destination's with the source host worker's certificate, as Maglica's does.
    dconnuri = 'qemu+tls://%s/system?pkipath=%s' % (testbed.hosts[destination], testbed.host_pki_path(source))
    testbed.virsh(source, 'migrate', '--live', '--p2p', '--tls', '--copy-storage-all', '--persistent', '--undefinesource',
                  name, dconnuri)
    info = testbed.virsh(destination, 'domjobinfo', '--completed', name, check=False)
    found = re.search(r'^Total downtime:\s+(\d+) ms', info, re.M)
    return int(found.group(1)) if found else None


def arguments(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument('--rounds', type=int, default=2)
    parser.add_argument('--both-ways', action=argparse.BooleanOptionalAction, default=True,
                        help='each round also migrates both back (host1 to host2), measured too')
    parser.add_argument('--drain-vms', type=int, default=4, help='VMs of the drain phase each way (0: no drain phase)')
    return parse_args(parser, QUICK, 'one round, one way; a drain of two VMs', argv)


def drain(cloud, testbed, count):
    """The drain phase on this testbed (see the docstring); the booted guests are gone from host2 by then."""
    for host in testbed.hosts:
        testbed.define_image(host, DRAIN_IMAGE, testbed.image('debian'))
    names = ['seq-%d' % n for n in range(count)] + ['drain-%d' % n for n in range(count)]
    vms = [{'image': DRAIN_IMAGE, 'hostname': name, 'host': HOSTS[0], 'clone_mode': 'linked', 'customize': False} for name in names]
    maglica_cloud.clone_batch(cloud.config, vms, timeout=600)
    found = drain_phase(cloud.config, HOSTS[0], names[:count], names[count:], count)
    for name in names:
        maglica_vm.ensure(cloud.config, name, state='absent', force=True)
    return found


def main():
    args = arguments()
    workdir = tempfile.mkdtemp(prefix='maglica-migrate-', dir='/var/tmp')
    testbed = Testbed(3)
    testbed.start()
    cloud = None
    figures = {'maglica': [], 'virsh': []}
    broken = []
    drained = None
    try:
        disk = testbed.bootable_image('ifupdown')
        for host in HOSTS:
            testbed.define_image(host, IMAGE, disk, memory=MEMORY_MIB)
        cloud = Cloud(testbed, workdir)
        cloud.start()
        booted = Booted(testbed, cloud, workdir)  # its key goes into both clones; SSH with strict host key checking
        guests = {}

        def make(name):
            return maglica_cloud.clone(cloud.config, IMAGE, name, host=HOSTS[0], clone_mode='full',
                                       ssh_authorized_keys=[booted.public_key], wait_for='ssh', wait_for_timeout=TIMEOUT,
                                       timeout=TIMEOUT)
        with ThreadPoolExecutor(max_workers=2) as pool:  # both boot at once
            booted.results.update(zip(NAMES.values(), pool.map(make, NAMES.values())))
        for how, name in NAMES.items():
            boot_id = booted.ssh(name, 'cat /proc/sys/kernel/random/boot_id').stdout.strip()
            guests[how] = {'name': name, 'ip': booted.results[name]['ip'], 'boot_id': boot_id}
        log('both guests answer SSH: %s' % {how: g['ip'] for how, g in guests.items()})
        legs = [(HOSTS[0], HOSTS[1])] + ([(HOSTS[1], HOSTS[0])] if args.both_ways else [])
        for index in range(args.rounds):
            order = ['maglica', 'virsh'] if index % 2 == 0 else ['virsh', 'maglica']
            for source, destination in legs:
                for how in order:
                    guest = guests[how]
                    pinger = Pinger(guest['ip'])
                    began = time.monotonic()
                    qemu_downtime = (migrate_maglica if how == 'maglica' else migrate_virsh)(cloud, testbed, guest['name'], source, destination)
                    total = time.monotonic() - began
                    seen = pinger.stop()
                    if how == 'virsh':  # outside the clock: Maglica deletes the source's disk within its own
                        testbed.virsh(source, 'vol-delete', '--pool', 'default', '%s.qcow2' % guest['name'], check=False)
                    after = booted.ssh(guest['name'], 'cat /proc/sys/kernel/random/boot_id', check=False)
                    if after.returncode != 0 or after.stdout.strip() != guest['boot_id']:
                        broken.append('%s after its migration to %s: %s' % (guest['name'], destination, after.stdout.strip() or after.stderr.strip()))
                    figures[how].append({'total_s': round(total, 2), 'gap_ms': seen['gap_ms'], 'lost': seen['lost'],
                                         'qemu_downtime_ms': qemu_downtime, 'leg': '%s>%s' % (source, destination)})
                    log('round %d %s %s>%s: %.1f s, gap %s ms, lost %s, QEMU downtime %s ms'
                        % (index, how, source, destination, total, seen['gap_ms'], seen['lost'], qemu_downtime))
                    if broken:
                        break
        if args.drain_vms and not broken:
            for guest in guests.values():  # a drain moves every VM of its host: the booted pair leaves first
                maglica_vm.ensure(cloud.config, guest['name'], state='absent', force=True)
            drained = drain(cloud, testbed, args.drain_vms)
            broken += drained.pop('broken', [])
            log('drain phase: %s' % json.dumps(drained))
    finally:
        if cloud is not None:
            cloud.stop()
        testbed.stop()
    refused = bench_workers.refusals(workdir)
    if refused:
        broken.append(bench_workers.describe(refused))
    result = {'rounds': args.rounds, 'migrations': figures}
    missed = []
    if figures['maglica'] and figures['virsh'] and not broken:
        for how in figures:
            result['%s_total_s' % how] = round(statistics.median(f['total_s'] for f in figures[how]), 2)
            gaps = [f['gap_ms'] for f in figures[how] if f['gap_ms'] is not None]
            result['%s_gap_ms' % how] = round(statistics.median(gaps), 1) if gaps else None
        result['total_ratio'] = round(result['maglica_total_s'] / result['virsh_total_s'], 3)
        if result['maglica_gap_ms'] and result['virsh_gap_ms']:
            result['downtime_ratio'] = round(result['maglica_gap_ms'] / result['virsh_gap_ms'], 3)
        missed += ['total ratio %s > %s' % (result['total_ratio'], TARGET)] if result['total_ratio'] > TARGET else []
        if result.get('downtime_ratio') is None:
            missed.append('no downtime ratio (no ping gap measured)')
        elif result['downtime_ratio'] > TARGET:
            missed.append('downtime ratio %s > %s' % (result['downtime_ratio'], TARGET))
    if drained:
        result['drain'] = drained
        if 'ratio' in drained and drained['ratio'] > DRAIN_TARGET:
            missed.append('drain ratio %s > %s' % (drained['ratio'], DRAIN_TARGET))
        elif 'ratio' not in drained:
            missed.append('no drain ratio')
    log(json.dumps(result))
    return conclude(result, args.quick, broken, missed)


if __name__ == '__main__':
    sys.exit(main())
