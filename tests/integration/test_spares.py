# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Spare clones (host/spares.py) on the testbed: host1's worker keeps, after a clone of an image, a copy of its disk
with a libguestfs appliance launched on it; the next clone takes it instead of copying and launching. Proven here
on real disks and appliances: the clone made from a spare carries its own name and keys in its own disk file, a
changed image is never served by an old copy, and no spare file or appliance outlives an idle timeout or a killed
worker. (test_boot.py boots a clone made from a spare and logs in.)"""

from __future__ import annotations

import os
import signal
import subprocess

import pytest

from maglica_testbed import read_guest_files, wait_until
from maglica.controller import cloud as maglica_cloud
from maglica.controller import vm as maglica_vm
from maglica.host.spares import SPARE_PREFIX, SPARED_NOTE

HOST = 'host1'
IMAGE = 'debian.original'
IMAGE_DISK = '/var/lib/libvirt/images/debian.original.qcow2'
CLONES = ['spare%d.test' % n for n in range(1, 6)]
NO_SPARES = {'ready': {}, 'making': {}, 'taken': {}}  # the record of a worker without spares
SPARE_WAIT = 180  # a copy and one appliance launch under software emulation, beside other tests
# A spare made at a clone's start may be ready before the clone's own customisation ends: long enough to be seen.
IDLE_S = 30


@pytest.fixture(scope='module')
def spared(cloud, testbed):
    """host1's worker with spares on, for this module; restarted as the cloud has it afterwards."""
    cloud.stop_host_worker(HOST)
    cloud.start_host_worker(HOST, settings={'spare_images': 1})
    try:
        yield cloud
    finally:
        for name in CLONES:
            maglica_vm.ensure(cloud.config, name, state='absent', force=True)
        cloud.stop_host_worker(HOST)
        cloud.start_host_worker(HOST)
        assert spare_files(testbed) == [], 'the worker left spare files when it stopped'


def record(cloud):
    return cloud.state_file(HOST, 'spares.json')


def spare_files(testbed):
    return sorted(name for name in testbed.host_files(HOST) if name.startswith(SPARE_PREFIX))


def appliances(cloud):
    """The pids of the libguestfs appliances (qemu, started by the library in the worker) of HOST's worker."""
    worker = cloud.host_workers[HOST].pid
    found = subprocess.run(['ps', '-eo', 'pid=,ppid=,comm='], stdout=subprocess.PIPE, universal_newlines=True, check=True)
    return {int(pid) for pid, ppid, comm in (line.split(None, 2) for line in found.stdout.splitlines())
            if int(ppid) == worker and comm.startswith('qemu')}


def gone(pids):
    return not any(os.path.exists('/proc/%d' % pid) for pid in pids)


def ready_spare(cloud, testbed, other_than=()):
    """Wait for a ready spare (not one of `other_than`): (its image key, its files), which exist."""
    def ready():
        state = record(cloud)
        spares = [(key, paths) for key, paths in state['ready'].items() if paths not in other_than]
        return spares[0] if spares and all(os.path.exists(testbed.outside_path(HOST, p)) for p in spares[0][1]) else None
    return wait_until(ready, SPARE_WAIT, 'a spare of %s on %s to be ready' % (IMAGE, HOST))


def clone(cloud, name):
    """Clone IMAGE on HOST, not started; returns the notes of its customisation."""
    result = maglica_cloud.clone(cloud.config, IMAGE, name, host=HOST, start=False, timeout=600)
    assert 'customization' in result['result'], result
    return result


def test_a_clone_leaves_a_spare_and_the_next_clone_takes_it(spared, testbed):
    first = clone(spared, CLONES[0])
    assert SPARED_NOTE not in first['result']['customization']['notes'], 'no spare existed for the first clone'
    key, paths = ready_spare(spared, testbed)
    assert [os.path.basename(p).startswith(SPARE_PREFIX) for p in paths] == [True]
    spare_appliance = appliances(spared)
    assert len(spare_appliance) == 1, 'the spare has no appliance of its own running'

    second = clone(spared, CLONES[1])
    assert SPARED_NOTE in second['result']['customization']['notes'], second['result']['customization']['notes']
    disk = '/var/lib/libvirt/images/%s.qcow2' % CLONES[1]
    assert [d['path'] for d in second['result']['domain']['disks'] if d['device'] == 'disk'] == [disk]
    assert not os.path.exists(testbed.outside_path(HOST, paths[0])), 'the spare kept its hidden name'
    assert wait_until(lambda: gone(spare_appliance), 30, 'the taken spare\'s appliance to end')
    # What the appliance wrote is in the clone's own disk file.
    files = read_guest_files(testbed, HOST, disk, ['/etc/hostname', '/etc/machine-id'])
    assert files['/etc/hostname'].strip() in (CLONES[1], CLONES[1].split('.')[0])
    assert not (files['/etc/machine-id'] or '').strip(), 'the image\'s machine-id stayed in the clone'
    assert set(second['ssh_host_keys']).isdisjoint(first['ssh_host_keys']), 'two clones share a host key'
    # A new spare is made behind the one taken, for the same image.
    new_key, new_paths = ready_spare(spared, testbed, other_than=[paths])
    assert new_key == key and new_paths != paths


def test_a_changed_image_is_not_served_by_its_old_spare(spared, testbed):
    key, old = ready_spare(spared, testbed)
    old_appliance = appliances(spared)
    os.utime(testbed.outside_path(HOST, IMAGE_DISK))  # a new mtime: another image as far as spares know
    third = clone(spared, CLONES[2])
    assert SPARED_NOTE not in third['result']['customization']['notes'], 'a changed image was cloned from its old copy'
    new_key, _new = ready_spare(spared, testbed, other_than=[old])
    assert new_key != key
    assert list(record(spared)['ready']) == [new_key], 'one image keeps a spare (spare_images 1)'
    assert not os.path.exists(testbed.outside_path(HOST, old[0]))
    assert wait_until(lambda: gone(old_appliance), 30, 'the old spare\'s appliance to end')
    assert len(appliances(spared)) == 1


def test_an_image_changed_gets_a_new_inspected_spare_before_it_is_cloned(spared, testbed):
    """An image update some time before the next clone: the spare is made again (copy, launch and inspection) without
    waiting for a clone, and that clone takes it."""
    key, old = ready_spare(spared, testbed)
    old_appliance = appliances(spared)
    os.utime(testbed.outside_path(HOST, IMAGE_DISK))
    new_key, _new = ready_spare(spared, testbed, other_than=[old])
    assert new_key != key and not os.path.exists(testbed.outside_path(HOST, old[0]))
    assert wait_until(lambda: gone(old_appliance), 30, 'the stale spare\'s appliance to end')
    assert new_key in spared.state_file(HOST, 'layouts.json'), 'the new spare was not inspected: its clone would inspect again'
    fourth = clone(spared, CLONES[3])
    assert SPARED_NOTE in fourth['result']['customization']['notes']


def test_a_killed_worker_s_spare_is_removed_when_it_starts_again(spared, testbed):
    _key, paths = ready_spare(spared, testbed)
    spare_appliance = appliances(spared)
    assert spare_appliance
    spared.stop_host_worker(HOST, signal.SIGKILL)
    # The appliance's library died with the worker: the appliance ends with it.
    assert wait_until(lambda: gone(spare_appliance), 60, 'the killed worker\'s spare appliance to end')
    assert spare_files(testbed) == [os.path.basename(paths[0])], 'the killed worker had no chance to remove its spare'
    spared.start_host_worker(HOST, settings={'spare_images': 1, 'spare_idle_s': IDLE_S})
    assert spare_files(testbed) == [] and record(spared) == NO_SPARES


def test_an_idle_spare_goes(spared, testbed):
    clone(spared, CLONES[4])  # its worker was started with spare_idle_s IDLE_S
    ready_spare(spared, testbed)
    spare_appliance = appliances(spared)
    # Its files go first, then the record that lists them: a stop between leaves a record naming no file.
    wait_until(lambda: not spare_files(testbed) and record(spared) == NO_SPARES, IDLE_S + 60,
               'the idle spare to be removed')
    assert wait_until(lambda: gone(spare_appliance), 30, 'the idle spare\'s appliance to end')
    assert appliances(spared) == set()
