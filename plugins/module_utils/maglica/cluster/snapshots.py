# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What a host's libvirt says about a VM's snapshots, and what that libvirt can do with them.

Read-only and pure where it can be: the controller plans with it (check mode, idempotence) and the host worker
checks again before it acts. Snapshot XML comes from a libvirtd and names chosen by users: both are parsed here,
never used as they come."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import List, Optional, TypedDict

from ..errors import ConflictError, MaglicaError
from ..protocol import messages
from . import virt
from .virt import Domain

# A snapshot name (a qcow2 snapshot tag and a libvirt name: an allow-list, like VM names), a description (one line of
# printable text) and the states asked for: the job protocol's, one definition.
SNAPSHOT_NAME_RE = messages.SNAPSHOT_NAME_RE
DESCRIPTION_RE = messages.SNAPSHOT_DESCRIPTION_RE
STATES = messages.SNAPSHOT_STATES
# libvirt versions (getLibVersion: major * 1000000 + minor * 1000 + release) that day-two features need.
EXTERNAL_REVERT_VERSION = 9009000  # reverting external snapshots
PFLASH_INTERNAL_VERSION = 10009000  # internal snapshots of UEFI (pflash) VMs


class SnapshotInfo(TypedDict):
    """One snapshot as libvirt describes it (parse_snapshot): `memory` whether the guest's RAM is in it, `state`
    the VM's state when it was taken, `external` whether any part lies outside the VM's own disk files."""

    name: str
    creation_time: int
    state: str
    memory: bool
    external: bool
    description: str
    parent: Optional[str]
    current: bool


def version_text(version: int) -> str:
    return '%d.%d.%d' % (version // 1000000, version // 1000 % 1000, version % 1000)


def check_name(name: object, what: str = 'snapshot name') -> str:
    """A snapshot name from a user or the network, parsed before anything else looks at it."""
    if not isinstance(name, str) or not SNAPSHOT_NAME_RE.fullmatch(name):
        raise MaglicaError('the %s %r is not valid: use 1 to 63 letters, digits and . _ + -, starting with a letter or '
                           'digit' % (what, str(name)[:80]))
    return name


def check_description(description: object) -> str:
    if not isinstance(description, str) or not DESCRIPTION_RE.fullmatch(description):
        raise MaglicaError('the snapshot description must be one line of at most 1024 characters, without control '
                           'characters')
    return description


def parse_snapshot(xml: str, current: bool = False) -> SnapshotInfo:
    """A snapshot's XML (virDomainSnapshotGetXMLDesc) as a SnapshotInfo; its name checked like a user's."""
    root = ET.fromstring(xml)
    name = check_name(root.findtext('name'), 'snapshot name libvirt reported')
    try:
        created = int(root.findtext('creationTime') or 0)
    except ValueError:
        created = 0
    memory = root.find('memory')
    memory_kind = memory.get('snapshot') if memory is not None else None
    state = root.findtext('state') or 'unknown'
    disks = [d.get('snapshot') for d in root.findall('./disks/disk')]
    external = memory_kind == 'external' or 'external' in disks or state == 'disk-snapshot'
    # An internal snapshot of a running VM holds its memory whether or not <memory> says so (libvirt < 1.0.1).
    has_memory = memory_kind in ('internal', 'external') or (memory_kind is None and state in ('running', 'paused'))
    return {'name': name, 'creation_time': created, 'state': state, 'memory': has_memory, 'external': external,
            'description': (root.findtext('description') or '')[:1024], 'parent': root.findtext('./parent/name'),
            'current': current}


def domain_snapshots(dom: Domain) -> List[SnapshotInfo]:
    """The VM's snapshots, oldest first (by creation time, then name)."""
    lv = virt.libvirt()
    current = None
    try:
        if dom.hasCurrentSnapshot(0):
            current = dom.snapshotCurrent(0).getName()
    except lv.libvirtError:
        current = None
    found = [parse_snapshot(s.getXMLDesc(0), current=s.getName() == current) for s in dom.listAllSnapshots(0)]
    found.sort(key=lambda s: (s['creation_time'], s['name']))
    return found


def uses_pflash(root: ET.Element) -> bool:
    """Whether the domain boots UEFI from pflash (a loader of type pflash, or an NVRAM file)."""
    os_element = root.find('./os')
    if os_element is None:
        return False
    loader = os_element.find('loader')
    return (loader is not None and loader.get('type') == 'pflash') or os_element.find('nvram') is not None \
        or os_element.get('firmware') == 'efi'


def check_internal_support(root: ET.Element, version: int, name: str, host: str) -> None:
    """Refuse, naming the reason, what this libvirt cannot snapshot internally: a UEFI (pflash) VM before libvirt
    10.9, a disk that is not qcow2 (raw cannot hold internal snapshots), a disk that is no file."""
    if uses_pflash(root) and version < PFLASH_INTERNAL_VERSION:
        needed, found = version_text(PFLASH_INTERNAL_VERSION), version_text(version)
        raise ConflictError('%s on %s boots UEFI from pflash: internal snapshots of such VMs need libvirt %s or '
                            'later, and this host has libvirt %s' % (name, host, needed, found))
    for disk in root.findall('./devices/disk'):
        if disk.get('device', 'disk') != 'disk':
            continue  # CD-ROMs and floppies are read-only: libvirt leaves them out of snapshots
        target = disk.find('target')
        dev = target.get('dev') if target is not None else '?'
        driver = disk.find('driver')
        fmt = driver.get('type') if driver is not None else None
        if fmt != 'qcow2':
            raise ConflictError('%s on %s: its disk %s is %s, not qcow2: only qcow2 disks can hold internal snapshots'
                                % (name, host, dev, fmt or 'of no stated format'))
        if disk.get('type', 'file') not in ('file', 'volume'):
            raise ConflictError('%s on %s: its disk %s is a %s disk: internal snapshots need qcow2 files'
                                % (name, host, dev, disk.get('type')))


def check_revert_support(snapshot: SnapshotInfo, version: int, name: str, host: str) -> None:
    if snapshot['external'] and version < EXTERNAL_REVERT_VERSION:
        needed, found = version_text(EXTERNAL_REVERT_VERSION), version_text(version)
        raise ConflictError('snapshot %s of %s on %s is external: reverting external snapshots needs libvirt %s or '
                            'later, and this host has libvirt %s' % (snapshot['name'], name, host, needed, found))


def to_prune(snapshots: List[SnapshotInfo], keep: Optional[int], spare: str) -> List[str]:
    """The oldest snapshots beyond the newest `keep` (never `spare`, the one just asked for)."""
    if not keep:
        return []
    others = [s['name'] for s in snapshots if s['name'] != spare]
    excess = len(others) + 1 - keep  # `spare` counts as one, made already or about to be
    return others[:max(0, excess)]
