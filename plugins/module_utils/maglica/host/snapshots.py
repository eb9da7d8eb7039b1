# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Snapshots of a VM, made, reverted and deleted by its host worker (`vm.snapshot`), and listed with their sizes
(`vm.snapshot_list`).

Internal qcow2 snapshots only: that is what Debian 12's libvirt 9.0 can create, revert and delete. A linked clone's
snapshot lives in its own overlay; the image's disk is never written. Without memory, a running guest's filesystems
are frozen through its guest agent around the snapshot (libvirt's QUIESCE flag is for external snapshots only)
and thawed in every case.

libvirt 9.0 keeps the memory of a running VM in any internal snapshot ("internal snapshot of a running VM must
include the memory state"): so `memory: false` on a running VM means "frozen first" - the disk state is consistent
on its own - and the guest is thawed again after a revert to it.

Reconciled after a restart: a snapshot that exists under the job's name is the job done (create), a snapshot that
is gone is the job done (delete); a guest a dead worker left frozen is thawed first."""

from __future__ import annotations

import json
import os
import subprocess
import time
import xml.etree.ElementTree as ET
from typing import Any, Dict, List, Optional, TypedDict
from xml.sax.saxutils import escape

from ..cluster import snapshots, virt
from ..cluster.domains import lookup
from ..cluster.snapshots import SnapshotInfo
from ..cluster.virt import Connect, Domain
from ..errors import ConflictError, HostError, NotFoundError

QEMU_IMG = 'qemu-img'
QEMU_IMG_TIMEOUT = 60
# How long the guest agent may take to freeze or thaw (seconds).
AGENT_TIMEOUT = 30
# After a revert to a running state: how long to keep asking the agent to thaw, and how often.
THAW_WAIT = 20
THAW_POLL_S = 0.5


class _SnapshotArgs(TypedDict):
    name: str  # the VM
    snapshot: str
    state: str  # present | absent | reverted


class SnapshotArgs(_SnapshotArgs, total=False):
    """A vm.snapshot job's args (messages.ACTIONS['vm.snapshot'])."""

    memory: bool
    description: str
    keep: int


class _SnapshotResult(TypedDict):
    name: str
    snapshot: str
    state: str
    changed: bool
    pruned: List[str]
    snapshots: List[str]  # the VM's snapshots afterwards, oldest first


class SnapshotResult(_SnapshotResult, total=False):
    """A vm.snapshot job's result data. consistency (create): memory | quiesced | crash | offline."""

    consistency: str
    memory: bool
    thawed: bool  # a revert thawed filesystems that were frozen when the snapshot was taken
    warnings: List[str]
    reconciled: bool


class ListArgs(TypedDict):
    """A vm.snapshot_list job's args."""

    name: str


class SnapshotEntry(SnapshotInfo):
    """A snapshot with its size: `size` the bytes of guest memory stored in it (qemu-img's vm-state-size, summed
    over the disks); an internal snapshot's disk clusters are shared with the live disk and have no size of their own."""

    size: int


class SnapshotListing(TypedDict):
    """A vm.snapshot_list job's result data: `disk_allocation` the bytes the VM's disk files take, snapshots included."""

    name: str
    snapshots: List[SnapshotEntry]
    disk_allocation: int
    warnings: List[str]


def _domain(conn: Connect, name: str, host: str) -> Domain:
    dom = lookup(conn, name)
    if dom is None:
        raise NotFoundError('no VM named %s on %s' % (name, host))
    return dom


def _check_vm(conn: Connect, dom: Domain, name: str, host: str) -> ET.Element:
    """The VM's persistent XML, once checked: not an original image (its disk backs clones and must stay as it is),
    and only what this libvirt can snapshot internally."""
    lv = virt.libvirt()
    info = virt.describe(dom, with_sizes=False)
    if virt.is_image(info):
        raise ConflictError('%s on %s is an original image: its disks back clones and are not snapshotted; '
                            'snapshot a clone instead' % (name, host))
    root = ET.fromstring(dom.XMLDesc(lv.VIR_DOMAIN_XML_INACTIVE))
    snapshots.check_internal_support(root, conn.getLibVersion(), name, host)
    return root


def _snapshot_xml(name: str, description: str, disks: List[str], memory: bool) -> str:
    parts = ['<domainsnapshot><name>%s</name>' % escape(name)]
    if description:
        parts.append('<description>%s</description>' % escape(description))
    parts.append('<memory snapshot="%s"/>' % ('internal' if memory else 'no'))
    parts.append('<disks>%s</disks>' % ''.join('<disk name="%s" snapshot="internal"/>' % escape(d) for d in disks))
    parts.append('</domainsnapshot>')
    return ''.join(parts)


def _disk_targets(root: ET.Element) -> List[str]:
    targets = []
    for disk in root.findall('./devices/disk'):
        target = disk.find('target')
        if disk.get('device', 'disk') == 'disk' and target is not None and target.get('dev'):
            targets.append(target.get('dev', ''))
    return targets


def _agent_timeout(dom: Domain) -> None:
    """Bound how long libvirt waits for the guest agent (its default is to wait for ever)."""
    lv = virt.libvirt()
    try:
        dom.agentSetResponseTimeout(AGENT_TIMEOUT, 0)
    except lv.libvirtError:
        pass  # no agent channel: the freeze that follows says so


def freeze(dom: Domain) -> bool:
    """Freeze the guest's filesystems through its agent: True when frozen, False when there is no agent to ask."""
    lv = virt.libvirt()
    _agent_timeout(dom)
    try:
        dom.fsFreeze(None, 0)
        return True
    except lv.libvirtError:
        return False


def thaw(dom: Domain, wait: float = 0) -> bool:
    """Thaw the guest's filesystems; harmless when none is frozen. True when the agent answered. With `wait`, ask
    again until it answers or `wait` seconds passed (after a revert, libvirt reconnects to the agent first)."""
    lv = virt.libvirt()
    _agent_timeout(dom)
    deadline = time.monotonic() + wait
    while True:
        try:
            dom.fsThaw(None, 0)
            return True
        except lv.libvirtError:
            if time.monotonic() >= deadline:
                return False
        time.sleep(THAW_POLL_S)  # polling the agent, within the deadline above


def _find(found: List[SnapshotInfo], name: str) -> Optional[SnapshotInfo]:
    return next((s for s in found if s['name'] == name), None)


def _delete(dom: Domain, name: str, what: str) -> None:
    snapshot = virt.call('cannot find snapshot %s of %s' % (name, what), dom.snapshotLookupByName, name, 0)
    virt.call('cannot delete snapshot %s of %s' % (name, what), snapshot.delete, 0)


def run_snapshot(conn: Connect, host: str, args: SnapshotArgs, reconcile: bool = False) -> SnapshotResult:
    """Create (state present), revert to (reverted) or delete (absent) the snapshot args['snapshot'] of the VM
    args['name']; with `keep`, prune the oldest beyond the newest `keep` after creating. Runs in the host worker."""
    name, wanted, state = args['name'], snapshots.check_name(args['snapshot']), args['state']
    what = '%s on %s' % (name, host)
    dom = _domain(conn, name, host)
    result: SnapshotResult = {'name': name, 'snapshot': wanted, 'state': state, 'changed': False, 'pruned': [],
                              'snapshots': [], 'warnings': []}
    if reconcile and dom.isActive() and state != 'absent':
        thaw(dom)  # a worker that died between freeze and thaw left the guest frozen
    found = snapshots.domain_snapshots(dom)
    existing = _find(found, wanted)
    version = conn.getLibVersion()
    if state == 'absent':
        if existing is not None:
            _delete(dom, wanted, what)
            result['changed'] = True
        elif reconcile:
            result['reconciled'] = True
    elif state == 'reverted':
        if existing is None:
            raise NotFoundError('%s has no snapshot named %s' % (what, wanted))
        snapshots.check_revert_support(existing, version, name, host)
        if reconcile and existing['current'] and dom.isActive() == (existing['state'] in ('running', 'paused')):
            result['reconciled'] = True  # reverted before the restart: once is enough
        else:
            snapshot = virt.call('cannot find snapshot %s of %s' % (wanted, what), dom.snapshotLookupByName, wanted, 0)
            virt.call('cannot revert %s to snapshot %s' % (what, wanted), dom.revertToSnapshot, snapshot, 0)
        result['changed'] = True
        if dom.isActive() and existing['memory']:
            # Taken frozen (memory: false on a running VM): its memory holds frozen filesystems.
            result['thawed'] = thaw(dom, wait=THAW_WAIT)
    else:
        root = _check_vm(conn, dom, name, host)
        if existing is None:
            active = bool(dom.isActive())
            memory = active  # libvirt 9.0: an internal snapshot of a running VM always holds its memory
            consistency = 'offline'
            frozen = False
            flags = 0
            try:
                if active and not args.get('memory'):
                    frozen = freeze(dom)
                    consistency = 'quiesced' if frozen else 'crash'
                    if not frozen:
                        result['warnings'].append('no guest agent answered: the snapshot is crash-consistent')
                elif active:
                    consistency = 'memory'
                xml = _snapshot_xml(wanted, args.get('description') or '', _disk_targets(root), memory)
                virt.call('cannot snapshot %s' % what, dom.snapshotCreateXML, xml, flags)
            finally:
                if frozen and not thaw(dom):
                    result['warnings'].append('the guest agent did not answer the thaw: check the guest\'s filesystems')
            result.update({'changed': True, 'consistency': consistency, 'memory': memory})
            if active and not args.get('memory'):
                result['warnings'].append('libvirt %s keeps the memory of a running VM in any internal snapshot: it '
                                          'was frozen first, so its disk state is consistent on its own'
                                          % snapshots.version_text(version))
        elif reconcile:
            result['reconciled'] = True
            result['memory'] = existing['memory']
        found = snapshots.domain_snapshots(dom)
        for old in snapshots.to_prune(found, args.get('keep'), wanted):
            _delete(dom, old, what)
            result['pruned'].append(old)
            result['changed'] = True
    result['snapshots'] = [s['name'] for s in snapshots.domain_snapshots(dom)]
    return result


# -- listing, with sizes ---------------------------------------------------------------------

def pool_disk(conn: Connect, path: str) -> Optional[str]:
    """`path` if it is a volume of one of the host's libvirt pools and lies inside that pool's directory (a path from
    a domain's XML picks no file by itself), else None."""
    lv = virt.libvirt()
    try:
        vol = conn.storageVolLookupByPath(path)
        pool = vol.storagePoolLookupByVolume()
    except lv.libvirtError:
        return None
    directory = ET.fromstring(pool.XMLDesc(0)).findtext('./target/path')
    real = os.path.realpath(vol.path())
    if not directory or os.path.dirname(real) != os.path.realpath(directory) or real != os.path.realpath(path):
        return None
    return real


def qemu_img_snapshots(path: str) -> List[Dict[str, Any]]:
    """The internal snapshots qemu-img reports of a qcow2 file (-U: the VM may run), parsed."""
    try:
        proc = subprocess.run([QEMU_IMG, 'info', '-U', '-f', 'qcow2', '--output=json', path], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, timeout=QEMU_IMG_TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise HostError('cannot run qemu-img info on %s: %s' % (path, e))
    if proc.returncode != 0:
        raise HostError('qemu-img info %s failed: %s' % (path, proc.stderr.decode('utf-8', 'replace').strip()[-300:]))
    try:
        info = json.loads(proc.stdout.decode('utf-8'))
    except ValueError:
        raise HostError('qemu-img info %s did not answer JSON' % path)
    entries = info.get('snapshots') if isinstance(info, dict) else None
    return [e for e in entries or [] if isinstance(e, dict)]


def list_snapshots(conn: Connect, host: str, name: str) -> SnapshotListing:
    """The VM's snapshots with the memory each holds (bytes), and its disks' allocation. Runs in the host worker."""
    dom = _domain(conn, name, host)
    found = snapshots.domain_snapshots(dom)
    sizes: Dict[str, int] = {s['name']: 0 for s in found}
    warnings: List[str] = []
    allocation = 0
    for disk in virt.describe(dom, with_sizes=False)['disks']:
        if disk['device'] != 'disk' or not disk['path']:
            continue
        path = pool_disk(conn, disk['path'])
        if path is None:
            warnings.append('disk %s is in no libvirt pool: its snapshots\' sizes are not read' % disk['target'])
            continue
        allocation += conn.storageVolLookupByPath(path).info()[2]
        if disk['format'] != 'qcow2':
            continue
        for entry in qemu_img_snapshots(path):
            size = entry.get('vm-state-size')
            tag = entry.get('name')
            if isinstance(tag, str) and tag in sizes and isinstance(size, int) and not isinstance(size, bool) and size >= 0:
                sizes[tag] += size
    listing: List[SnapshotEntry] = []
    for s in found:
        listing.append({'name': s['name'], 'creation_time': s['creation_time'], 'state': s['state'], 'memory': s['memory'],
                        'external': s['external'], 'description': s['description'], 'parent': s['parent'],
                        'current': s['current'], 'size': sizes[s['name']]})
    return {'name': name, 'snapshots': listing, 'disk_allocation': allocation, 'warnings': warnings}
