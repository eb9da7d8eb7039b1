# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The life of one VM, wherever it runs: listing, state changes and settings.

State changes and settings (vcpus, memory, CD-ROM, boot device) go straight to
the host's libvirtd. What touches the host's disks goes through its host worker:
removal (`vm.remove`) and adding a disk (`vm.attach_disk`).

Settings are written to the persistent definition; on a running VM they take
effect at its next start, which the result reports as `restart_required`.
"""

from __future__ import annotations

import os
import re
import xml.etree.ElementTree as ET
from typing import List, Optional, TypedDict

from ..cluster import virt
from ..cluster.virt import Connect
from ..errors import ConflictError, HostError, NotFoundError
from . import clone

STATES = ('running', 'stopped', 'destroyed', 'absent')
BOOT_DEVICES = ('hd', 'cdrom', 'network', 'fd')
SIZE_RE = re.compile(r'\s*(\d+(?:\.\d+)?)\s*([KMGTP]?)(i?B)?\s*', re.I)
UNIT_POWERS = {'': 2, 'K': 1, 'M': 2, 'G': 3, 'T': 4, 'P': 5}
MIB = 1048576
DISK_NAME_RE = re.compile(r'[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}')
# diskN: what clone_disk_paths names a clone's further disks.
CLONE_DISK_RE = re.compile(r'disk[0-9]+')
POLL_S = 0.2


# -- the host worker's side ---------------------------------------------------------------

class AttachDiskArgs(TypedDict):
    """A vm.attach_disk job's args (messages.ACTIONS['vm.attach_disk']): a new volume of `size` bytes for VM `name`."""

    name: str
    volume: str
    size: int


class AttachedDisk(TypedDict):
    """A vm.attach_disk job's result data."""

    name: str
    volume: str
    path: Optional[str]
    target: Optional[str]  # the disk's device in the guest (vdb...)
    created: bool  # False: the volume was attached already


class _ConsoleArgs(TypedDict):
    name: str


class ConsoleArgs(_ConsoleArgs, total=False):
    """A vm.console job's args (messages.ACTIONS['vm.console'])."""

    lines: int


class ConsoleTail(TypedDict):
    """A vm.console job's result data: the last lines of the VM's console log, at `path` (None: it logs none)."""

    name: str
    path: Optional[str]
    lines: List[str]


def attach_disk(conn: Connect, host: str, args: AttachDiskArgs, reconcile: bool = False,
                ownership: Optional[clone.Ownership] = None) -> AttachedDisk:
    """Create a qcow2 volume of args['size'] bytes beside the VM's first disk and attach it (persistent config).

    Runs in the host worker. Idempotent: a volume already attached is reported, not made again;
    a volume this job made but could not attach is deleted.
    """
    lv = virt.libvirt()
    ownership = ownership if ownership is not None else clone.Ownership()
    name, volume, size = args['name'], args['volume'], args['size']
    try:
        dom = conn.lookupByName(name)
    except lv.libvirtError:
        raise NotFoundError('no VM named %s on %s' % (name, host))
    root = ET.fromstring(dom.XMLDesc(lv.VIR_DOMAIN_XML_INACTIVE))
    disks = root.findall("./devices/disk[@device='disk']")
    for disk in disks:
        source = disk.find('source')
        if source is not None and os.path.basename(source.get('file') or '') == volume:
            target_element = disk.find('target')
            return {'name': name, 'volume': volume, 'path': source.get('file'),
                    'target': target_element.get('dev') if target_element is not None else None, 'created': False}
    pool = None
    for disk in disks:
        source = disk.find('source')
        if source is not None and source.get('file'):
            try:
                pool = conn.storageVolLookupByPath(source.get('file')).storagePoolLookupByVolume()
                break
            except lv.libvirtError:
                continue
    if pool is None:
        try:
            pool = conn.storagePoolLookupByName('default')
        except lv.libvirtError:
            raise HostError('%s has no disk in a storage pool and %s has no pool called default' % (name, host))
    created = False
    try:
        vol = pool.storageVolLookupByName(volume)
    except lv.libvirtError:
        vol = None
    if vol is not None and not (reconcile and ownership.owns_volume(pool.name(), volume)):
        raise ConflictError('the volume %s already exists in pool %s on %s and is not attached to %s' % (volume, pool.name(), host, name))
    if vol is None:
        ownership.intend_volume(pool.name(), volume)
        vol_xml = ('<volume><name>%s</name><capacity unit="bytes">%d</capacity><allocation>0</allocation>'
                   '<target><format type="qcow2"/></target></volume>' % (volume, size))
        try:
            vol = pool.createXML(vol_xml, 0)
        except lv.libvirtError as e:
            raise HostError('cannot create the volume %s on %s: %s' % (volume, host, virt.error_text(e)))
        created = True
    used = set(t.get('dev') for t in root.findall('./devices/disk/target'))
    target = next('vd' + c for c in 'bcdefghijklmnopqrstuvwxyz' if 'vd' + c not in used)
    path = vol.path()
    disk_xml = ("<disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='%s'/>"
                "<target dev='%s' bus='virtio'/></disk>" % (path.replace("'", '&apos;'), target))
    try:
        dom.attachDeviceFlags(disk_xml, lv.VIR_DOMAIN_AFFECT_CONFIG)
    except lv.libvirtError as e:
        if created:
            try:
                vol.delete(0)
            except lv.libvirtError:
                pass
        raise HostError('cannot attach %s to %s on %s: %s' % (volume, name, host, virt.error_text(e)))
    return {'name': name, 'volume': volume, 'path': path, 'target': target, 'created': created}


CONSOLE_MAX_BYTES = 64 * 1024


def console_tail(conn: Connect, name: str, lines: int = 40) -> ConsoleTail:
    """The last `lines` lines of a domain's serial console log, read where the host worker runs (the log is a file
    of the hypervisor's). Returns {name, path, lines}; an empty list when the domain logs no console."""
    dom = virt.call('cannot look up %s' % name, conn.lookupByName, name)
    root = ET.fromstring(dom.XMLDesc(0))
    paths = [str(log.get('file')) for log in root.findall('./devices/serial/log') + root.findall('./devices/console/log')
             if log.get('file')]
    if not paths:
        return {'name': name, 'path': None, 'lines': []}
    try:
        with open(paths[0], 'rb') as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - CONSOLE_MAX_BYTES))
            text = handle.read().decode('utf-8', 'replace')
    except FileNotFoundError:
        return {'name': name, 'path': paths[0], 'lines': []}
    except OSError as e:
        raise HostError('cannot read the console log %s of %s: %s' % (paths[0], name, e.strerror or e))
    # Terminal control sequences and carriage returns say nothing to a reader of an error message.
    text = re.sub(r'\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Za-z0-9]|\r', '', text)
    return {'name': name, 'path': paths[0], 'lines': [l for l in text.splitlines() if l.strip()][-lines:]}
