# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Removing original images and making them from VMs (issue 12, items 3 and 4), on the testbed: real libvirtds,
real host workers doing the jobs, real libguestfs reading the disks afterwards."""

from __future__ import annotations

import json
import os

import pytest

from maglica.controller import cloud as cloud_mod  # noqa: E402  (maglica_testbed puts it on sys.path)
from maglica.controller import image_lifecycle  # noqa: E402  (maglica_testbed puts it on sys.path)
from maglica.controller import vm as vm_mod  # noqa: E402  (maglica_testbed puts it on sys.path)
from maglica.errors import ConfigError, ConflictError, NotFoundError  # noqa: E402  (maglica_testbed puts it on sys.path)
from maglica_testbed import file_sha256, read_guest_files, run_playbook  # noqa: E402  (maglica_testbed puts it on sys.path)
from test_cli import CONFLICT, NOT_FOUND, OK, maglica

IMAGES = '/var/lib/libvirt/images/'
PLAYBOOKS = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'playbooks')
HOST_KEY_GLOB = '__ssh_host_keys__'
IDENTITY_FILES = ['/etc/machine-id', '/var/lib/dbus/machine-id', '/etc/hostname', '/etc/hosts', '/etc/dhcp/dhclient.conf',
                  '/etc/network/interfaces', '/etc/ssh/ssh_host_ed25519_key.pub']


def images_named(cloud, name):
    return sorted(i['host'] for i in cloud_mod.image_list(cloud.config, [name])['images'])


# -- state: absent -----------------------------------------------------------------------------------

def test_absent_refuses_while_a_linked_clone_uses_it_then_goes_with_force_dependants(cloud, testbed):
    debian = testbed.image('debian')
    testbed.define_image('host0', 'gone.original', debian)
    testbed.define_image('host1', 'gone.original', debian)
    clone = cloud_mod.clone(cloud.config, 'gone.original', 'gone-linked.test', host='host0', clone_mode='linked', start=False)
    assert clone['changed'] and clone['host'] == 'host0'
    assert 'gone-linked.test.qcow2' in testbed.host_files('host0')

    with pytest.raises(ConflictError) as refused:
        image_lifecycle.remove(cloud.config, 'gone.original')
    assert 'gone-linked.test (on host0)' in str(refused.value) and 'force_dependants' in str(refused.value)
    assert images_named(cloud, 'gone.original') == ['host0', 'host1'], 'refused before any host changed'

    check = image_lifecycle.remove(cloud.config, 'gone.original', force_dependants=True, check_mode=True)
    assert check['changed'] and check['dependants'] == ['gone-linked.test']
    assert [(h['host'], h['state']) for h in check['hosts']] == [('host0', 'would remove'), ('host1', 'would remove'),
                                                                 ('host2', 'absent')]
    assert images_named(cloud, 'gone.original') == ['host0', 'host1'], 'check mode changes nothing'

    done = image_lifecycle.remove(cloud.config, 'gone.original', force_dependants=True)
    assert done['changed'] and done['dependants'] == ['gone-linked.test']
    assert [(h['host'], h['state']) for h in done['hosts']] == [('host0', 'removed'), ('host1', 'removed'), ('host2', 'absent')]
    assert {job['action'] for job in done['jobs']} == {'vm.remove'} and len(done['jobs']) == 2
    for host in ('host0', 'host1'):
        assert 'gone.original' not in testbed.domains(host)
        assert 'gone.original.qcow2' not in testbed.host_files(host), 'its disk volume went too'
    assert 'gone-linked.test' not in testbed.domains('host0')
    assert 'gone-linked.test.qcow2' not in testbed.host_files('host0')

    again = image_lifecycle.remove(cloud.config, 'gone.original')
    assert not again['changed'] and {h['state'] for h in again['hosts']} == {'absent'} and again['jobs'] == []


def test_absent_only_on_the_targets_and_only_images(cloud, testbed):
    debian = testbed.image('debian')
    testbed.define_image('host0', 'partly.original', debian)
    testbed.define_image('host1', 'partly.original', debian)
    done = image_lifecycle.remove(cloud.config, 'partly.original', targets=['host1'])
    assert done['changed'] and [(h['host'], h['state']) for h in done['hosts']] == [('host1', 'removed')]
    assert images_named(cloud, 'partly.original') == ['host0']
    with pytest.raises(ConfigError, match="host 'nosuchhost' is not in the configuration"):
        image_lifecycle.remove(cloud.config, 'partly.original', targets=['nosuchhost'])
    image_lifecycle.remove(cloud.config, 'partly.original', targets=['host0'])
    assert images_named(cloud, 'partly.original') == []
    # A clone is a VM, not an image: refused, by the library and by the host worker on its own.
    vm = cloud_mod.clone(cloud.config, 'debian.original', 'clone-seal.test', host='host1', start=False)
    assert vm['changed']
    try:
        with pytest.raises(ConflictError, match='clone-seal.test on host1 is a clone of debian.original, not an original image'):
            image_lifecycle.remove(cloud.config, 'clone-seal.test')
        job = cloud.submit('host1', 'vm.remove', {'name': 'clone-seal.test', 'image': True})
        failed = cloud.wait_job(job['id'], 'failed', timeout=120)
        assert 'is a clone of debian.original, not an original image' in failed['message']
        assert 'clone-seal.test' in testbed.domains('host1')
    finally:
        vm_mod.ensure(cloud.config, 'clone-seal.test', state='absent')


# -- from_vm ---------------------------------------------------------------------------------------

@pytest.fixture(scope='module')
def source_vm(cloud, testbed):
    """host1: src-seal.test, a stopped Maglica clone of debian.original (its own hostname, host keys, metadata)."""
    result = cloud_mod.clone(cloud.config, 'debian.original', 'src-seal.test', host='host1', start=False)
    assert result['changed'] and result['host'] == 'host1'
    return 'src-seal.test'


def vm_state(testbed, host, name):
    disk = testbed.outside_path(host, IMAGES + name + '.qcow2')
    return {'sha256': file_sha256(disk), 'xml': testbed.virsh(host, 'dumpxml', '--inactive', name),
            'files': read_guest_files(testbed, host, IMAGES + name + '.qcow2', IDENTITY_FILES)}


def test_from_vm_makes_a_sealed_image_and_leaves_the_vm_as_it_was(cloud, testbed, source_vm):
    before = vm_state(testbed, 'host1', source_vm)
    assert before['files']['/etc/hostname'] == 'src-seal.test\n' and before['files'][HOST_KEY_GLOB], 'a clone has an identity'
    assert before['files']['/etc/machine-id'] is not None

    check = image_lifecycle.create_from_vm(cloud.config, 'sealed.original', source_vm, check_mode=True)
    assert check['changed'] and check['host'] == 'host1' and check['job_id'] is None
    assert 'sealed.original' not in testbed.domains('host1')

    made = image_lifecycle.create_from_vm(cloud.config, 'sealed.original', source_vm)
    assert made['changed'] and made['host'] == 'host1' and made['job']['action'] == 'image.from_vm'
    assert made['result']['seal']['hostname'] == 'localhost'

    # Listed as an image (not a clone: the VM's clone metadata did not come along), marked as made from the VM.
    listed = cloud_mod.image_list(cloud.config, ['sealed.original'])['images']
    assert [(i['host'], i['clone_of']) for i in listed] == [('host1', None)]
    assert listed[0]['image']['made_from'] == source_vm and listed[0]['image']['complete'] == 'yes'
    xml = testbed.virsh('host1', 'dumpxml', '--inactive', 'sealed.original')
    assert 'https://maglica.cloud/xmlns/clone/1' not in xml, 'no clone metadata'
    assert xml.count('src-seal.test') == 1 and 'made_from="src-seal.test"' in xml, 'the VM is named only as its source'

    image = read_guest_files(testbed, 'host1', IMAGES + 'sealed.original.qcow2', IDENTITY_FILES)
    assert image['/etc/machine-id'] == '', 'machine-id emptied: systemd makes a new one at first boot'
    assert image['/var/lib/dbus/machine-id'] is None
    assert image[HOST_KEY_GLOB] == [], 'no SSH host keys'
    assert image['/etc/hostname'] == 'localhost\n' and image['__hostname__'] == 'localhost'
    for path in ('/etc/hosts', '/etc/dhcp/dhclient.conf', '/etc/network/interfaces'):
        assert 'src-seal' not in (image[path] or ''), '%s still names the VM: %r' % (path, image[path])
    assert 'send host-name = gethostname();' in image['/etc/dhcp/dhclient.conf']

    after = vm_state(testbed, 'host1', source_vm)
    assert after == before, 'the VM is left as it was: disk, definition, machine-id, host keys'

    again = image_lifecycle.create_from_vm(cloud.config, 'sealed.original', source_vm)
    assert not again['changed'] and again['host'] == 'host1' and again['job_id'] is None

    # A clone of the new image gets an identity of its own from Maglica's clone customisation.
    fresh = cloud_mod.clone(cloud.config, 'sealed.original', 'fresh-seal.test', start=False)
    assert fresh['changed'] and fresh['host'] == 'host1' and len(fresh['ssh_host_keys']) == 3
    files = read_guest_files(testbed, 'host1', IMAGES + 'fresh-seal.test.qcow2', IDENTITY_FILES)
    assert files['/etc/hostname'] == 'fresh-seal.test\n' and files['__hostname__'] == 'fresh-seal.test'
    assert 'fresh-seal.test' in files['/etc/hosts'] and 'send host-name = "fresh-seal.test";' in files['/etc/dhcp/dhclient.conf']
    assert len(files[HOST_KEY_GLOB]) == 6, 'new rsa, ecdsa and ed25519 host keys'
    assert files['/etc/ssh/ssh_host_ed25519_key.pub'] != before['files']['/etc/ssh/ssh_host_ed25519_key.pub']
    assert files['/etc/ssh/ssh_host_ed25519_key.pub'].split()[:2] in [k.split()[:2] for k in fresh['ssh_host_keys']]
    assert files['/etc/machine-id'] == ''


def test_from_vm_of_a_rhel_guest_drops_its_hardwired_mac_too(cloud, testbed):
    """rhel.original (any shut-off domain may be the source): hostname `original`, ifcfg-eth0 with HWADDR, keys."""
    source = testbed.outside_path('host2', IMAGES + 'rhel.original.qcow2')
    digest = file_sha256(source)
    made = image_lifecycle.create_from_vm(cloud.config, 'rhel-sealed.original', 'rhel.original')
    assert made['changed'] and made['host'] == 'host2'
    assert made['result']['seal']['os']['previous_hostname'] == 'original'
    ifcfg = '/etc/sysconfig/network-scripts/ifcfg-eth0'
    files = read_guest_files(testbed, 'host2', IMAGES + 'rhel-sealed.original.qcow2', ['/etc/hostname', '/etc/machine-id', ifcfg])
    assert files['/etc/hostname'] == 'localhost\n' and files['/etc/machine-id'] == '' and files[HOST_KEY_GLOB] == []
    assert 'HWADDR' not in files[ifcfg] and 'BOOTPROTO=dhcp' in files[ifcfg], files[ifcfg]
    assert file_sha256(source) == digest, 'the source disk is only read'
    removed = image_lifecycle.remove(cloud.config, 'rhel-sealed.original')
    assert [(h['host'], h['state']) for h in removed['hosts'] if h['state'] != 'absent'] == [('host2', 'removed')]


def test_from_vm_refuses_a_taken_name_a_running_vm_and_an_unknown_one(cloud, testbed, source_vm):
    with pytest.raises(ConflictError, match='the name debian.original is already taken by an image on host0, host1'):
        image_lifecycle.create_from_vm(cloud.config, 'debian.original', source_vm)
    with pytest.raises(ConflictError, match='the name rhel.original is already taken'):
        image_lifecycle.create_from_vm(cloud.config, 'rhel.original', source_vm)
    with pytest.raises(NotFoundError, match='no VM named no-such-vm.test on any host'):
        image_lifecycle.create_from_vm(cloud.config, 'x.original', 'no-such-vm.test')
    testbed.define_image('host2', 'runs-seal.test', testbed.image('debian'), 128)
    testbed.virsh('host2', 'start', 'runs-seal.test')
    try:
        with pytest.raises(ConflictError, match='runs-seal.test is running on host2: shut it down first'):
            image_lifecycle.create_from_vm(cloud.config, 'runs.original', 'runs-seal.test')
    finally:
        testbed.virsh('host2', 'destroy', 'runs-seal.test', check=False)
        testbed.virsh('host2', 'undefine', '--remove-all-storage', 'runs-seal.test', check=False)
    assert 'runs.original' not in testbed.domains('host2')


def test_from_vm_that_fails_midway_leaves_nothing(cloud, testbed):
    """broken.original's disk holds no operating system: the copy is made, then sealing fails - and both go."""
    files = testbed.host_files('host2')
    with pytest.raises(Exception, match='libguestfs found no operating system'):
        image_lifecycle.create_from_vm(cloud.config, 'half.original', 'broken.original')
    assert 'half.original' not in testbed.domains('host2')
    assert testbed.host_files('host2') == files, 'no volume left behind'


# -- the command line ---------------------------------------------------------------------------

def test_cli_image_create_and_remove(cloud, testbed, source_vm):
    proc = maglica(cloud, '--json', 'image', 'create', '--name', 'cli-sealed.original', '--from-vm', source_vm)
    assert proc.returncode == OK, proc.stderr
    made = json.loads(proc.stdout)
    assert made['changed'] and made['host'] == 'host1' and made['name'] == 'cli-sealed.original'
    proc = maglica(cloud, 'image', 'create', '--name', 'cli-sealed.original', '--from-vm', source_vm)
    assert proc.returncode == CONFLICT and 'cli-sealed.original already exists on host1' in proc.stderr
    proc = maglica(cloud, 'image', 'create', '--name', 'cli-x.original', '--from-vm', 'no-such-vm.test')
    assert proc.returncode == NOT_FOUND and 'no VM named no-such-vm.test' in proc.stderr
    proc = maglica(cloud, 'image', 'remove', '--name', source_vm)
    assert proc.returncode == CONFLICT and 'not an original image' in proc.stderr

    proc = maglica(cloud, 'image', 'remove', '--name', 'cli-sealed.original', '--on', 'host1')
    assert proc.returncode == OK, proc.stderr
    assert proc.stdout == 'removed cli-sealed.original from host1\n'
    assert 'cli-sealed.original' not in testbed.domains('host1')
    proc = maglica(cloud, '--json', 'image', 'remove', '--name', 'cli-sealed.original')
    assert proc.returncode == NOT_FOUND and 'no image named cli-sealed.original on any host' in proc.stderr


# -- the same through the module -----------------------------------------------------------------------

def run_image_module(cloud, check=False, **variables):
    variables['maglica_config'] = cloud.path
    return run_playbook(os.path.join(PLAYBOOKS, 'image.yml'), variables, check=check)


def test_the_module_makes_an_image_from_a_vm_and_removes_it(cloud, testbed, source_vm):
    """maglica_image from_vm / state=absent / force_dependants: what a playbook does, end to end."""
    run = run_image_module(cloud, check=True, image_name='mod-sealed.original', from_vm=source_vm)
    assert run.rc == 0 and run.last['changed'] and run.last['host'] == 'host1', run
    assert images_named(cloud, 'mod-sealed.original') == [], 'check mode makes nothing'
    run = run_image_module(cloud, image_name='mod-sealed.original', from_vm=source_vm)
    assert run.rc == 0 and run.last['changed'] and run.last['host'] == 'host1' and run.last['job_id'], run
    assert images_named(cloud, 'mod-sealed.original') == ['host1']
    run = run_image_module(cloud, image_name='mod-sealed.original', from_vm=source_vm)
    assert run.rc == 0 and not run.last['changed'], run

    run = run_image_module(cloud, image_name='mod-sealed.original', from_vm=source_vm, targets=['host0'])
    assert run.rc != 0 and 'mutually exclusive: from_vm|targets' in run.last['msg'], run

    linked = cloud_mod.clone(cloud.config, 'mod-sealed.original', 'mod-linked.test', host='host1', clone_mode='linked', start=False)
    assert linked['changed']
    run = run_image_module(cloud, image_name='mod-sealed.original', image_state='absent')
    assert run.rc != 0 and 'mod-linked.test (on host1)' in run.last['msg'], run
    assert images_named(cloud, 'mod-sealed.original') == ['host1'] and 'mod-linked.test' in testbed.domains('host1')
    run = run_image_module(cloud, image_name='mod-sealed.original', image_state='absent', force_dependants=True)
    assert run.rc == 0 and run.last['changed'] and run.last['dependants'] == ['mod-linked.test'], run
    assert [(h['host'], h['state']) for h in run.last['hosts']] == [('host0', 'absent'), ('host1', 'removed'), ('host2', 'absent')]
    assert images_named(cloud, 'mod-sealed.original') == [] and 'mod-linked.test' not in testbed.domains('host1')
    run = run_image_module(cloud, image_name='mod-sealed.original', image_state='absent')
    assert run.rc == 0 and not run.last['changed'], run
