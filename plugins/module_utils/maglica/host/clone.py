# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Making and removing clones on the host the worker runs on.

full:   a copy of each disk. For disks in libvirt storage pools (the usual case) a file copy, a
        reflink where the filesystem can (or libvirt's volume copy for disks with a backing file),
        and the clone's definition made here: no virt-clone start-up. Disks outside any pool are
        cloned by virt-clone.
linked: a qcow2 overlay on each of the image's disks, made through libvirt's storage API.
A clone that fails midway is removed with every disk it created.
"""

from __future__ import annotations

import os
import subprocess
import threading
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import (
    Any,
    Callable,
    Dict,
    Iterable,
    List,
    Optional,
    Sequence,
    Set,
    Tuple,
    TypedDict,
    Union,
)

from ..cluster import virt
from ..cluster.domains import clone_disk_paths, disk_users, in_pool, lookup
from ..cluster.virt import Connect, Domain, Pool, Volume
from ..errors import ConflictError, HostError, MaglicaError, NotFoundError
from . import batching, spares
from .customize import Customization
from .disk_files import copy_sparse
from .guest import GuestSettings, Network

VIRT_CLONE = os.environ.get('MAGLICA_VIRT_CLONE', 'virt-clone')
VIRT_CLONE_TIMEOUT = 3600
# libvirt refuses a pool refresh while another volume of the pool is being built ("pool has asynchronous
# jobs running"), which virt-clone does: the volume-making step of concurrent clones takes turns. The
# copies would share the disk's bandwidth anyway; customisation, the long part, still runs at once.
VOLUME_LOCK = threading.Lock()


class Batch(TypedDict):
    """A batch of clones submitted together (messages.BATCH): `size` of its jobs go to this host."""

    id: str
    size: int


class _CloneArgs(TypedDict):
    image: str
    hostname: str
    clone_mode: str  # full or linked
    start: bool


class NotCustomized(TypedDict):
    """The customization of a clone made with customize false: nothing was written into it."""
    customized: bool


class CloneArgs(_CloneArgs, total=False):
    """A vm.clone job's args (messages.ACTIONS['vm.clone'])."""

    network: Network
    root_password_hash: str
    ssh_authorized_keys: List[str]
    cloud_init_user_data: str
    spread_group: str
    batch: Batch
    customize: bool  # false: the disks stay the image's


class _CloneResult(TypedDict):
    hostname: str
    ssh_host_keys: List[str]  # public halves only, for known_hosts
    domain: Dict[str, Any]  # virt.describe of the clone


class CloneResult(_CloneResult, total=False):
    """A vm.clone job's result data: the clone made, or (reconciled) found complete after a restart."""

    reconciled: bool
    image: str
    clone_mode: str
    customization: Union[Customization, NotCustomized]


# A disk of the clone: (the image's disk, as virt.describe gives it; the clone's path for it).
Target = Tuple[Dict[str, Any], str]
# ... when the image's disk is a pool volume: (disk, the clone's path, the image's volume, its pool).
PoolVolume = Tuple[Dict[str, Any], str, Volume, Pool]


@dataclass
class Ownership:
    """What one job has said it makes: files (and volumes, as POOL/NAME) and domains (name -> UUID, None when
    virt-clone chose it). `save(kind, key, detail)` writes each intent durably - the host worker's record - BEFORE
    the thing is made, and only after its absence was checked. So a job restarted midway removes what it made and
    nothing else: never a file of another domain, an image's, or another job's."""

    files: Set[str] = field(default_factory=set)
    volumes: Set[str] = field(default_factory=set)
    domains: Dict[str, Optional[str]] = field(default_factory=dict)
    # Steps a job has recorded as done (`note`): a restarted job reads how far it got (host/migration.py).
    notes: Set[str] = field(default_factory=set)
    save: Optional[Callable[[str, str, str], None]] = None

    def _save(self, kind: str, key: str, detail: str = '') -> None:
        if self.save is not None:
            self.save(kind, key, detail)

    def intend_file(self, path: str) -> None:
        if path not in self.files:
            self._save('file', path)
            self.files.add(path)

    def intend_volume(self, pool: str, name: str) -> None:
        key = '%s/%s' % (pool, name)
        if key not in self.volumes:
            self._save('volume', key)
            self.volumes.add(key)

    def intend_domain(self, name: str, domain_uuid: Optional[str]) -> None:
        self._save('domain', name, domain_uuid or '')
        self.domains[name] = domain_uuid

    def note(self, step: str) -> None:
        """Record that `step` is done (durably, like an intent)."""
        if step not in self.notes:
            self._save('note', step)
            self.notes.add(step)

    def owns_volume(self, pool: str, name: str) -> bool:
        return '%s/%s' % (pool, name) in self.volumes

    def owns_domain(self, dom: Domain) -> bool:
        """Whether `dom` is the domain this job made: the UUID it recorded (a domain of the same name is not enough)."""
        name = dom.name()
        if name not in self.domains:
            return False
        if self.domains[name]:
            return dom.UUIDString() == self.domains[name]
        # virt-clone chose the UUID and the worker died before recording it: the recorded disks, exactly, tell.
        disks = sorted(d['path'] for d in virt.describe(dom, with_sizes=False)['disks'] if d['device'] == 'disk' and d['path'])
        return bool(disks) and set(disks) <= self.files

    @classmethod
    def from_rows(cls, rows: Iterable[Tuple[str, str, str]],
                  save: Optional[Callable[[str, str, str], None]] = None) -> 'Ownership':
        """From recorded (kind, key, detail) rows."""
        owned = cls(save=save)
        for kind, key, detail in rows:
            if kind == 'file':
                owned.files.add(key)
            elif kind == 'volume':
                owned.volumes.add(key)
            elif kind == 'domain':
                owned.domains[key] = detail or None
            elif kind == 'note':
                owned.notes.add(key)
        return owned


def delete_disk(conn: Connect, path: str) -> None:
    """Delete a disk file through libvirt's storage API when a pool holds it, else directly."""
    lv = virt.libvirt()
    try:
        vol = conn.storageVolLookupByPath(path)
        vol.delete(0)
        return
    except lv.libvirtError:
        pass
    if os.path.lexists(path):
        os.unlink(path)


def remove_domain(conn: Connect, name: str, disk_paths: Optional[Iterable[str]] = None) -> List[str]:
    """Destroy (if running) and undefine a domain and delete its disks - not those another domain's definition
    uses too. Returns the disks deleted."""
    lv = virt.libvirt()
    dom = lookup(conn, name)
    paths = list(disk_paths or [])
    if dom is not None:
        info = virt.describe(dom, with_sizes=False)
        paths.extend(d['path'] for d in info['disks'] if d['device'] == 'disk' and d['path'] and d['path'] not in paths)
        try:
            if dom.isActive():
                dom.destroy()
            # Its snapshots' metadata goes too (libvirt refuses otherwise; internal snapshots live in the disks
            # deleted below), and its NVRAM file when it has one.
            flags = getattr(lv, 'VIR_DOMAIN_UNDEFINE_MANAGED_SAVE', 0) | lv.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
            if ET.fromstring(dom.XMLDesc(lv.VIR_DOMAIN_XML_INACTIVE)).find('./os/nvram') is not None:
                flags |= getattr(lv, 'VIR_DOMAIN_UNDEFINE_NVRAM', 0)
            dom.undefineFlags(flags)
        except lv.libvirtError as e:
            raise HostError('cannot remove domain %s: %s' % (name, virt.error_text(e)))
    deleted = []
    shared = disk_users(conn, paths, but=name) if paths else {}
    for path in paths:
        if path in shared:
            continue
        if os.path.lexists(path) or in_pool(conn, path):
            delete_disk(conn, path)
            deleted.append(path)
    return deleted


def full_clone(uri: str, image: str, hostname: str, targets: Sequence[Target]) -> None:
    command = [VIRT_CLONE, '--connect', uri, '--original', image, '--name', hostname]
    for _disk, path in targets:
        command += ['--file', path]
    try:
        proc = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=VIRT_CLONE_TIMEOUT, check=False)
    except OSError as e:
        raise HostError('cannot run %s: %s' % (VIRT_CLONE, e.strerror or e))
    except subprocess.TimeoutExpired:
        raise HostError('virt-clone did not finish within %ds' % VIRT_CLONE_TIMEOUT)
    if proc.returncode != 0:
        output = proc.stdout.decode('utf-8', 'replace').strip().splitlines()
        raise HostError('virt-clone failed (exit %d): %s' % (proc.returncode, ' / '.join(output[-3:])))


def pool_volumes(conn: Connect, targets: Sequence[Target]) -> Optional[List[PoolVolume]]:
    """[(image disk, clone path, its volume, its pool)] when every image disk is a pool volume, else None."""
    lv = virt.libvirt()
    volumes = []
    for disk, path in targets:
        try:
            volume = conn.storageVolLookupByPath(disk['path'])
            volumes.append((disk, path, volume, volume.storagePoolLookupByVolume()))
        except lv.libvirtError:
            return None
    return volumes


def clone_volumes(conn: Connect, image_dom: Domain, hostname: str, volumes: Sequence[PoolVolume], linked: bool,
                  domain_uuid: Optional[str]) -> None:
    """Make the clone's volumes through libvirt's storage API and define the clone on them.

    linked: a qcow2 overlay backed by each image volume. Full: a copy of each - a file copy (reflink where
    the filesystem can) for volumes without a backing file, else libvirt's volume copy (virStorageVolCreateXMLFrom,
    as virt-clone does); either copies only allocated data.
    """
    lv = virt.libvirt()
    new_disks: Dict[str, Tuple[str, str]] = {}
    for disk, path, base_vol, pool in volumes:
        fmt = 'qcow2' if linked else (disk['format'] or 'raw')
        backing = ('<backingStore><path>%s</path><format type="%s"/></backingStore>'
                   % (_xml_text(disk['path']), _xml_text(disk['format'] or 'raw'))) if linked else ''
        vol_xml = ('<volume><name>%s</name><capacity>%d</capacity><target><format type="%s"/></target>%s</volume>'
                   % (_xml_text(os.path.basename(path)), base_vol.info()[1], fmt, backing))
        try:
            if linked:
                pool.createXML(vol_xml, 0)
            elif not copy_file(base_vol, disk['path'], path, pool):
                pool.createXMLFrom(vol_xml, base_vol, 0)
        except lv.libvirtError as e:
            raise HostError('cannot create the clone disk %s: %s' % (path, virt.error_text(e)))
        new_disks[disk['path']] = (path, fmt)
    define_clone(conn, image_dom, hostname, new_disks, domain_uuid)


def copy_file(base_vol: Volume, source: str, target: str, pool: Pool) -> bool:
    """Copy a volume that has no backing file as a plain file, where this process can see it (the host worker
    runs beside its disks): a reflink where the filesystem can, else only the allocated data - as fast as the
    disk. Returns False when it cannot, for libvirt's own volume copy (qemu-img convert) to do it."""
    if not copyable(base_vol, source):
        return False
    copy_sparse(source, target)
    pool.refresh(0)
    return True


def copyable(base_vol: Volume, source: str) -> bool:
    """Whether an image's volume is a file this process sees, with no backing file: a copy of the file is a clone."""
    return os.path.isfile(source) and ET.fromstring(base_vol.XMLDesc(0)).find('backingStore/path') is None


def spare_sources(volumes: Optional[Sequence[PoolVolume]], args: CloneArgs) -> List[Tuple[str, str]]:
    """The image's disks [(path, format)] as a spare copies them, for a full, customised clone of an image whose disks
    are plain files in pools (what a spare is: a copy of those files and an appliance on it); else []."""
    if volumes is None or args['clone_mode'] != 'full' or not args.get('customize', True) or \
            not all(copyable(volume, disk['path']) for disk, _path, volume, _pool in volumes):
        return []
    return [(disk['path'], disk['format'] or 'raw') for disk, _path, _volume, _pool in volumes]


def place_spare(conn: Connect, image_dom: Domain, hostname: str, volumes: Sequence[PoolVolume],
                spare_clones: spares.SpareClones, spare: spares.Spare, domain_uuid: Optional[str]) -> None:
    """Make the spare's files the clone's disks and define the clone on them."""
    spare_clones.place(spare, [path for _disk, path, _volume, _pool in volumes])
    for pool in {id(pool): pool for _disk, _path, _volume, pool in volumes}.values():
        pool.refresh(0)
    define_clone(conn, image_dom, hostname, {disk['path']: (path, fmt) for (disk, path, _volume, _pool), (_spare_path, fmt)
                                             in zip(volumes, spare.disks)}, domain_uuid)


def define_clone(conn: Connect, image_dom: Domain, hostname: str, new_disks: Dict[str, Tuple[str, str]],
                 domain_uuid: Optional[str]) -> None:
    """Define `hostname` from the image's definition: new name, the UUID this job recorded, no MACs (libvirt makes
    fresh ones), new disks."""
    lv = virt.libvirt()
    root = ET.fromstring(image_dom.XMLDesc(lv.VIR_DOMAIN_XML_INACTIVE))
    name = root.find('name')
    if name is None:  # libvirt's definitions always name the domain
        raise HostError('the definition of the image has no name: cannot define the clone %s from it' % hostname)
    name.text = hostname
    for element in root.findall('uuid') + root.findall('metadata'):
        root.remove(element)
    ET.SubElement(root, 'uuid').text = domain_uuid
    for disk in root.findall('./devices/disk'):
        source = disk.find('source')
        image_file = source.get('file') if source is not None else None
        if source is not None and image_file is not None and image_file in new_disks:
            path, fmt = new_disks[image_file]
            source.set('file', path)
            driver = disk.find('driver')
            if driver is None:  # the image's format was left to libvirt: the clone's is not, a linked one is qcow2
                driver = ET.SubElement(disk, 'driver', name='qemu')
            driver.set('type', fmt)
            backing = disk.find('backingStore')
            if backing is not None:
                disk.remove(backing)
    for iface in root.findall('./devices/interface'):
        mac = iface.find('mac')
        if mac is not None:
            iface.remove(mac)
    # A console log file of the image's would be shared by every clone (and truncated by each boot).
    for log in root.findall('./devices/serial/log') + root.findall('./devices/console/log'):
        log_file = log.get('file')
        if log_file:
            log.set('file', console_log_path(log_file, hostname))
    try:
        conn.defineXML(ET.tostring(root, encoding='unicode'))
    except lv.libvirtError as e:
        raise HostError('cannot define the clone %s: %s' % (hostname, virt.error_text(e)))


def console_log_path(image_log: str, hostname: str) -> str:
    """The clone's console log: beside the image's, named after the clone."""
    return os.path.join(os.path.dirname(image_log), '%s-console.log' % hostname)


def _xml_text(value: str) -> str:
    return value.replace('&', '&amp;').replace('<', '&lt;').replace('>', '&gt;').replace('"', '&quot;')


def set_metadata(dom: Domain, host_keys: Optional[Iterable[str]] = (), **attributes: str) -> None:
    lv = virt.libvirt()
    element = ET.Element('clone', {k: str(v) for k, v in attributes.items()})
    for key in host_keys or ():
        ET.SubElement(element, 'host-key').text = key
    dom.setMetadata(lv.VIR_DOMAIN_METADATA_ELEMENT, ET.tostring(element, encoding='unicode'),
                    virt.METADATA_PREFIX, virt.METADATA_NS, lv.VIR_DOMAIN_AFFECT_CONFIG)


def remove_owned(conn: Connect, name: str, ownership: Ownership) -> List[str]:
    """Remove what this job made: the domain `name` if it is the one it recorded, and the recorded files that
    exist and that no other domain's definition uses. Returns the files deleted."""
    dom = lookup(conn, name)
    if dom is not None and ownership.owns_domain(dom):
        remove_domain(conn, name, [])
    files = sorted(ownership.files)
    shared = disk_users(conn, files)
    deleted = []
    for path in files:
        if path not in shared and (os.path.lexists(path) or in_pool(conn, path)):
            delete_disk(conn, path)
            deleted.append(path)
    return deleted


def _check_absent(conn: Connect, hostname: str, targets: Sequence[Target]) -> None:
    """The clone's name and files must not exist: they would belong to someone else."""
    if lookup(conn, hostname) is not None:
        raise ConflictError('a domain named %s already exists on this host' % hostname)
    taken = [path for _disk, path in targets if os.path.lexists(path) or in_pool(conn, path)]
    if taken:
        users = disk_users(conn, taken)
        raise ConflictError('; '.join('the clone disk %s already exists on this host%s' % (
            path, ' (a disk of %s)' % ', '.join(users[path]) if path in users else '') for path in taken))


def make_clone(conn: Connect, uri: str, job_id: str, args: CloneArgs, reconcile: bool = False,
               customizer: batching.Customizer = batching.customize_alone, ownership: Optional[Ownership] = None,
               spare_clones: Optional[spares.SpareClones] = None) -> CloneResult:
    """Clone args['image'] to args['hostname'] on this host, customise it, start it. Returns result data.

    Everything the clone makes is first recorded in `ownership` (an Ownership; the host worker's is durable).
    With `reconcile`, a clone left by an earlier run of the same job is either recognised as complete, or what
    that run recorded and made is removed before the job runs again. Anything else in the way - a domain or a
    file this job did not make - fails the job and is left alone. `customizer(image key, disks, settings)`
    does the guest customisation (batching.CustomizeBatcher in the host worker). With `spare_clones` (the host
    worker's), a full, customised clone of an image whose disks are plain files in pools takes the image's spare if
    one is ready - no copy, no launch - and a new spare of the image is made behind it.
    """
    lv = virt.libvirt()
    ownership = ownership if ownership is not None else Ownership()
    image_name, hostname = args['image'], args['hostname']
    image = lookup(conn, image_name)
    if image is None:
        raise NotFoundError('image %s is not on this host' % image_name)
    image_info = virt.describe(image, with_sizes=False)
    if image_info['active']:
        raise ConflictError('image %s is running; an original image must be an inactive domain' % image_name)
    targets = clone_disk_paths(image_info, hostname)
    existing = lookup(conn, hostname)
    if existing is not None:
        meta = virt.clone_metadata(existing)
        if meta.get('job') == job_id and meta.get('complete') == 'yes':  # only this job writes its id there
            if args['start'] and not existing.isActive():
                existing.create()
            return {'hostname': hostname, 'reconciled': True, 'ssh_host_keys': meta.get('host_keys', []),
                    'domain': virt.describe(existing, with_sizes=False)}
    if reconcile:
        remove_owned(conn, hostname, ownership)  # what an earlier run of this job made, and only that
    key = batching.image_key(image_name, [d['path'] for d, _path in targets])
    spare: Optional[spares.Spare] = None
    try:
        volumes = pool_volumes(conn, targets)
        # The image's disks as a spare copies them, when this clone may take one and make the next; else none.
        sources = spare_sources(volumes, args) if spare_clones is not None else []
        with VOLUME_LOCK:
            # Checked under the lock that every clone's copy takes: nothing appears between the check and the copy.
            _check_absent(conn, hostname, targets)
            domain_uuid = str(uuid.uuid4()) if volumes is not None else None
            ownership.intend_domain(hostname, domain_uuid)
            for _disk, path in targets:
                ownership.intend_file(path)
            if sources and spare_clones is not None:
                spare = spare_clones.take(key, [path for path, _format in sources])
            if spare is not None and spare_clones is not None and volumes is not None:
                place_spare(conn, image, hostname, volumes, spare_clones, spare, domain_uuid)
            elif volumes is not None:
                clone_volumes(conn, image, hostname, volumes, args['clone_mode'] == 'linked', domain_uuid)
            elif args['clone_mode'] == 'linked':
                raise HostError('a linked clone needs the disks of image %s in a libvirt storage pool' % image_name)
            else:
                full_clone(uri, image_name, hostname, targets)  # disks outside any pool: virt-clone copies the files
        if sources and spare_clones is not None:
            spare_clones.replenish(image_name, sources)  # the next clone's copy and launch, while this one goes on
        dom = lookup(conn, hostname)
        if dom is None:
            raise HostError('the clone %s was not defined' % hostname)
        if domain_uuid is None:
            ownership.intend_domain(hostname, dom.UUIDString())
        # The spread group lives in libvirt with the clone, so placement reads it back after any restart.
        group = {'spread-group': args['spread_group']} if args.get('spread_group') else {}
        set_metadata(dom, image=image_name, job=job_id, mode=args['clone_mode'], complete='no', **group)
        disks = [(d['path'], d['format']) for d in virt.describe(dom, with_sizes=False)['disks']
                 if d['device'] == 'disk' and d['path']]
        settings = GuestSettings(hostname, args.get('network'), args.get('root_password_hash'),
                                 args.get('ssh_authorized_keys'), args.get('cloud_init_user_data'))
        customization: Union[Customization, NotCustomized] = {'customized': False}
        host_keys: List[str] = []
        if args.get('customize', True):
            if spare is not None and spare_clones is not None:
                taken, spare = spare, None
                changes = spare_clones.customize(taken, settings)
            else:
                changes = customizer(key, disks, settings)
            host_keys = changes.pop('ssh_host_keys', [])  # public halves only, for known_hosts
            customization = changes
        set_metadata(dom, host_keys=host_keys or None, image=image_name, job=job_id, mode=args['clone_mode'],
                     complete='yes', **group)
        if args['start']:
            try:
                dom.create()
            except lv.libvirtError as e:
                raise HostError('the clone %s could not be started: %s' % (hostname, virt.error_text(e)))
        return {'hostname': hostname, 'image': image_name, 'clone_mode': args['clone_mode'],
                'ssh_host_keys': host_keys, 'customization': customization, 'domain': virt.describe(dom, with_sizes=False)}
    except BaseException as failure:
        if spare is not None and spare_clones is not None:  # taken, not customised: its appliance goes
            spare_clones.discard(spare, 'its clone failed')
        try:
            remove_owned(conn, hostname, ownership)
        except Exception as e:  # report the rollback failure with the original one
            raise MaglicaError('%s; removing the half-made clone also failed: %s' % (_text(failure), e))
        raise


def _text(error: BaseException) -> str:
    return str(error) if isinstance(error, MaglicaError) else '%s: %s' % (type(error).__name__, error)
