# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Disk names of clones and of attached disks: two different VMs never get the same file (issue 10, item 5)."""

from __future__ import annotations

import itertools

import pytest

from maglica.controller import vm
from maglica.errors import MaglicaError
from maglica.cluster import domains

IMAGE = {'disks': [{'device': 'disk', 'path': '/pool/image.qcow2'}, {'device': 'cdrom', 'path': '/pool/x.iso'},
                   {'device': 'disk', 'path': '/pool/image-data.qcow2'}, {'device': 'disk', 'path': '/pool/image-logs.qcow2'}]}
HOSTNAMES = ['web', 'web-1', 'web-2', 'web.1', 'web_1', 'web+1', 'web1', 'web-disk1', 'web@1', 'a', 'a-b', 'b-data1']


def clone_files(hostname):
    return [path for _disk, path in domains.clone_disk_paths(IMAGE, hostname)]


def test_clone_disk_names_collide():
    """A two-disk clone `web` and a clone `web-1` once both made web-1.qcow2."""
    assert not set(clone_files('web')) & set(clone_files('web-1'))


def test_clone_disk_names_never_collide_between_clones():
    valid = [h for h in HOSTNAMES if '@' not in h]
    for one, other in itertools.combinations(valid, 2):
        assert not set(clone_files(one)) & set(clone_files(other)), (one, other)
    assert clone_files('web')[0] == '/pool/web.qcow2'  # the first disk keeps the plain name


def attached(vm_name, disk_name):
    return vm.normalize_disks(vm_name, [{'name': disk_name, 'size': '1G'}])[0][0]


def test_attached_disk_names_collide():
    """VM `a` with disk `b-data1` and VM `a-b` with disk `data1` once both made a-b-data1.qcow2."""
    assert attached('a', 'b-data1') != attached('a-b', 'data1')


def test_attached_disk_names_never_collide_with_clones_or_each_other():
    names = ['data1', 'b-data1', '1', 'disk1', 'web', 'x.y']
    made = {}
    for vm_name in HOSTNAMES:
        if '@' in vm_name:
            continue
        for disk_name in names:
            try:
                volume = attached(vm_name, disk_name)
            except MaglicaError:
                continue
            assert volume not in made, (vm_name, disk_name, made.get(volume))
            made[volume] = (vm_name, disk_name)
    clone_names = set(path.rsplit('/', 1)[1] for h in HOSTNAMES if '@' not in h for path in clone_files(h))
    assert not clone_names & set(made)


@pytest.mark.parametrize('disk_name', ['disk1', 'a@b', 'x/y'])
def test_attached_disk_names_that_would_be_ambiguous_are_refused(disk_name):
    with pytest.raises(MaglicaError, match='disks\\[0\\]'):
        attached('web', disk_name)
