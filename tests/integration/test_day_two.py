# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Day two (issue 19), migration and snapshots, on ONE booted guest: a linked clone of Debian 12 (ifupdown) made on
host2, with its QEMU guest agent, reached over SSH with strict host key checking. One boot under software emulation
costs minutes, so this module's tests share it, in file order:

Migration (the testbed's peers, testbed.sh: host2 migrates to host0 and host1, host1 to host2, as
host_worker_migration_peers would allow; the hosts share one guest segment, so the guest keeps its address):
1. a live migration to host0 made to fail for real (host0's pool is a 64 MiB tmpfs: QEMU's disk copy meets ENOSPC):
   the VM runs on host2 still, untouched, and host0 has no domain and no volume of it;
2. check mode: placement chooses another host, and nothing moves;
3. the live migration to host1 through the module: same boot, uptime continued, the process and the file still
   there, SSH at the same address with the same host key; host2 lists it no more; only the overlay was copied;
4. a second run changes nothing; a live migration of a VM with a snapshot is refused, naming the snapshot;
5. stopped, with an internal snapshot, it is migrated cold back to host2: defined there with its disk and snapshot,
   and it boots there.

Snapshots, on the same VM back on host2: quiesced snapshot and revert, crash-consistent without an agent, memory
snapshot and revert, listing, the module's idempotence and check mode, keep, delete, the inventory's agent
connection with sshd stopped, the image's disk left untouched by all of it, and last the VM's removal with its
snapshots.
"""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest

from guests import Booted  # pylint: disable=wrong-import-order
from maglica_testbed import PYTHON, ROOT, ansible_env, file_sha256, run_playbook, wait_until  # pylint: disable=wrong-import-order
from maglica.controller import cloud as maglica_cloud  # pylint: disable=wrong-import-order
from maglica.errors import ConflictError  # pylint: disable=wrong-import-order

PLAYBOOKS = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'playbooks')
IMAGE = 'deb12day2.original'
VM = NAME = 'day2-a.day2.test'
BOOT_TIMEOUT = 900
GUEST_MEMORY_MIB = 1024  # Debian's stock initrd panics in 256 MiB
SOURCE, DEST, FULL = 'host2', 'host1', 'host0'
HOST = SOURCE  # where the snapshots are taken: the cold migration brings the VM back there


def qemu_img_snapshots(path):
    out = subprocess.run(['qemu-img', 'info', '-U', '--output=json', path], stdout=subprocess.PIPE, check=True).stdout
    return [s['name'] for s in json.loads(out).get('snapshots', [])]


class Guest(Booted):
    """The booted clone, what was recorded in it before any migration, and the disks on its host."""

    def __init__(self, testbed, cloud, work):
        super().__init__(testbed, cloud, work)
        self.before = {}
        self.image_before = None

    def facts(self):
        out = self.ssh(VM, 'cat /proc/sys/kernel/random/boot_id; cut -d" " -f1 /proc/uptime; cat /root/marker; '
                           'kill -0 %s && echo alive' % self.before.get('pid', '$$')).stdout.split()
        return {'boot_id': out[0], 'uptime': float(out[1]), 'marker': out[2], 'process': out[3] if len(out) > 3 else None}

    def state(self, host):
        """(domains, files) of a host: what a failed migration must leave as it was."""
        return self.testbed.domains(host), self.testbed.host_files(host)

    def answers_ssh(self):
        return self.ssh(VM, 'true', check=False).returncode == 0

    def wait_ssh(self, timeout=300):
        return wait_until(self.answers_ssh, timeout, '%s to answer SSH' % VM, interval=2)

    def wait_agent(self):
        # The agent answers once the guest runs systemd's multi-user target; SSH answering says it has.
        wait_until(lambda: self.testbed.virsh(HOST, 'qemu-agent-command', VM, '{"execute":"guest-ping"}', check=False).startswith('{'),
                   120, 'the guest agent of %s' % VM)

    def image_disk(self):
        return self.testbed.outside_path(HOST, '/var/lib/libvirt/images/%s.qcow2' % IMAGE)

    def overlay(self):
        return self.testbed.outside_path(HOST, '/var/lib/libvirt/images/%s.qcow2' % VM)

    def snapshot(self, name, **kwargs):
        return maglica_cloud.vm_snapshot(self.cloud.config, VM, name, **kwargs)


@pytest.fixture(scope='module')
def guest(testbed, cloud, tmp_path_factory):
    g = Guest(testbed, cloud, str(tmp_path_factory.mktemp('day2')))
    try:
        disk = testbed.bootable_image('ifupdown')
        for host in (SOURCE, DEST):
            testbed.define_image(host, IMAGE, disk, memory=GUEST_MEMORY_MIB)
        g.image_before = (file_sha256(g.image_disk()), qemu_img_snapshots(g.image_disk()))
        g.results[VM] = maglica_cloud.clone(cloud.config, IMAGE, VM, host=SOURCE, clone_mode='linked',
                                            ssh_authorized_keys=[g.public_key], wait_for='ssh', wait_for_timeout=BOOT_TIMEOUT)
        g.ssh(VM, 'echo written-before > /root/marker && sync')
        g.before['pid'] = g.ssh(VM, 'nohup setsid sleep 100000 >/dev/null 2>&1 </dev/null & echo $!').stdout.strip()
        g.before.update(g.facts())
        g.before['host_keys'] = g.ssh(VM, 'cat /etc/ssh/ssh_host_ed25519_key.pub').stdout.split()[1]
        yield g
    finally:
        for host in (SOURCE, DEST, FULL):
            testbed.virsh(host, 'destroy', VM, check=False)
            testbed.virsh(host, 'undefine', '--remove-all-storage', '--snapshots-metadata', VM, check=False)
        for host in (SOURCE, DEST):
            testbed.virsh(host, 'undefine', '--remove-all-storage', IMAGE, check=False)


# -- migration ---------------------------------------------------------------------------------------------------

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
    assert guest.ssh(NAME, 'cat /etc/ssh/ssh_host_ed25519_key.pub').stdout.split()[1] == guest.before['host_keys']
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
    guest.wait_ssh(BOOT_TIMEOUT)
    assert guest.ssh(NAME, 'cat /root/marker').stdout.strip() == 'written-before'
    # The snapshot tests below count this VM's snapshots from none.
    testbed.virsh(SOURCE, 'snapshot-delete', NAME, 'cold-one')
    guest.wait_agent()


# -- snapshots, on the same VM, back on host2 and booted again ----------------------------------------------------

def test_snapshot_without_memory_is_quiesced_and_a_revert_brings_the_disk_back(guest):
    guest.ssh(VM, 'echo A > /root/A && sync')
    made = guest.snapshot('disk1', description='before B')
    assert made['changed'] is True and made['consistency'] == 'quiesced', made
    guest.ssh(VM, 'echo B > /root/B && sync')
    reverted = guest.snapshot('disk1', state='reverted')
    assert reverted['changed'] is True and reverted['thawed'] is True, reverted
    guest.wait_ssh()
    assert guest.ssh(VM, 'cat /root/A').stdout == 'A\n'
    assert guest.ssh(VM, 'test -e /root/B', check=False).returncode == 1
    # Thawed: the guest writes again.
    guest.ssh(VM, 'echo after > /root/after && sync')


def test_without_an_agent_the_snapshot_is_crash_consistent(guest):
    guest.ssh(VM, 'systemctl stop qemu-guest-agent')
    try:
        made = guest.snapshot('crash1')
        assert made['consistency'] == 'crash' and any('crash-consistent' in w for w in made['warnings']), made
    finally:
        guest.ssh(VM, 'systemctl start qemu-guest-agent')


def test_memory_snapshot_revert_resumes_a_process_started_before(guest):
    pid = guest.ssh(VM, 'setsid sleep 100000 >/dev/null 2>&1 < /dev/null & echo $!').stdout.strip()
    assert pid.isdigit()
    made = guest.snapshot('mem1', memory=True)
    assert made['consistency'] == 'memory' and made['memory'] is True, made
    guest.ssh(VM, 'kill %s' % pid)
    assert guest.ssh(VM, 'kill -0 %s' % pid, check=False).returncode != 0
    guest.snapshot('mem1', state='reverted')
    guest.wait_ssh()
    assert guest.ssh(VM, 'cat /proc/%s/cmdline' % pid).stdout.split('\0')[:2] == ['sleep', '100000']


def test_listing_shows_time_memory_and_size(guest):
    listing = maglica_cloud.vm_snapshots(guest.cloud.config, VM)
    by_name = {s['name']: s for s in listing['snapshots']}
    assert list(by_name) == ['disk1', 'crash1', 'mem1'], listing
    assert all(s['memory'] and s['size'] > 1048576 and s['creation_time'] > 1.7e9 for s in by_name.values()), listing
    assert by_name['disk1']['description'] == 'before B' and by_name['mem1']['current'] is True
    assert listing['disk_allocation'] > 0
    cli = subprocess.run([PYTHON, '-m', 'maglica.controller.cli', '--config', guest.cloud.path, '--json', 'vm', 'snapshot',
                          'list', '--name', VM], stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True,
                         env=guest.cloud.env, check=False)
    assert cli.returncode == 0, cli.stderr
    assert [s['name'] for s in json.loads(cli.stdout)['snapshots']] == ['disk1', 'crash1', 'mem1']
    # maglica_vm_info snapshots: true lists the same, per VM; images get none.
    vms = {v['name']: v for v in maglica_cloud.vm_list_with_snapshots(guest.cloud.config, [VM, IMAGE], [HOST])['vms']}
    assert [s['name'] for s in vms[VM]['snapshots']] == ['disk1', 'crash1', 'mem1'] and 'snapshots' not in vms[IMAGE]
    # The snapshots live in the clone's own overlay, where qemu-img sees them too.
    assert qemu_img_snapshots(guest.overlay()) == ['disk1', 'crash1', 'mem1']


def test_module_check_mode_then_idempotence(guest):
    extra = {'maglica_config': guest.cloud.path, 'vm': VM, 'snapshot': 'play1'}
    check = run_playbook(os.path.join(PLAYBOOKS, 'vm_snapshot.yml'), extra, check=True, diff=True)
    assert check.rc == 0 and check.last['changed'] is True and 'job' not in check.last, check
    assert '\n+play1\n' in check.output, check.output
    assert 'play1' not in qemu_img_snapshots(guest.overlay())
    first = run_playbook(os.path.join(PLAYBOOKS, 'vm_snapshot.yml'), extra)
    assert first.rc == 0 and first.last['changed'] is True and first.last['consistency'] == 'quiesced', first
    second = run_playbook(os.path.join(PLAYBOOKS, 'vm_snapshot.yml'), extra)
    assert second.rc == 0 and second.last['changed'] is False and 'job' not in second.last, second


def test_keep_prunes_the_oldest(guest):
    made = guest.snapshot('k1', keep=2)
    assert made['pruned'] == ['disk1', 'crash1', 'mem1'] and made['after'] == {'snapshots': ['play1', 'k1']}, made
    assert qemu_img_snapshots(guest.overlay()) == ['play1', 'k1']


def test_delete_is_idempotent(guest):
    assert guest.snapshot('play1', state='absent')['changed'] is True
    assert guest.snapshot('play1', state='absent')['changed'] is False
    assert qemu_img_snapshots(guest.overlay()) == ['k1']


def test_inventory_agent_connection_pings_with_sshd_stopped(guest):
    inventory = os.path.join(guest.work, 'agent.maglica.yml')
    with open(inventory, 'w') as handle:
        json.dump({'plugin': 'maglica.cloud.maglica', 'config': guest.cloud.path, 'agent_connection': True}, handle)
    env = ansible_env({'ANSIBLE_PYTHON_INTERPRETER': '/usr/bin/python3'})

    def ansible(*args):
        return subprocess.run([os.path.join(os.path.dirname(PYTHON), 'ansible'), '-i', inventory, VM] + list(args),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True, env=env, cwd=ROOT,
                              check=False)
    guest.ssh(VM, 'systemctl stop ssh.service ssh.socket; true')
    try:
        assert guest.ssh(VM, 'true', check=False).returncode != 0, 'sshd is stopped'
        ping = ansible('-m', 'ansible.builtin.ping')
        assert ping.returncode == 0 and '"ping": "pong"' in ping.stdout, ping.stdout
    finally:
        started = ansible('-m', 'ansible.builtin.command', '-a', 'systemctl start ssh.service')
    assert started.returncode == 0, started.stdout
    guest.wait_ssh()


def test_the_images_disk_is_untouched(guest):
    assert (file_sha256(guest.image_disk()), qemu_img_snapshots(guest.image_disk())) == guest.image_before


def test_removing_the_vm_removes_its_snapshots_and_leaves_no_volume(guest, testbed):
    removed = maglica_cloud.ensure_vm(guest.cloud.config, VM, state='absent', force=True)
    assert removed['changed'] is True and removed['deleted_disks'] == ['/var/lib/libvirt/images/%s.qcow2' % VM], removed
    assert VM not in testbed.domains(HOST)
    assert not [f for f in testbed.host_files(HOST) if f.startswith(VM)]
    assert (file_sha256(guest.image_disk()), qemu_img_snapshots(guest.image_disk())) == guest.image_before
