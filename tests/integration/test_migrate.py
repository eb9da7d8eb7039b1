# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Issue 19, migration, on ONE booted guest: a linked clone of Debian 12 (ifupdown) on host2, reached over SSH with
strict host key checking, serves every assertion, in this order (the tests of this module run in order):

1. a live migration to host0 made to fail for real (host0's pool is a 64 MiB tmpfs: QEMU's disk copy meets ENOSPC):
   the VM runs on host2 still, untouched, and host0 has no domain and no volume of it;
2. check mode: placement chooses another host, and nothing moves;
3. the live migration to host1 through the module: same boot, uptime continued, the process and the file still
   there, SSH at the same address with the same host key; host2 lists it no more; only the overlay was copied;
4. a second run changes nothing; a live migration of a VM with a snapshot is refused, naming the snapshot;
5. stopped, with an internal snapshot, it is migrated cold back to host2: defined there with its disk and snapshot.

The testbed's peers (testbed.sh): host2 migrates to host0 and host1, host1 to host2, as host_worker_migration_peers
would allow; the hosts share one guest segment, so the guest keeps its address.
"""

from __future__ import annotations

import os
import subprocess
import time

import pytest

from maglica_testbed import run_playbook, wait_until  # pylint: disable=wrong-import-order
from maglica.controller import cloud as maglica_cloud  # pylint: disable=wrong-import-order
from maglica.errors import ConflictError  # pylint: disable=wrong-import-order

PLAYBOOKS = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'playbooks')
IMAGE = 'deb12mig.original'
NAME = 'mig-a.migrate.test'
BOOT_TIMEOUT = 900
GUEST_MEMORY_MIB = 1024  # Debian's stock initrd panics in 256 MiB
SOURCE, DEST, FULL = 'host2', 'host1', 'host0'


class Guest:
    """The booted clone, and what was recorded in it before any migration."""

    def __init__(self, testbed, cloud, work):
        self.testbed = testbed
        self.cloud = cloud
        self.work = work
        self.key = os.path.join(work, 'id_ed25519')
        subprocess.run(['ssh-keygen', '-q', '-t', 'ed25519', '-N', '', '-C', 'maglica-migrate', '-f', self.key], check=True)
        with open(self.key + '.pub') as handle:
            self.public_key = handle.read().strip()
        self.known_hosts = os.path.join(work, 'known_hosts')
        self.clone = {}
        self.before = {}

    def ssh(self, command, check=True):
        """Run `command` as root over SSH at the clone's first address, its host key checked strictly."""
        proc = subprocess.run(['ssh', '-F', '/dev/null', '-i', self.key, '-o', 'IdentitiesOnly=yes', '-o', 'BatchMode=yes',
                               '-o', 'StrictHostKeyChecking=yes', '-o', 'UserKnownHostsFile=%s' % self.known_hosts,
                               '-o', 'GlobalKnownHostsFile=/dev/null', '-o', 'ConnectTimeout=20',
                               'root@%s' % self.clone['ip'], command],
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              universal_newlines=True, timeout=120, check=False)
        if check:
            assert proc.returncode == 0, '%r exited %d: %s' % (command, proc.returncode, proc.stderr)
        return proc

    def facts(self):
        out = self.ssh('cat /proc/sys/kernel/random/boot_id; cut -d" " -f1 /proc/uptime; cat /root/marker; '
                       'kill -0 %s && echo alive' % self.before.get('pid', '$$')).stdout.split()
        return {'boot_id': out[0], 'uptime': float(out[1]), 'marker': out[2], 'process': out[3] if len(out) > 3 else None}

    def state(self, host):
        """(domains, files) of a host: what a failed migration must leave as it was."""
        return self.testbed.domains(host), self.testbed.host_files(host)


@pytest.fixture(scope='module')
def guest(testbed, cloud, tmp_path_factory):
    g = Guest(testbed, cloud, str(tmp_path_factory.mktemp('migrate')))
    try:
        disk = testbed.bootable_image('ifupdown')
        for host in (SOURCE, DEST):
            testbed.define_image(host, IMAGE, disk, memory=GUEST_MEMORY_MIB)
        g.clone = maglica_cloud.clone(cloud.config, IMAGE, NAME, host=SOURCE, clone_mode='linked',
                                      ssh_authorized_keys=[g.public_key], wait_for='ssh', wait_for_timeout=BOOT_TIMEOUT)
        with open(g.known_hosts, 'w') as handle:
            handle.write(''.join('%s\n' % line for line in g.clone['known_hosts']))
        g.ssh('echo written-before > /root/marker && sync')
        g.before['pid'] = g.ssh('nohup setsid sleep 100000 >/dev/null 2>&1 </dev/null & echo $!').stdout.strip()
        g.before.update(g.facts())
        g.before['host_keys'] = g.ssh('cat /etc/ssh/ssh_host_ed25519_key.pub').stdout.split()[1]
        yield g
    finally:
        for host in (SOURCE, DEST, FULL):
            testbed.virsh(host, 'destroy', NAME, check=False)
            testbed.virsh(host, 'undefine', '--remove-all-storage', '--snapshots-metadata', NAME, check=False)
        for host in (SOURCE, DEST):
            testbed.virsh(host, 'undefine', '--remove-all-storage', IMAGE, check=False)


def test_a_failed_live_migration_leaves_the_vm_running_where_it_was_and_nothing_on_the_destination(guest, testbed, cloud):
    """host0 lacks the image, so the whole chain (about 1 GB) would be copied; its pool is a 64 MiB tmpfs (mounted in
    host0's namespace only): QEMU's disk copy fails with ENOSPC, for real."""
    images = '/var/lib/libvirt/images'
    testbed.script('testbed.sh', 'exec', FULL, 'mount', '-t', 'tmpfs', '-o', 'size=64m', 'maglica-full', images)
    try:
        testbed.virsh(FULL, 'pool-refresh', 'default')
        before = guest.state(FULL)
        with pytest.raises(Exception) as failure:
            maglica_cloud.vm_migrate(cloud.config, NAME, FULL, live=True, timeout=600)
        assert 'migration of %s to %s failed' % (NAME, FULL) in str(failure.value), failure.value
        assert guest.state(FULL) == before, 'nothing of %s may stay on %s' % (NAME, FULL)
    finally:
        testbed.script('testbed.sh', 'exec', FULL, 'umount', images)
        testbed.virsh(FULL, 'pool-refresh', 'default')
    assert NAME in testbed.virsh(SOURCE, 'list', '--name').split(), 'it still runs on its source'
    facts = guest.facts()
    assert facts['boot_id'] == guest.before['boot_id'] and facts['process'] == 'alive', facts


def test_check_mode_chooses_another_host_and_moves_nothing(guest, testbed, cloud):
    result = maglica_cloud.vm_migrate(cloud.config, NAME, check_mode=True)
    assert result['changed'] and result['source'] == SOURCE and result['destination'] in (DEST, FULL), result
    assert result['live'] is True and result['job_id'] is None, result
    assert [c['host'] for c in result['candidates']] and SOURCE not in [c['host'] for c in result['candidates']], result
    assert NAME in testbed.virsh(SOURCE, 'list', '--name').split()


def test_a_live_migration_keeps_the_guest_running_at_its_address(guest, testbed, cloud):
    started = time.monotonic()
    run = run_playbook(os.path.join(PLAYBOOKS, 'vm_migrate.yml'), {'maglica_config': cloud.path, 'vm': NAME, 'host': DEST})
    elapsed = time.monotonic() - started
    assert run.rc == 0, run
    result = run.last
    assert result['changed'] and result['source'] == SOURCE and result['destination'] == DEST and result['live'], result
    assert [d['copy'] for d in result['result']['disks']] == ['overlay'], 'the image is on %s: only the overlay goes' % DEST
    # The same guest, not a reboot: the same boot, its clock went on, its process and its file are there, and it
    # answers SSH at the same address with the same host key (strict known_hosts written from the clone's result).
    facts = guest.facts()
    assert facts['boot_id'] == guest.before['boot_id'], facts
    assert facts['uptime'] > guest.before['uptime'], facts
    assert facts['process'] == 'alive' and facts['marker'] == 'written-before', facts
    assert guest.ssh('cat /etc/ssh/ssh_host_ed25519_key.pub').stdout.split()[1] == guest.before['host_keys']
    assert NAME in testbed.virsh(DEST, 'list', '--name').split()
    assert NAME not in testbed.virsh(SOURCE, 'list', '--all', '--name').split(), 'the source is undefined'
    assert not [f for f in testbed.host_files(SOURCE) if f.startswith(NAME)], 'its disks left the source'
    assert testbed.virsh(DEST, 'dominfo', NAME).count('Persistent:     yes') == 1
    print('live migration through the module: %.1f s, job %.1f s, downtime %s ms'
          % (elapsed, result['result']['seconds'], result['result'].get('downtime_ms')))


def test_migrating_again_to_its_host_changes_nothing_and_snapshots_are_refused_live(guest, testbed, cloud):
    run = run_playbook(os.path.join(PLAYBOOKS, 'vm_migrate.yml'), {'maglica_config': cloud.path, 'vm': NAME, 'host': DEST})
    assert run.rc == 0 and run.last['changed'] is False and run.last['job_id'] is None, run
    testbed.virsh(DEST, 'snapshot-create-as', NAME, 'before-upgrade')
    try:
        with pytest.raises(Exception) as refused:
            maglica_cloud.vm_migrate(cloud.config, NAME, SOURCE, live=True, timeout=300)
        assert 'before-upgrade' in str(refused.value) and 'cold' in str(refused.value), refused.value
        assert NAME in testbed.virsh(DEST, 'list', '--name').split()
        assert NAME not in testbed.domains(SOURCE)
    finally:
        testbed.virsh(DEST, 'snapshot-delete', NAME, 'before-upgrade')


def test_live_true_for_a_stopped_vm_is_refused_and_a_cold_migration_carries_its_snapshot(guest, testbed, cloud):
    testbed.virsh(DEST, 'destroy', NAME)
    with pytest.raises(ConflictError, match='%s is not running' % NAME):
        maglica_cloud.vm_migrate(cloud.config, NAME, SOURCE, live=True)
    testbed.virsh(DEST, 'snapshot-create-as', NAME, 'cold-one', '--description', 'taken stopped')
    result = maglica_cloud.vm_migrate(cloud.config, NAME, SOURCE, timeout=600)
    assert result['changed'] and not result['live'] and result['destination'] == SOURCE, result
    assert result['result']['snapshots'] == ['cold-one'], result
    assert [d['copy'] for d in result['result']['disks']] == ['overlay'], result
    assert NAME in testbed.domains(SOURCE) and NAME not in testbed.domains(DEST)
    assert testbed.virsh(SOURCE, 'snapshot-list', NAME, '--name').split() == ['cold-one']
    disk = [f for f in testbed.host_files(SOURCE) if f.startswith(NAME)]
    assert disk, testbed.host_files(SOURCE)
    inside = testbed.script('testbed.sh', 'exec', SOURCE, 'qemu-img', 'snapshot', '-l', '-U', '/var/lib/libvirt/images/%s' % disk[0])
    assert 'cold-one' in inside, inside
    assert not [f for f in testbed.host_files(DEST) if f.startswith(NAME)], 'its disks left %s' % DEST
    # It boots where it went, the same machine.
    testbed.virsh(SOURCE, 'start', NAME)
    wait_until(lambda: guest.ssh('true', check=False).returncode == 0, BOOT_TIMEOUT, 'the migrated VM to answer SSH', interval=2)
    assert guest.ssh('cat /root/marker').stdout.strip() == 'written-before'
