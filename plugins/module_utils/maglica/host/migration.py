# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A `vm.migrate` job, run by the SOURCE host's worker: move one VM to another host, without shared storage.

Live (a running VM): libvirt peer-to-peer. This host's libvirtd connects to the destination's with this host
worker's client certificate (the destination's libvirtd allows CN=host-worker@<this host>: the host_worker role's
host_worker_migration_peers), QEMU's migration stream is TLS (qemu.conf migrate_tls_x509_cert_dir, set up by the
role), and the disks are copied by QEMU over NBD (TLS too). The destination volumes are made here first, through the
destination's storage API (libvirt 9.0 cannot pre-create an overlay for an incremental copy, and what it pre-creates
itself it leaves behind when the migration fails): a linked clone's overlay, backed by the same image's disk at the
same path, when the destination holds that image (same name, disk path and virtual size); else a self-contained
volume that the copy fills with the whole chain.

Cold (a stopped VM): each disk file is streamed from this libvirtd to the destination's as the image copy does
(image_copy.stream_volume: sparse, then its sha256 checked against the destination's copy read back), internal
qcow2 snapshots travel inside the files, and the domain and its snapshots' metadata are defined on the destination
(snapshots redefined, parents first). External snapshots cannot travel: the migration is refused, naming them.

Every destination volume and the destination domain are recorded (clone.Ownership) before they are made. On
failure, or when a restarted worker finds the migration unfinished, they are removed and the VM stays (running)
where it was; a migration found complete is finished (the source's definition and disks removed).
"""

from __future__ import annotations

import contextlib
import os
import time
import xml.etree.ElementTree as ET
from typing import Dict, List, Optional, Tuple, TypedDict

from ..cluster import virt
from ..cluster.config import Config, Host
from ..cluster.domains import dependants, disk_users, lookup
from ..cluster.virt import Connect, Domain, Pool, Volume
from ..errors import ConflictError, HostError, MaglicaError, NotFoundError
from . import clone
from .image_copy import pool_for, stream_volume

# How long a restarted worker waits for a live migration that libvirtd is still running (its API call outlives us).
RECONCILE_WAIT = 1800.0
# Disk formats whose files a cold migration streams as they are (what a pool reports).
FORMATS = ('qcow2', 'raw')


class MigrateArgs(TypedDict):
    """A vm.migrate job's args (messages.ACTIONS['vm.migrate'])."""

    name: str
    destination: str  # a configured host, not this one
    live: bool  # True: the VM must run (libvirt live migration); False: it must be stopped (cold)


class MigratedDisk(TypedDict):
    target: str  # the guest's device (vda)
    path: str  # on the source; the same path on the destination
    copy: str  # 'overlay' (only the clone's overlay: the image is there) or 'full'
    bytes: int  # of data streamed (cold) or the volume's allocation on the source (live: QEMU copies it)


class _MigrateResult(TypedDict):
    name: str
    source: str
    destination: str
    live: bool
    disks: List[MigratedDisk]
    snapshots: List[str]


class MigrateResult(_MigrateResult, total=False):
    """A vm.migrate job's result data."""

    seconds: float
    migrate_s: float  # of `seconds`, libvirt's migration call alone (live)
    downtime_ms: int  # QEMU's own figure for the pause (live)
    reconciled: bool  # found finished after a restart


class _Disk(object):
    """One disk of the VM on the source, as this host's libvirt describes it, and what goes to the destination."""

    def __init__(self, target: str, path: str, fmt: str, capacity: int, allocation: int, backing: Optional[str]) -> None:
        self.target = target
        self.path = path
        self.format = fmt
        self.capacity = capacity
        self.allocation = allocation
        self.backing = backing  # the backing file's path (a linked clone's image disk), None for a self-contained disk
        self.overlay = False  # copy only the overlay: the destination holds the backing image at the same path


def _dest_key(destination: str, name: str) -> str:
    """The key of a destination object in this job's record (host names have no ':')."""
    return '%s:%s' % (destination, name)


def _escape(text: str) -> str:
    return text.replace('&', '&amp;').replace('<', '&lt;').replace('>', '&gt;').replace("'", '&apos;')


def _disks(conn: Connect, dom: Domain, name: str) -> List[_Disk]:
    """The VM's disks (file disks in a pool), parsed; anything else that cannot move is refused, naming it."""
    lv = virt.libvirt()
    root = ET.fromstring(dom.XMLDesc(lv.VIR_DOMAIN_XML_INACTIVE))
    found = []
    for disk in root.findall('./devices/disk'):
        device = disk.get('device', 'disk')
        source = disk.find('source')
        target = disk.find('target')
        path = source.get('file') if source is not None else None
        if source is None or (device != 'disk' and not path):
            continue  # an empty CD-ROM drive: nothing to move
        dev = target.get('dev') if target is not None else None
        if device != 'disk' or disk.get('type', 'file') != 'file' or not path or not dev:
            raise ConflictError('%s has a %s that is not a file disk (%s): eject or detach it before migrating'
                                % (name, device, path or disk.get('type')))
        try:
            vol = conn.storageVolLookupByPath(path)
        except lv.libvirtError:
            raise ConflictError('the disk %s of %s is in no storage pool: it cannot be migrated' % (path, name))
        vol_root = ET.fromstring(vol.XMLDesc(0))
        fmt = vol_root.find('./target/format')
        fmt_name = fmt.get('type') if fmt is not None else None
        if fmt_name not in FORMATS:
            raise ConflictError('the disk %s of %s is %s: only %s disks are migrated' % (path, name, fmt_name, ', '.join(FORMATS)))
        _type, capacity, allocation = vol.info()
        found.append(_Disk(dev, path, fmt_name or 'raw', int(capacity), int(allocation),
                           vol_root.findtext('./backingStore/path') or None))
    if not found:
        raise ConflictError('%s has no disk to migrate' % name)
    return found


def _image_of(conn: Connect, path: str) -> Optional[str]:
    """The original image (an inactive, non-clone domain) whose disk is `path` on this host, else None."""
    lv = virt.libvirt()
    for dom in conn.listAllDomains(0):
        try:
            info = virt.describe(dom, with_sizes=False)
        except lv.libvirtError as e:
            if e.get_error_code() == lv.VIR_ERR_NO_DOMAIN:
                continue  # undefined since the listing: another migration from this host (a drain runs several at once)
            raise
        if virt.is_image(info) and any(d['path'] == path for d in info['disks']):
            return str(info['name'])
    return None


def _same_image_there(src: Connect, dst: Connect, disk: _Disk) -> Optional[str]:
    """Why the destination cannot back this overlay with the same image, or None when it can: the same image
    name holds a disk at the same path there, of the same virtual size (both parsed from each side's libvirt)."""
    if disk.backing is None:
        raise HostError('%s has no backing file: it is not an overlay' % disk.path)
    lv = virt.libvirt()
    image = _image_of(src, disk.backing)
    if image is None:
        return 'its backing file %s is no original image\'s disk' % disk.backing
    there = lookup(dst, image)
    if there is None:
        return 'the image %s is not on the destination' % image
    info = virt.describe(there, with_sizes=False)
    if not virt.is_image(info) or not any(d['path'] == disk.backing for d in info['disks']):
        return 'the image %s on the destination has no disk at %s' % (image, disk.backing)
    try:
        here_size = int(src.storageVolLookupByPath(disk.backing).info()[1])
        there_size = int(dst.storageVolLookupByPath(disk.backing).info()[1])
    except lv.libvirtError as e:
        return 'the size of %s cannot be read: %s' % (disk.backing, virt.error_text(e))
    if here_size != there_size:
        return 'the image %s differs on the destination (%d bytes, here %d)' % (image, there_size, here_size)
    return None


def _snapshots(dom: Domain) -> List[Tuple[str, Optional[str], str, bool]]:
    """(name, parent, XML, is current) of each snapshot, parents before children."""
    lv = virt.libvirt()
    found = {}
    current = None
    if dom.hasCurrentSnapshot(0):
        current = dom.snapshotCurrent(0).getName()
    for snap in dom.listAllSnapshots(0):
        name = snap.getName()
        try:
            parent: Optional[str] = snap.getParent(0).getName()
        except lv.libvirtError:
            parent = None
        found[name] = (name, parent, snap.getXMLDesc(lv.VIR_DOMAIN_SNAPSHOT_XML_SECURE), name == current)
    ordered: List[Tuple[str, Optional[str], str, bool]] = []
    done: set = set()
    while len(ordered) < len(found):
        ready = sorted(n for n, item in found.items() if n not in done and (item[1] is None or item[1] in done or item[1] not in found))
        if not ready:  # a cycle cannot happen in libvirt's tree; never loop forever on a surprise
            ready = sorted(n for n in found if n not in done)
        for n in ready:
            ordered.append(found[n])
            done.add(n)
    return ordered


def _external_snapshots(snapshots: List[Tuple[str, Optional[str], str, bool]]) -> List[str]:
    """The snapshots whose data is outside the disk files (external disks or memory): they cannot travel."""
    external = []
    for name, _parent, xml, _current in snapshots:
        root = ET.fromstring(xml)
        memory = root.find('memory')
        kinds = [d.get('snapshot') for d in root.findall('./disks/disk')]
        if (memory is not None and memory.get('snapshot') == 'external') or 'external' in kinds:
            external.append(name)
    return external


def _create_volume(dst: Connect, pool: Pool, disk: _Disk, stream: bool) -> Volume:
    """The destination volume of `disk`: an empty raw file for a stream (cold: the file comes as it is), else a
    volume of the disk's format and capacity, backed by the same image disk when only the overlay is copied."""
    lv = virt.libvirt()
    name = _escape(os.path.basename(disk.path))
    if stream:
        xml = "<volume><name>%s</name><capacity>0</capacity><target><format type='raw'/></target></volume>" % name
    else:
        backing = ''
        if disk.overlay:
            backing = "<backingStore><path>%s</path><format type='qcow2'/></backingStore>" % _escape(disk.backing or '')
        xml = ("<volume><name>%s</name><capacity>%d</capacity><allocation>0</allocation>"
               "<target><format type='%s'/></target>%s</volume>" % (name, disk.capacity, disk.format, backing))
    try:
        return pool.createXML(xml, 0)
    except lv.libvirtError as e:
        raise HostError('cannot create the volume %s on the destination: %s' % (os.path.basename(disk.path), virt.error_text(e)))


def _dest_pool(dst: Connect, disk: _Disk, destination: str) -> Pool:
    """The destination pool for `disk`: the one whose directory is the disk's. The disk keeps its path, or the
    migration is refused (the destination's pool, which libvirt reports, never chooses a path)."""
    pool = pool_for(dst, os.path.dirname(disk.path))
    target = ET.fromstring(pool.XMLDesc(0)).findtext('./target/path') or ''
    if os.path.normpath(target) != os.path.normpath(os.path.dirname(disk.path)):
        raise ConflictError('%s has no storage pool in %s, where the disk %s goes' % (destination, os.path.dirname(disk.path), disk.path))
    return pool


def _volume_at(dst: Connect, path: str) -> Optional[Volume]:
    lv = virt.libvirt()
    try:
        return dst.storageVolLookupByPath(path)
    except lv.libvirtError:
        return None


def _remove_destination(dst: Connect, name: str, destination: str, ownership: clone.Ownership) -> None:
    """Remove from the destination what this job recorded making there: its domain (by the UUID recorded) and its
    volumes. Nothing else: a same-named domain or volume this job did not make stays."""
    lv = virt.libvirt()
    dom = lookup(dst, name)
    recorded = ownership.domains.get(_dest_key(destination, name))
    if dom is not None and recorded and dom.UUIDString() == recorded:
        try:
            if dom.isActive():
                dom.destroy()
            if dom.isPersistent():
                _undefine(dom)
        except lv.libvirtError as e:
            raise HostError('cannot remove the half-migrated %s from %s: %s' % (name, destination, virt.error_text(e)))
    prefix = destination + ':'
    for key in sorted(ownership.volumes):
        if not key.startswith(prefix):
            continue
        pool_name, _slash, volume = key[len(prefix):].partition('/')
        try:
            dst.storagePoolLookupByName(pool_name).storageVolLookupByName(volume).delete(0)
        except lv.libvirtError:
            pass  # never made, or gone already


def _undefine(dom: Domain) -> None:
    """Undefine a domain with what it has: its snapshots' metadata, its NVRAM file, its managed save."""
    lv = virt.libvirt()
    flags = 0
    if dom.snapshotNum(0) > 0:
        flags |= lv.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
    if ET.fromstring(dom.XMLDesc(lv.VIR_DOMAIN_XML_INACTIVE)).find('./os/nvram') is not None:
        flags |= getattr(lv, 'VIR_DOMAIN_UNDEFINE_NVRAM', 0)
    if dom.hasManagedSaveImage(0):
        flags |= getattr(lv, 'VIR_DOMAIN_UNDEFINE_MANAGED_SAVE', 0)
    dom.undefineFlags(flags)


def _finish_source(src: Connect, name: str, ownership: clone.Ownership) -> List[str]:
    """After a migration: the source's definition (if any is left) and the disks this job recorded go. Returns them."""
    dom = lookup(src, name)
    if dom is not None:
        if dom.isActive():
            raise HostError('%s still runs here after its migration' % name)
        _undefine(dom)
    files = sorted(ownership.files)
    shared = disk_users(src, files)
    deleted = []
    for path in files:
        if path not in shared and (os.path.lexists(path) or _volume_at(src, path) is not None):
            clone.delete_disk(src, path)
            deleted.append(path)
    return deleted


def _dest_xml(xml: str, full: List[_Disk]) -> str:
    """The domain XML for the destination: the disks copied whole lose their backing chain (their volume there is
    self-contained; libvirt reads the chain again from the files)."""
    root = ET.fromstring(xml)
    paths = set(d.path for d in full)
    for disk in root.findall('./devices/disk'):
        source = disk.find('source')
        if source is not None and source.get('file') in paths:
            for backing in disk.findall('backingStore'):
                disk.remove(backing)
    return ET.tostring(root, encoding='unicode')


def _result(name: str, source: str, destination: str, live: bool, disks: List[_Disk], snapshots: List[str],
            sent: Optional[Dict[str, int]] = None) -> MigrateResult:
    return {'name': name, 'source': source, 'destination': destination, 'live': live, 'snapshots': snapshots,
            'disks': [{'target': d.target, 'path': d.path, 'copy': 'overlay' if d.overlay else 'full',
                       'bytes': (sent or {}).get(d.path, d.allocation)} for d in disks]}


def _reconcile(src: Connect, dst: Connect, args: MigrateArgs, source: str, ownership: clone.Ownership) -> MigrateResult:
    """A restarted worker found this job running: finish a migration that completed, roll back one that did not."""
    lv = virt.libvirt()
    name, destination, live = args['name'], args['destination'], args['live']
    dom = lookup(src, name)
    deadline = time.monotonic() + RECONCILE_WAIT
    while dom is not None and live and time.monotonic() < deadline:
        # libvirtd runs a peer-to-peer migration to its end even when the worker that asked is gone.
        try:
            if dom.jobInfo()[0] == lv.VIR_DOMAIN_JOB_NONE:
                break
        except lv.libvirtError:
            break  # the domain went away (undefined with the migration's success)
        time.sleep(1.0)
        dom = lookup(src, name)
    there = lookup(dst, name)
    recorded = ownership.domains.get(_dest_key(destination, name))
    ours_there = there is not None and bool(recorded) and there.UUIDString() == recorded
    if live:
        done = (there is not None and ours_there and bool(there.isActive()) and bool(there.isPersistent())
                and (dom is None or not dom.isActive()))
    else:
        done = 'defined' in ownership.notes and ours_there
    if done:
        _finish_source(src, name, ownership)
        result: MigrateResult = {'name': name, 'source': source, 'destination': destination, 'live': live, 'disks': [],
                                 'snapshots': [], 'reconciled': True}
        return result
    _remove_destination(dst, name, destination, ownership)
    if dom is not None and live and dom.isActive() and dom.state()[0] == lv.VIR_DOMAIN_PAUSED:
        dom.resume()
    raise HostError('the migration of %s to %s was interrupted by a worker restart: rolled back, %s stays on %s'
                    % (name, destination, name, source))


def migrate(config: Config, host: Host, args: MigrateArgs, reconcile: bool = False,
            ownership: Optional[clone.Ownership] = None) -> MigrateResult:
    """Runs in the source's host worker: migrate args['name'] to args['destination'] (see the module docstring)."""
    ownership = ownership if ownership is not None else clone.Ownership()
    name, destination, live = args['name'], args['destination'], args['live']
    if destination == host.name:
        raise ConflictError('%s is the source of the migration of %s, not a destination' % (destination, name))
    dest_host = config.host(destination)
    with contextlib.ExitStack() as stack:
        src = stack.enter_context(virt.Connection(config, host))
        try:
            dst = stack.enter_context(virt.Connection(config, dest_host))
        except HostError as e:
            raise HostError('%s (a migration reaches %s\'s libvirtd with the certificate of host-worker@%s; %s allows it '
                            'only when %s is in its host_worker_migration_peers, see the host_worker role)'
                            % (e, destination, host.name, destination, host.name))
        if reconcile:
            return _reconcile(src, dst, args, host.name, ownership)
        started = time.monotonic()
        if live:
            result = _migrate_live(config, src, dst, dest_host, host.name, args, ownership)
        else:
            result = _migrate_cold(src, dst, host.name, args, ownership)
        result['seconds'] = round(time.monotonic() - started, 3)
        return result


def _check_movable(src: Connect, dst: Connect, name: str, source: str, destination: str, live: bool) -> Domain:
    dom = lookup(src, name)
    if dom is None:
        raise NotFoundError('no VM named %s on %s' % (name, source))
    info = virt.describe(dom, with_sizes=False)
    if virt.is_image(info):
        raise ConflictError('%s on %s is an original image, not a VM: images are copied (maglica_image), not migrated' % (name, source))
    found = dependants(src, name)
    if found:
        raise ConflictError('the disks of %s back linked clones on %s (%s): it cannot leave them' % (name, source, ', '.join(found)))
    if live and not dom.isActive():
        raise ConflictError('%s is not running on %s: a live migration needs a running VM (migrate it cold)' % (name, source))
    if not live and dom.isActive():
        raise ConflictError('%s is running on %s: a cold migration needs a stopped VM (migrate it live)' % (name, source))
    if not dom.isPersistent():
        raise ConflictError('%s on %s is a transient domain: only defined VMs are migrated' % (name, source))
    if lookup(dst, name) is not None:
        raise ConflictError('a domain named %s already exists on %s' % (name, destination))
    return dom


def _plan_disks(src: Connect, dst: Connect, name: str, dom: Domain, destination: str, live: bool) -> List[_Disk]:
    """The VM's disks, each marked overlay (only the overlay goes) or full; the destination paths must be free."""
    disks = _disks(src, dom, name)
    why_not = []
    for disk in disks:
        if disk.backing is not None:
            why = _same_image_there(src, dst, disk)
            disk.overlay = why is None
            if why is not None:
                why_not.append('%s (%s)' % (disk.path, why))
        if _volume_at(dst, disk.path) is not None or _dest_pool(dst, disk, destination) is None:
            raise ConflictError('the disk %s of %s already exists on %s' % (disk.path, name, destination))
    if why_not and not live:
        # A stopped VM's files travel as they are; an overlay without its image there would dangle.
        raise ConflictError('%s cannot be migrated cold to %s: %s. Copy the image there first (maglica_image), '
                            'or migrate it while it runs (its chain is then copied whole)' % (name, destination, '; '.join(why_not)))
    return disks


def _make_volumes(dst: Connect, disks: List[_Disk], destination: str, ownership: clone.Ownership,
                  stream: bool) -> Dict[str, Volume]:
    made = {}
    for disk in disks:
        pool = _dest_pool(dst, disk, destination)
        ownership.intend_volume(_dest_key(destination, pool.name()), os.path.basename(disk.path))
        made[disk.path] = _create_volume(dst, pool, disk, stream)
    return made


def _migrate_live(config: Config, src: Connect, dst: Connect, dest_host: Host, source: str, args: MigrateArgs,
                  ownership: clone.Ownership) -> MigrateResult:
    lv = virt.libvirt()
    name, destination = args['name'], args['destination']
    dom = _check_movable(src, dst, name, source, destination, True)
    snapshots = [s[0] for s in _snapshots(dom)]
    if snapshots:
        # libvirt 9.0 refuses ("cannot migrate domain with N snapshots"), and QEMU's disk copy would not carry them.
        raise ConflictError('%s has snapshots (%s): a live migration cannot take them along; stop it and migrate it '
                            'cold (internal snapshots travel then), or delete them first' % (name, ', '.join(snapshots)))
    disks = _plan_disks(src, dst, name, dom, destination, True)
    # An incremental copy (only the top of each chain) where an overlay goes alone; else every disk is copied whole,
    # as `virsh migrate --copy-storage-all` does (one flag for all disks: then no overlay is made for any).
    incremental = any(d.overlay for d in disks) and all(d.overlay or d.backing is None for d in disks)
    if not incremental:
        for disk in disks:
            disk.overlay = False
    for disk in disks:
        ownership.intend_file(disk.path)  # the source's disks, deleted once the VM runs on the destination
    ownership.intend_domain(_dest_key(destination, name), dom.UUIDString())
    try:
        _make_volumes(dst, disks, destination, ownership, stream=False)
        flags = (lv.VIR_MIGRATE_LIVE | lv.VIR_MIGRATE_PEER2PEER | lv.VIR_MIGRATE_PERSIST_DEST | lv.VIR_MIGRATE_UNDEFINE_SOURCE
                 | lv.VIR_MIGRATE_TLS | (lv.VIR_MIGRATE_NON_SHARED_INC if incremental else lv.VIR_MIGRATE_NON_SHARED_DISK))
        full = [d for d in disks if not d.overlay]
        params = {
            lv.VIR_MIGRATE_PARAM_MIGRATE_DISKS: [d.target for d in disks],
            lv.VIR_MIGRATE_PARAM_DEST_XML: _dest_xml(dom.XMLDesc(lv.VIR_DOMAIN_XML_MIGRATABLE | lv.VIR_DOMAIN_XML_SECURE), full),
            lv.VIR_MIGRATE_PARAM_PERSIST_XML: _dest_xml(dom.XMLDesc(lv.VIR_DOMAIN_XML_MIGRATABLE | lv.VIR_DOMAIN_XML_SECURE
                                                                    | lv.VIR_DOMAIN_XML_INACTIVE), full),
        }
        # The destination libvirtd, as this host worker reaches it: its address and this worker's client certificate.
        dconnuri = config.uri(dest_host)
        began = time.monotonic()
        try:
            dom.migrateToURI3(dconnuri, params, flags)
        except lv.libvirtError as e:
            raise HostError('the live migration of %s to %s failed: %s' % (name, destination, virt.error_text(e)))
        there = lookup(dst, name)
        if there is None or not there.isActive():
            raise HostError('%s does not run on %s after its migration' % (name, destination))
        downtime = _downtime(there)
        migrate_s = time.monotonic() - began
    except BaseException:
        _rollback(src, dst, name, destination, ownership)
        raise
    ownership.note('migrated')
    _finish_source(src, name, ownership)
    result = _result(name, source, destination, True, disks, [])
    result['migrate_s'] = round(migrate_s, 3)
    if downtime is not None:
        result['downtime_ms'] = downtime
    return result


def _downtime(dom: Domain) -> Optional[int]:
    """QEMU's measured pause of the finished migration (ms), as the destination keeps it; None when not told."""
    lv = virt.libvirt()
    try:
        value = dom.jobStats(lv.VIR_DOMAIN_JOB_STATS_COMPLETED).get('downtime')
    except lv.libvirtError:
        return None
    return int(value) if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 10 ** 9 else None


def _rollback(src: Connect, dst: Connect, name: str, destination: str, ownership: clone.Ownership) -> None:
    """Leave nothing on the destination; the VM stays on the source (libvirt resumes it after a failed live
    migration; resumed here too, should it be left paused)."""
    lv = virt.libvirt()
    try:
        _remove_destination(dst, name, destination, ownership)
    except MaglicaError:
        pass  # the original failure is the one to report; what stays is in the record for the next attempt
    dom = lookup(src, name)
    try:
        if dom is not None and dom.isActive() and dom.state()[0] == lv.VIR_DOMAIN_PAUSED:
            dom.resume()
    except lv.libvirtError:
        pass


def _migrate_cold(src: Connect, dst: Connect, source: str, args: MigrateArgs, ownership: clone.Ownership) -> MigrateResult:
    lv = virt.libvirt()
    name, destination = args['name'], args['destination']
    dom = _check_movable(src, dst, name, source, destination, False)
    snapshots = _snapshots(dom)
    external = _external_snapshots(snapshots)
    if external:
        raise ConflictError('%s has external snapshots (%s): their files are not its disks and cannot travel with it; '
                            'delete them before migrating' % (name, ', '.join(external)))
    disks = _plan_disks(src, dst, name, dom, destination, False)
    xml = dom.XMLDesc(lv.VIR_DOMAIN_XML_INACTIVE | lv.VIR_DOMAIN_XML_SECURE)
    for disk in disks:
        ownership.intend_file(disk.path)
    ownership.intend_domain(_dest_key(destination, name), dom.UUIDString())
    sent: Dict[str, int] = {}
    try:
        made = _make_volumes(dst, disks, destination, ownership, stream=True)
        for disk in disks:
            src_vol = src.storageVolLookupByPath(disk.path)
            sent[disk.path] = stream_volume(src, src_vol, dst, made[disk.path], verify=True)
        for pool_name in set(v.storagePoolLookupByVolume().name() for v in made.values()):
            dst.storagePoolLookupByName(pool_name).refresh(0)
        try:
            there = dst.defineXML(xml)
            for _snap, _parent, snap_xml, current in snapshots:
                flags = lv.VIR_DOMAIN_SNAPSHOT_CREATE_REDEFINE | (lv.VIR_DOMAIN_SNAPSHOT_CREATE_CURRENT if current else 0)
                there.snapshotCreateXML(snap_xml, flags)
        except lv.libvirtError as e:
            raise HostError('cannot define %s on %s: %s' % (name, destination, virt.error_text(e)))
        ownership.note('defined')
    except BaseException as failure:
        _rollback(src, dst, name, destination, ownership)
        if isinstance(failure, lv.libvirtError):
            raise HostError('the cold migration of %s to %s failed: %s' % (name, destination, virt.error_text(failure)))
        raise
    _finish_source(src, name, ownership)
    return _result(name, source, destination, False, disks, [s[0] for s in snapshots], sent)
