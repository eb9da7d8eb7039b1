# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""maglica_image_copy on the testbed: libvirt storage streams from one host's libvirtd to another's, run by
the destination's host worker."""

from __future__ import annotations

import os
import subprocess

import pytest

from maglica_testbed import TESTBED, file_sha256, run_playbook

PLAYBOOKS = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'playbooks')
DISK = '/var/lib/libvirt/images/debian.original.qcow2'


def copy(cloud, check=False, **variables):
    variables['maglica_config'] = cloud.path
    return run_playbook(os.path.join(PLAYBOOKS, 'image_copy.yml'), variables, check=check)


def raw_sha256(testbed, host, path, scratch):
    """sha256 of the guest-visible content of a disk, converted to raw inside the host's namespace."""
    raw = os.path.join(str(scratch), '%s.raw' % host)
    subprocess.run(['bash', os.path.join(TESTBED, 'testbed.sh'), 'exec', host, 'qemu-img', 'convert', '-O', 'raw', path, raw],
                   check=True, env=testbed.env)
    digest = file_sha256(raw)
    os.unlink(raw)
    return digest


@pytest.fixture
def no_copy_on_host2(testbed):
    """Leave host2 as the session started it: without debian.original."""
    yield
    testbed.virsh('host2', 'undefine', 'debian.original', '--remove-all-storage', check=False)


def test_copy_streams_the_image_and_is_idempotent(cloud, testbed, no_copy_on_host2, tmp_path):
    assert 'debian.original' not in testbed.domains('host2')
    jobs_before = len(cloud.jobs())
    check = copy(cloud, check=True, image_name='debian.original', image_dest='host2', image_source='host1')
    assert check.rc == 0 and check.last['changed'] is True and check.last['source'] == 'host1', check
    assert 'debian.original' not in testbed.domains('host2') and len(cloud.jobs()) == jobs_before

    run = copy(cloud, image_name='debian.original', image_dest='host2', image_source='host1')
    assert run.rc == 0, run
    result = run.last
    assert result['changed'] is True and result['source'] == 'host1' and result['dest'] == 'host2'
    assert result['job']['action'] == 'image.copy' and result['job']['host'] == 'host2' and result['job']['state'] == 'succeeded'
    assert [d['path'] for d in result['result']['disks']] == [DISK]

    # The same guest content, byte for byte, and still thin.
    source_file, copy_file = testbed.outside_path('host1', DISK), testbed.outside_path('host2', DISK)
    assert raw_sha256(testbed, 'host2', DISK, tmp_path) == raw_sha256(testbed, 'host1', DISK, tmp_path)
    subprocess.run(['qemu-img', 'compare', '-q', source_file, copy_file], check=True)
    assert os.stat(copy_file).st_size == os.stat(source_file).st_size
    assert os.stat(copy_file).st_blocks <= os.stat(source_file).st_blocks * 1.1
    assert result['result']['disks'][0]['bytes'] < os.stat(source_file).st_size

    # It is an image there now, as its source is, and it boots.
    info = testbed.virsh('host2', 'dumpxml', 'debian.original')
    assert "<source file='%s'/>" % DISK in info and "<driver name='qemu' type='qcow2'/>" in info
    listing = run_playbook(os.path.join(PLAYBOOKS, 'image_info.yml'), {'maglica_config': cloud.path, 'image_names': ['debian.original']})
    assert sorted(i['host'] for i in listing.last['images']) == ['host0', 'host1', 'host2'], listing
    testbed.virsh('host2', 'start', 'debian.original')
    try:
        assert testbed.virsh('host2', 'domstate', 'debian.original').strip() == 'running'
    finally:
        testbed.virsh('host2', 'destroy', 'debian.original')

    again = copy(cloud, image_name='debian.original', image_dest='host2')
    assert again.rc == 0 and again.last['changed'] is False and again.last['job_id'] is None, again


@pytest.mark.parametrize('variables, message', [
    ({'image_name': 'nosuch.original', 'image_dest': 'host2'}, 'image nosuch.original is not on any host'),
    ({'image_name': 'debian.original', 'image_dest': 'nosuchhost'}, "host 'nosuchhost' is not in the configuration"),
    ({'image_name': 'debian.original', 'image_dest': 'host2', 'image_source': 'host2'}, 'the source and the destination are both host2'),
    ({'image_name': 'rhel.original', 'image_dest': 'host2', 'image_source': 'host0'}, None),
    ({'image_name': 'debian.original', 'image_dest': 'host2', 'image_source': 'host2x'}, "host 'host2x' is not in the configuration"),
])
def test_copy_bad_input_fails_clearly_and_changes_nothing(cloud, testbed, variables, message):
    before = {h: (testbed.domains(h), testbed.host_files(h)) for h in testbed.hosts}
    jobs_before = len(cloud.jobs())
    run = copy(cloud, **variables)
    if message is None:  # host2 has it already: nothing to do, whatever the source
        assert run.rc == 0 and run.last['changed'] is False, run
    else:
        assert run.rc != 0 and run.failed, run
        assert message in run.failed[0]['msg']
    assert {h: (testbed.domains(h), testbed.host_files(h)) for h in testbed.hosts} == before
    assert len(cloud.jobs()) == jobs_before


def test_copy_refuses_a_vm_of_the_same_name_on_the_destination(cloud, testbed):
    testbed.define_image('host2', 'samename.test', testbed.image('debian'), 128)
    testbed.define_image('host0', 'samename.test', testbed.image('debian'), 128)
    try:
        testbed.virsh('host2', 'start', 'samename.test')
        run = copy(cloud, image_name='samename.test', image_dest='host2', image_source='host0')
        assert run.rc != 0 and 'samename.test on host2 is a VM, not an original image' in run.failed[0]['msg'], run
    finally:
        for host in ('host0', 'host2'):
            testbed.virsh(host, 'destroy', 'samename.test', check=False)
            testbed.virsh(host, 'undefine', 'samename.test', '--remove-all-storage', check=False)


def test_a_copy_from_a_host_that_does_not_allow_the_destination_is_refused_there(cloud, testbed):
    """Issue 18, item 12: a source's libvirtd allows a destination's host worker only when the destination copies
    images from it (host_worker_image_copy_from; the testbed mirrors host2 copying from host0 and host1, and host1 from
    host2). host1 does not copy from host0: host0's libvirtd refuses host-worker@host1, and nothing is made."""
    testbed.define_image('host0', 'unpaired.original', testbed.image('debian'), 128)
    try:
        before = {h: (testbed.domains(h), testbed.host_files(h)) for h in ('host0', 'host1')}
        run = copy(cloud, image_name='unpaired.original', image_dest='host1', image_source='host0')
        assert run.rc != 0 and run.failed, run
        message = run.failed[0]['msg']
        assert 'host-worker@host1' in message and 'host_worker_image_copy_from: [host0]' in message, message
        assert {h: (testbed.domains(h), testbed.host_files(h)) for h in ('host0', 'host1')} == before
    finally:
        testbed.virsh('host0', 'undefine', 'unpaired.original', '--remove-all-storage', check=False)
