# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Snapshots on ONE booted guest: a linked clone of the bootable Debian 12 (ifupdown) image on host0, with its QEMU
guest agent, reached over SSH with strict host key checking. The tests run in file order and share that guest:
quiesced snapshot and revert, crash-consistent without an agent, memory snapshot and revert, listing, the module's
idempotence and check mode, keep, delete, the inventory's agent connection with sshd stopped, the image's disk left
untouched, and last the VM's removal with its snapshots."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess

import pytest

from guests import Booted  # pylint: disable=wrong-import-order
from maglica_testbed import PYTHON, ROOT, ansible_env, run_playbook, wait_until  # pylint: disable=wrong-import-order
from maglica.controller import cloud as maglica_cloud  # pylint: disable=wrong-import-order

PLAYBOOKS = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'playbooks')
IMAGE = 'snapdeb.original'
VM = 'snap1.snap.test'
HOST = 'host0'
BOOT_TIMEOUT = 900
GUEST_MEMORY_MIB = 1024


def sha256(path):
    digest = hashlib.sha256()
    with open(path, 'rb') as handle:
        for block in iter(lambda: handle.read(1 << 20), b''):
            digest.update(block)
    return digest.hexdigest()


def qemu_img_snapshots(path):
    out = subprocess.run(['qemu-img', 'info', '-U', '--output=json', path], stdout=subprocess.PIPE, check=True).stdout
    return [s['name'] for s in json.loads(out).get('snapshots', [])]


class Guest(Booted):
    def image_disk(self):
        return self.testbed.outside_path(HOST, '/var/lib/libvirt/images/%s.qcow2' % IMAGE)

    def overlay(self):
        return self.testbed.outside_path(HOST, '/var/lib/libvirt/images/%s.qcow2' % VM)

    def wait_ssh(self):
        return wait_until(lambda: self.ssh(VM, 'true', check=False).returncode == 0, 300, '%s to answer SSH' % VM)

    def snapshot(self, name, **kwargs):
        return maglica_cloud.vm_snapshot(self.cloud.config, VM, name, **kwargs)


@pytest.fixture(scope='module')
def guest(testbed, cloud, tmp_path_factory):
    work = str(tmp_path_factory.mktemp('snapshot'))
    boot = Guest(testbed, cloud, work)
    try:
        testbed.define_image(HOST, IMAGE, testbed.bootable_image('ifupdown'), memory=GUEST_MEMORY_MIB)
        boot.image_before = (sha256(boot.image_disk()), qemu_img_snapshots(boot.image_disk()))
        boot.results[VM] = maglica_cloud.clone(cloud.config, IMAGE, VM, host=HOST, clone_mode='linked',
                                               ssh_authorized_keys=[boot.public_key], wait_for='ssh',
                                               wait_for_timeout=BOOT_TIMEOUT)
        # The agent answers once the guest runs systemd's multi-user target; SSH answering says it has.
        wait_until(lambda: testbed.virsh(HOST, 'qemu-agent-command', VM, '{"execute":"guest-ping"}', check=False).startswith('{'),
                   120, 'the guest agent of %s' % VM)
        yield boot
    finally:
        testbed.virsh(HOST, 'destroy', VM, check=False)
        testbed.virsh(HOST, 'undefine', '--snapshots-metadata', '--remove-all-storage', VM, check=False)
        testbed.virsh(HOST, 'undefine', '--remove-all-storage', IMAGE, check=False)


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
    assert (sha256(guest.image_disk()), qemu_img_snapshots(guest.image_disk())) == guest.image_before


def test_removing_the_vm_removes_its_snapshots_and_leaves_no_volume(guest, testbed):
    removed = maglica_cloud.ensure_vm(guest.cloud.config, VM, state='absent', force=True)
    assert removed['changed'] is True and removed['deleted_disks'] == ['/var/lib/libvirt/images/%s.qcow2' % VM], removed
    assert VM not in testbed.domains(HOST)
    assert not [f for f in testbed.host_files(HOST) if f.startswith(VM)]
    assert (sha256(guest.image_disk()), qemu_img_snapshots(guest.image_disk())) == guest.image_before
