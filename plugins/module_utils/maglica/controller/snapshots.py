# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Snapshots of a VM, planned here and made by its host worker.

The plan (what exists, what would change, what this host's libvirt refuses) is read from the VM's libvirtd, so check
mode and a second run that changes nothing need no job. Creating, reverting, deleting and listing with sizes are
host-worker jobs (`vm.snapshot`, `vm.snapshot_list`): durable in the job log, reconciled after a restart, and run
where the disks are (qemu-img reads them there).

`state: reverted` always reverts, and reports a change: libvirt cannot tell whether the VM's disks or memory moved
on since its last revert (the "current" snapshot only says which one it was), and rolling back is what was asked."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Dict, List, Optional, Sequence, TypedDict

from ..cluster import snapshots, virt
from ..cluster.config import Config
from ..errors import ConflictError, MaglicaError, NotFoundError
from . import pushed
from .client import Job
from .vm import _run_job, VmEntry

# VMs whose snapshots are listed at once (vm_info snapshots: true): one job each.
LIST_PARALLEL = 8


class _SnapshotResult(TypedDict):
    changed: bool
    vm: str
    host: str
    name: str
    state: str
    pruned: List[str]
    before: Dict[str, Any]
    after: Dict[str, Any]


class SnapshotResult(_SnapshotResult, total=False):
    """snapshot()'s result: `consistency` (a creation) memory | quiesced | crash | offline; `job` once one ran."""

    consistency: str
    memory: bool
    thawed: bool
    warnings: List[str]
    job: Job


class SnapshotList(TypedDict):
    """list_snapshots()'s result: the VM's snapshots (name, creation_time, state, memory, external, description,
    parent, current, size) oldest first, and its disks' allocation in bytes."""

    vm: str
    host: str
    snapshots: List[Dict[str, Any]]
    disk_allocation: int
    warnings: List[str]


def snapshot(config: Config, vm: str, name: str, state: str = 'present', memory: bool = False,
             description: Optional[str] = None, keep: Optional[int] = None, check_mode: bool = False,
             timeout: float = 600) -> SnapshotResult:
    """Bring the snapshot `name` of VM `vm` to `state`: present (made, then the oldest beyond `keep` pruned),
    absent (deleted) or reverted (the VM rolled back to it)."""
    snapshots.check_name(name)
    if state not in snapshots.STATES:
        raise MaglicaError('state must be one of %s' % ', '.join(snapshots.STATES))
    if description is not None:
        snapshots.check_description(description)
    if keep is not None and (isinstance(keep, bool) or not isinstance(keep, int) or keep < 1):
        raise MaglicaError('keep must be a number of snapshots, 1 or more; got %r' % (keep,))
    host, domain = pushed.find_vm(config, vm)
    with virt.Connection(config, config.host(host), readonly=True) as conn:
        dom = virt.call('cannot look up %s on %s' % (vm, host), conn.lookupByName, vm)
        found = snapshots.domain_snapshots(dom)
        version = conn.getLibVersion()
        root = ET.fromstring(dom.XMLDesc(virt.libvirt().VIR_DOMAIN_XML_INACTIVE))
    names = [s['name'] for s in found]
    existing = next((s for s in found if s['name'] == name), None)
    result: SnapshotResult = {'changed': False, 'vm': vm, 'host': host, 'name': name, 'state': state, 'pruned': [],
                              'before': {'snapshots': names}, 'after': {'snapshots': names}}
    if state == 'absent':
        result['changed'] = existing is not None
        result['after'] = {'snapshots': [n for n in names if n != name]}
    elif state == 'reverted':
        if existing is None:
            raise NotFoundError('%s on %s has no snapshot named %s (it has %s)' % (vm, host, name, ', '.join(names) or 'none'))
        snapshots.check_revert_support(existing, version, vm, host)
        result['changed'] = True
    else:
        if existing is None:
            if virt.is_image(domain):
                raise ConflictError('%s on %s is an original image: its disks back clones and are not snapshotted; '
                                    'snapshot a clone instead' % (vm, host))
            snapshots.check_internal_support(root, version, vm, host)
        pruned = snapshots.to_prune(found, keep, name)
        result['pruned'] = pruned
        result['after'] = {'snapshots': [n for n in names if n not in pruned] + ([] if existing else [name])}
        result['changed'] = existing is None or bool(pruned)
    if check_mode or not result['changed']:
        return result
    args: Dict[str, Any] = {'name': vm, 'snapshot': name, 'state': state}
    if memory:
        args['memory'] = True
    if description:
        args['description'] = description
    if keep is not None:
        args['keep'] = keep
    job = _run_job(config, host, 'vm.snapshot', args, timeout)
    data = job['data']
    result['job'] = job
    result['changed'] = bool(data.get('changed', True))
    result['pruned'] = list(data.get('pruned') or [])
    result['after'] = {'snapshots': list(data.get('snapshots') or [])}
    for key in ('consistency', 'memory', 'thawed', 'warnings'):
        if key in data:
            result[key] = data[key]
    return result


def list_snapshots(config: Config, vm: str, timeout: float = 120, host: Optional[str] = None) -> SnapshotList:
    """The snapshots of VM `vm`, with the memory each holds, read by its host worker (a read-only job)."""
    if host is None:
        host, _domain = pushed.find_vm(config, vm)
    job = _run_job(config, host, 'vm.snapshot_list', {'name': vm}, timeout)
    data = job['data']
    return {'vm': vm, 'host': host, 'snapshots': list(data.get('snapshots') or []),
            'disk_allocation': int(data.get('disk_allocation') or 0), 'warnings': list(data.get('warnings') or [])}


def add_snapshots(config: Config, vms: Sequence[VmEntry], timeout: float = 120) -> None:
    """Give each VM entry (not the original images) its `snapshots`, listed by the host workers at once."""
    wanted = [entry for entry in vms if not entry.get('image')]

    def one(entry: VmEntry) -> None:
        entry['snapshots'] = list_snapshots(config, entry['name'], timeout, host=entry['host'])['snapshots']

    if not wanted:
        return
    with ThreadPoolExecutor(max_workers=min(LIST_PARALLEL, len(wanted))) as pool:
        list(pool.map(one, wanted))
