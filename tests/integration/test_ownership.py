# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What a job may destroy: only what it recorded and created itself (issue 10, items 4 and 6).

A job "interrupted" by a restart is made here the way a restart leaves it: recorded as running in the
host worker's record (a fetched job is recorded before it runs) while the worker is down. The worker
then starts and reconciles it, as after a kill with the job still queued in its pool.
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from maglica_testbed import MODULE_UTILS, PYTHON, client, run_playbook, wait_until
from maglica.protocol import messages
from maglica.host.worker import Record

PLAYBOOKS = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'playbooks')
IMAGES = '/var/lib/libvirt/images'


def undefine(testbed, host, name):
    testbed.virsh(host, 'destroy', name, check=False)
    testbed.virsh(host, 'undefine', name, '--remove-all-storage', check=False)


def define_renamed(testbed, host, old_name, new_name):
    """A VM `new_name` whose disk is still `old_name`.qcow2: a VM that was renamed."""
    testbed.define_image(host, old_name, testbed.image('debian'), 128)
    testbed.virsh(host, 'domrename', old_name, new_name)


def maglica(cloud, *args):
    """The `maglica` command, as test_cli.py runs it."""
    command = [PYTHON, '-m', 'maglica.controller.cli', '--config', cloud.path] + list(args)
    return subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True,
                          env=dict(cloud.env, PYTHONPATH=MODULE_UTILS), stdin=subprocess.DEVNULL, timeout=600, check=False)


def fingerprint(testbed, host, path):
    st = os.stat(testbed.outside_path(host, path))
    return st.st_ino, st.st_size, st.st_mtime_ns


def interrupted(cloud, host, action, args):
    """A job the host worker recorded as running but never ran (it was still queued when the worker died);
    the worker is started again and reconciles it."""
    cloud.stop_host_worker(host)
    try:
        job = cloud.submit(host, action, args, ttl=600)
        record = Record(os.path.join(cloud.data['host_worker']['state_dir'], '%s.sqlite' % host))
        try:
            record.take({'id': job['id'], 'host': host, 'action': action, 'args': args, 'ttl': 600})
        finally:
            record.close()
    finally:
        cloud.start_host_worker(host)
    return job


def ended(cloud, job_id, timeout=300):
    def final():
        job = cloud.job(job_id)
        return job if job['state'] in messages.FINAL_STATES else None
    return wait_until(final, timeout, 'job %s to end' % job_id)


@pytest.fixture
def renamed_vm(testbed):
    """host1: VM own-old.test on the disk own-web.test.qcow2 (its name before a rename)."""
    define_renamed(testbed, 'host1', 'own-web.test', 'own-old.test')
    yield 'own-old.test'
    undefine(testbed, 'host1', 'own-web.test')
    undefine(testbed, 'host1', 'own-old.test')


def test_reconcile_deletes_what_it_does_not_own_clone_disk(cloud, testbed, renamed_vm):
    """A clone job reconciled after a restart must not delete a disk at its target path that it never made."""
    disk = '%s/own-web.test.qcow2' % IMAGES
    before = fingerprint(testbed, 'host1', disk)
    job = interrupted(cloud, 'host1', 'vm.clone', {'image': 'debian.original', 'hostname': 'own-web.test',
                                                   'clone_mode': 'linked', 'start': False})
    done = ended(cloud, job['id'])
    assert done['state'] == 'failed', done
    assert 'the clone disk %s already exists on this host' % disk in done['message']
    assert 'own-old.test' in done['message']  # names whose disk it is
    assert fingerprint(testbed, 'host1', disk) == before
    assert 'own-old.test' in testbed.domains('host1') and 'own-web.test' not in testbed.domains('host1')


@pytest.fixture
def foreign_volume(testbed):
    """host1: VM own-keeper.test whose disk is rhel.original.qcow2, the name an image.copy of rhel.original makes."""
    define_renamed(testbed, 'host1', 'rhel.original', 'own-keeper.test')
    yield '%s/rhel.original.qcow2' % IMAGES
    undefine(testbed, 'host1', 'rhel.original')
    undefine(testbed, 'host1', 'own-keeper.test')


def test_reconcile_deletes_what_it_does_not_own_image_copy_volume(cloud, testbed, foreign_volume):
    before = fingerprint(testbed, 'host1', foreign_volume)
    job = interrupted(cloud, 'host1', 'image.copy', {'image': 'rhel.original', 'source': 'host2'})
    done = ended(cloud, job['id'])
    assert done['state'] == 'failed', done
    assert 'the volume %s already exists on host1' % foreign_volume in done['message']
    assert fingerprint(testbed, 'host1', foreign_volume) == before
    assert 'own-keeper.test' in testbed.domains('host1') and 'rhel.original' not in testbed.domains('host1')


@pytest.fixture
def same_named_vm(testbed):
    """own-copy.original: an image on host2, and a VM of the same name (not a copy) on host1."""
    testbed.define_image('host2', 'own-copy.original', testbed.image('debian'), 128)
    testbed.define_image('host1', 'own-copy.original', testbed.image('debian'), 128)
    yield 'own-copy.original'
    undefine(testbed, 'host1', 'own-copy.original')
    undefine(testbed, 'host2', 'own-copy.original')


def test_reconcile_takes_a_foreign_domain_for_its_image_copy(cloud, testbed, same_named_vm):
    uuid = testbed.virsh('host1', 'domuuid', same_named_vm).strip()
    job = interrupted(cloud, 'host1', 'image.copy', {'image': same_named_vm, 'source': 'host2'})
    done = ended(cloud, job['id'])
    assert done['state'] == 'failed', done
    assert '%s is already defined on host1 and this job did not make it' % same_named_vm in done['message']
    assert testbed.virsh('host1', 'domuuid', same_named_vm).strip() == uuid


# -- item 5: one clone per hostname ---------------------------------------------------------

@pytest.fixture
def twice(testbed):
    yield 'own-twice.test'
    for host in testbed.hosts:
        undefine(testbed, host, 'own-twice.test')


def test_two_clones_of_one_hostname_destroy_each_other(cloud, testbed, twice):
    """A re-run while the first clone is still queued (wait: false, or after a wait timeout) must not make a second
    job for the same name: it gets the first job back, and one clone is made."""
    variables = {'maglica_config': cloud.path, 'image': 'rhel.original', 'hostname': twice, 'clone_mode': 'linked',
                 'start': False, 'wait': False}
    cloud.stop_host_worker('host2')  # the first job waits, queued, as behind a busy worker
    try:
        first = run_playbook(os.path.join(PLAYBOOKS, 'vm_clone.yml'), variables)
        second = run_playbook(os.path.join(PLAYBOOKS, 'vm_clone.yml'), variables)
    finally:
        cloud.start_host_worker('host2')
    assert first.rc == 0 and first.last['changed'] is True, first
    job_id = first.last['job_id']
    assert second.rc == 0 and second.last['job_id'] == job_id, second
    assert second.last['changed'] is False and 'already under way as job %s on host2' % job_id in second.last['message']
    assert [j['id'] for j in cloud.jobs(50) if j['action'] == 'vm.clone' and j['args']['hostname'] == twice] == [job_id]
    cloud.wait_job(job_id, 'succeeded', 300)
    assert [h for h in testbed.hosts if twice in testbed.domains(h)] == ['host2']


# -- item 6: vm.remove and what depends on a VM's disks ---------------------------------

def vm(cloud, name, **settings):
    variables = {'vm_%s' % key: value for key, value in settings.items()}
    variables.update(maglica_config=cloud.path, vm_name=name)
    return run_playbook(os.path.join(PLAYBOOKS, 'vm.yml'), variables)


@pytest.fixture
def image_and_linked_clone(cloud, testbed):
    """host0: image own-base.original and own-linked.test, a linked clone of it made by Maglica."""
    testbed.define_image('host0', 'own-base.original', testbed.image('debian'), 128)
    job = cloud.submit('host0', 'vm.clone', {'image': 'own-base.original', 'hostname': 'own-linked.test',
                                             'clone_mode': 'linked', 'start': False}, ttl=600)
    cloud.wait_job(job['id'], 'succeeded', 300)
    backing = testbed.virsh('host0', 'vol-dumpxml', '%s/own-linked.test.qcow2' % IMAGES)
    assert '<path>%s/own-base.original.qcow2</path>' % IMAGES in backing  # it really is an overlay of the image
    yield 'own-base.original', 'own-linked.test'
    undefine(testbed, 'host0', 'own-linked.test')
    undefine(testbed, 'host0', 'own-base.original')


def test_vm_remove_removes_an_image_its_linked_clones_need(cloud, testbed, image_and_linked_clone):
    image, linked = image_and_linked_clone
    files = {'own-base.original.qcow2', 'own-linked.test.qcow2'}
    # The host worker's action refuses it too, not only the library: a job sent without the library's check.
    with client.Client(cloud.config) as library:
        job = library.submit(messages.new_job('host0', 'vm.remove', {'name': image}, ttl=120))
    done = ended(cloud, job['id'], 120)
    assert done['state'] == 'failed', done
    assert 'linked clones use its disks: %s' % linked in done['message'] and 'force_dependants' in done['message']
    assert {image, linked} <= testbed.domains('host0') and files <= testbed.host_files('host0')

    # `force` only means "stop it first": it does not override the guard.
    run = vm(cloud, image, state='absent', force=True)
    assert run.rc != 0 and run.failed, run
    msg = run.failed[0]['msg']
    assert 'own-base.original on host0 is an original image' in msg and 'linked clones use its disks: %s' % linked in msg
    assert {image, linked} <= testbed.domains('host0') and files <= testbed.host_files('host0')

    # force_dependants: the linked clone goes first, then the image, and the result says so.
    run = vm(cloud, image, state='absent', force_dependants=True)
    assert run.rc == 0 and run.last['changed'] is True, run
    assert run.last['removed_dependants'] == [linked]
    assert 'removed the dependants of own-base.original first: %s' % linked in run.last['changes']
    assert sorted(run.last['deleted_disks']) == ['%s/own-base.original.qcow2' % IMAGES, '%s/own-linked.test.qcow2' % IMAGES]
    assert not {image, linked} & testbed.domains('host0') and not files & testbed.host_files('host0')


@pytest.fixture
def running_parent_and_overlay(testbed):
    """host0: own-parent.test, running (so not an image), and own-child.test whose disk is an overlay on its disk."""
    testbed.define_image('host0', 'own-parent.test', testbed.image('debian'), 128)
    testbed.define_image('host0', 'own-child.test', testbed.image('debian'), 128)
    testbed.virsh('host0', 'vol-delete', '--pool', 'default', 'own-child.test.qcow2')
    testbed.virsh('host0', 'vol-create-as', 'default', 'own-child.test.qcow2', '1G', '--format', 'qcow2',
                  '--backing-vol', '%s/own-parent.test.qcow2' % IMAGES, '--backing-vol-format', 'qcow2')
    testbed.virsh('host0', 'start', 'own-parent.test')
    yield 'own-parent.test', 'own-child.test'
    undefine(testbed, 'host0', 'own-child.test')
    undefine(testbed, 'host0', 'own-parent.test')


def test_vm_remove_removes_a_disk_linked_clones_use(cloud, testbed, running_parent_and_overlay):
    parent, child = running_parent_and_overlay
    run = vm(cloud, parent, state='absent', force=True)
    assert run.rc != 0 and run.failed, run
    assert 'linked clones use its disks: %s' % child in run.failed[0]['msg'], run
    assert {parent, child} <= testbed.domains('host0')
    assert testbed.virsh('host0', 'domstate', parent).strip() == 'running'
    # The command line has the same word: refused with --force alone, done with --force-dependants.
    refused = maglica(cloud, 'vm', 'remove', '--name=%s' % parent, '--force')
    assert refused.returncode == 4 and 'linked clones use its disks: %s' % child in refused.stderr, refused.stderr
    removed = maglica(cloud, '--json', 'vm', 'remove', '--name=%s' % parent, '--force', '--force-dependants')
    assert removed.returncode == 0, removed.stderr
    assert json.loads(removed.stdout)['removed_dependants'] == [child]
    assert not {parent, child} & testbed.domains('host0')
    assert not {'own-parent.test.qcow2', 'own-child.test.qcow2'} & testbed.host_files('host0')
