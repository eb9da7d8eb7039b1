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

import contextlib
import os
import re
import xml.etree.ElementTree as ET
from typing import (
    Any,
    Dict,
    Iterable,
    List,
    Mapping,
    Optional,
    Sequence,
    Set,
    Tuple,
    TypedDict,
    Union,
)

from ..cluster import virt
from ..cluster.config import Config, Host
from ..cluster.domains import (
    DISK_SEPARATOR,
    check_removal,
    dependants,
)
from ..cluster.virt import Connect, Domain
from ..errors import ConflictError, HostError, MaglicaError, NotFoundError
from ..protocol import messages
from . import pushed, reach
from .client import Client, Job
from .waiting import Waiter

STATES = ('running', 'stopped', 'destroyed', 'absent')
BOOT_DEVICES = ('hd', 'cdrom', 'network', 'fd')
SIZE_RE = re.compile(r'\s*(\d+(?:\.\d+)?)\s*([KMGTP]?)(i?B)?\s*', re.I)
UNIT_POWERS = {'': 2, 'K': 1, 'M': 2, 'G': 3, 'T': 4, 'P': 5}
MIB = 1048576
DISK_NAME_RE = re.compile(r'[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}')
# diskN: what clone_disk_paths names a clone's further disks.
CLONE_DISK_RE = re.compile(r'disk[0-9]+')
POLL_S = 0.2
# A VM entry (summary): a domain's description (virt.describe) with host, image, vnc_display and iso.
VmEntry = Dict[str, Any]


class VmListing(TypedDict):
    """vm_list's and inventory's result: the VMs, and per host {host, reachable, error, vms: how many}."""
    vms: List[VmEntry]
    hosts: List[Dict[str, Any]]


class Settings(TypedDict):
    """The settings Maglica manages in a domain's persistent XML."""
    vcpus: int
    memory_mb: int
    iso: Optional[str]
    boot_devices: List[str]
    disks: List[str]


class _EnsureResult(TypedDict):
    changed: bool
    name: str
    host: Optional[str]
    state: Optional[str]
    restart_required: bool
    changes: List[str]
    jobs: List[Job]
    before: Dict[str, Any]
    after: Dict[str, Any]
    vm: Optional[VmEntry]


class EnsureResult(_EnsureResult, total=False):
    """ensure's result. state=absent adds removed_dependants (and deleted_disks once removed); a stop adds stopped_by
    (shutdown | destroyed | destroy); new settings on a running VM add message."""
    deleted_disks: List[str]
    removed_dependants: List[str]
    stopped_by: str
    message: str


def parse_size(text: Union[str, int, None], default_unit: str = 'M') -> int:
    """Bytes in a size such as "2G", "512M", "10GiB" or "1024" (in `default_unit`). Units are powers of 1024."""
    if isinstance(text, int) and not isinstance(text, bool):
        text = str(text)
    match = SIZE_RE.fullmatch(str(text)) if text is not None else None
    if not match:
        raise MaglicaError('bad size %r: give a number with a unit K, M, G or T, for example 512M or 2G' % (text,))
    unit = (match.group(2) or default_unit).upper()
    size = int(float(match.group(1)) * 1024 ** UNIT_POWERS[unit])
    if size <= 0:
        raise MaglicaError('bad size %r: it must be more than zero' % (text,))
    return size


def vm_list(config: Config, patterns: Optional[Sequence[str]] = None, hosts: Optional[Sequence[str]] = None,
            states: Optional[Sequence[str]] = None) -> VmListing:
    """Every domain on every host (or those in `hosts`), asked in parallel, filtered by name pattern and state.

    Returns {vms: [...], hosts: [{host, reachable, error, vms}]}.
    """
    def select(domain: Mapping[str, Any], host: str) -> Optional[VmEntry]:
        if not virt.matches(domain['name'], patterns):
            return None
        vm = summary(domain, host)
        return vm if not states or vm['state'] in states or state_word(vm) in states else None
    vms, report = virt.collect(config, select, 'vms', hosts, pushed.answers(config, 'domains', hosts))
    return {'vms': vms, 'hosts': report}


def _same_domain(conn: Connect, dom: Domain) -> Optional[Domain]:
    """`dom` (of another connection to the same host) on `conn`, by UUID; None when it is gone since."""
    try:
        return conn.lookupByUUIDString(dom.UUIDString())
    except virt.libvirt().libvirtError:
        return None


def inventory(config: Config, include_images: bool = False) -> VmListing:
    """Every VM of every host, with the guest addresses libvirt knows, for the inventory plugin.

    Returns {vms: [...], hosts: [{host, reachable, error, vms}]}.
    """
    def query(conn: Connect, host: Host) -> List[Dict[str, Any]]:
        result = []
        domains = conn.listAllDomains(0)
        with contextlib.ExitStack() as stack:
            # libvirt answers guest-agent questions on read-write connections only; on this read-only one only the
            # DHCP leases of libvirt's own networks, which a bridged network (a shared segment) has none of.
            agent_conn = conn
            if any(dom.isActive() for dom in domains):
                try:
                    agent_conn = stack.enter_context(virt.Connection(config, host))
                except MaglicaError:
                    agent_conn = conn  # the leases, then
            for dom in domains:
                info = virt.describe(dom, with_sizes=False)
                # What the guest reported that is no address (dropped) is told to the inventory's user.
                info['address_warnings'] = []
                if info['active']:
                    asked = dom if agent_conn is conn else _same_domain(agent_conn, dom)
                    info['addresses'] = reach.guest_addresses(asked, info['address_warnings']) if asked is not None else []
                else:
                    info['addresses'] = []
                result.append(info)
        return result

    vms: List[VmEntry] = []
    report: List[Dict[str, Any]] = []
    for answer in virt.ask_hosts(config, query):
        found = [summary(d, answer['host']) for d in answer['result'] or [] if include_images or not virt.is_image(d)]
        vms.extend(found)
        report.append({'host': answer['host'], 'reachable': answer['reachable'], 'error': answer['error'], 'vms': len(found)})
    vms.sort(key=lambda v: (v['name'], v['host']))
    return {'vms': vms, 'hosts': report}


def summary(domain: Mapping[str, Any], host: str) -> VmEntry:
    """A surveyed domain as a VM entry: its description plus host, image flag and VNC display."""
    entry = dict(domain, host=host, image=virt.is_image(domain))
    entry['vnc_display'] = domain['vnc_port'] - 5900 if domain.get('vnc_port') else None
    entry['iso'] = cdrom_source(domain)
    return entry


def state_word(info: Mapping[str, Any]) -> str:
    """The module's word for a domain's state: running, stopped (any inactive state) or libvirt's own."""
    if info['active']:
        return 'running' if info['state'] == 'running' else info['state']
    return 'stopped'


def cdrom_source(info: Mapping[str, Any]) -> Optional[str]:
    sources = [d['path'] for d in info['disks'] if d['device'] == 'cdrom' and d['path']]
    return sources[0] if sources else None


def vm_info(config: Config, name: str) -> Tuple[str, VmEntry]:
    """(host, VM entry) of the VM called `name`, wherever it is."""
    host, domain = pushed.find_vm(config, name)
    return host, summary(domain, host)


# -- settings in the domain XML ---------------------------------------------------

def read_settings(root: ET.Element) -> Settings:
    """The settings Maglica manages, from a domain's persistent XML."""
    memory = root.find('memory')
    cdrom = root.find("./devices/disk[@device='cdrom']")
    source = cdrom.find('source') if cdrom is not None else None
    present: Set[str] = set()
    for disk in root.findall("./devices/disk[@device='disk']"):
        src = disk.find('source')
        path = src.get('file') if src is not None else None
        if path:
            present.add(os.path.basename(path))
    return {
        'vcpus': int(root.findtext('vcpu') or 1),
        'memory_mb': virt._to_mib(int(memory.text or 0), memory.get('unit') or 'KiB') if memory is not None else 0,
        'iso': source.get('file') if source is not None else None,
        'boot_devices': [b.get('dev', '') for b in root.findall('./os/boot')],
        'disks': sorted(present),
    }


def _child(root: ET.Element, tag: str) -> ET.Element:
    """The element `tag` of a domain's XML, which libvirt always writes (<os>, <devices>)."""
    element = root.find(tag)
    if element is None:
        raise MaglicaError('the definition of %s has no <%s> element' % (root.findtext('name'), tag))
    return element


def _set_vcpus(root: ET.Element, vcpus: int) -> None:
    element = root.find('vcpu')
    if element is None:
        element = ET.SubElement(root, 'vcpu')
    element.text = str(vcpus)
    element.attrib.pop('current', None)


def _set_memory(root: ET.Element, memory_mb: int) -> None:
    for tag in ('memory', 'currentMemory'):
        element = root.find(tag)
        if element is None:
            element = ET.SubElement(root, tag)
        element.text = str(memory_mb * 1024)
        element.set('unit', 'KiB')


def _set_boot(root: ET.Element, devices: Iterable[str]) -> None:
    os_element = _child(root, 'os')
    for boot in os_element.findall('boot'):
        os_element.remove(boot)
    for dev in devices:
        ET.SubElement(os_element, 'boot', {'dev': dev})


def _set_iso(root: ET.Element, path: str) -> None:
    devices = _child(root, 'devices')
    cdrom = devices.find("./disk[@device='cdrom']")
    if cdrom is None:
        os_type = root.find('./os/type')
        machine = (os_type.get('machine') or '') if os_type is not None else ''
        bus, prefix = ('sata', 'sd') if 'q35' in machine else ('ide', 'hd')
        used = set(t.get('dev') for t in root.findall('./devices/disk/target'))
        target = next(prefix + c for c in 'cdefghijklmnopqrstuvwxyzab' if prefix + c not in used)
        cdrom = ET.SubElement(devices, 'disk', {'type': 'file', 'device': 'cdrom'})
        ET.SubElement(cdrom, 'driver', {'name': 'qemu', 'type': 'raw'})
        ET.SubElement(cdrom, 'target', {'dev': target, 'bus': bus})
        ET.SubElement(cdrom, 'readonly')
    source = cdrom.find('source')
    if not path:
        if source is not None:
            cdrom.remove(source)
        return
    if source is None:
        source = ET.Element('source')
        cdrom.insert(1, source)
    source.attrib.clear()
    source.set('file', path)


def disk_volume_name(vm_name: str, disk_name: str) -> str:
    """VM@DISK.qcow2: `@` is in no VM name, so VM `a` with disk `b-data1` and VM `a-b` with disk `data1` differ."""
    return '%s%s%s.qcow2' % (vm_name, DISK_SEPARATOR, disk_name)


def legacy_volume_name(volume: str) -> str:
    """The name the same disk had before VM@DISK (VM-DISK), so that a disk attached then is still found."""
    return volume.replace(DISK_SEPARATOR, '-', 1)


def normalize_disks(vm_name: str, disks: Optional[Sequence[Any]]) -> List[Tuple[str, int]]:
    """[(volume name, bytes)] of the disks asked for: each {size, name}; names default to data1, data2..."""
    result = []
    for index, disk in enumerate(disks or []):
        if not isinstance(disk, dict) or not disk.get('size'):
            raise MaglicaError('disks[%d] needs a size, for example {size: 10G}' % index)
        name = disk.get('name') or 'data%d' % (index + 1)
        if not isinstance(name, str) or not DISK_NAME_RE.fullmatch(name):
            raise MaglicaError('disks[%d]: the disk name %r is not valid: use letters, digits and . _ + - (at most 64)' % (index, name))
        if CLONE_DISK_RE.fullmatch(name):
            raise MaglicaError('disks[%d]: the disk name %r is kept for the further disks of a clone: choose another' % (index, name))
        volume = disk_volume_name(vm_name, name)
        result.append((volume, parse_size(disk['size'], 'G')))
    if len(set(v for v, _s in result)) != len(result):
        raise MaglicaError('disks: two disks have the same name')
    return result


def next_disk_name(config: Config, name: str) -> str:
    """The first free data disk name (data1, data2...) of a VM, from its persistent definition."""
    host, _domain = pushed.find_vm(config, name)
    with virt.Connection(config, config.host(host), readonly=True) as conn:
        dom = virt.call('cannot look up %s on %s' % (name, host), conn.lookupByName, name)
        present = read_settings(ET.fromstring(dom.XMLDesc(virt.libvirt().VIR_DOMAIN_XML_INACTIVE)))['disks']
    number = 1
    while disk_volume_name(name, 'data%d' % number) in present or legacy_volume_name(disk_volume_name(name, 'data%d' % number)) in present:
        number += 1
    return 'data%d' % number


def check_iso(conn: Connect, host: str, path: str) -> None:
    """The ISO must exist on the host itself (the path is in the host's file system): ask its storage pools."""
    lv = virt.libvirt()
    if not path.startswith('/'):
        raise MaglicaError('the ISO path %s must be absolute' % path)
    directory = os.path.dirname(path)
    for pool in conn.listAllStoragePools(lv.VIR_CONNECT_LIST_STORAGE_POOLS_ACTIVE):
        target = ET.fromstring(pool.XMLDesc(0)).findtext('./target/path')
        if target and os.path.normpath(target) == os.path.normpath(directory):
            try:
                pool.refresh(0)  # a file copied in since the last refresh
            except lv.libvirtError:
                pass
    try:
        conn.storageVolLookupByPath(path)
    except lv.libvirtError:
        raise NotFoundError('the ISO %s does not exist on %s (or is not in one of its libvirt storage pools)' % (path, host))


# -- state changes --------------------------------------------------------------------

def _wait_inactive(dom: Domain, timeout: float) -> bool:
    waiter = Waiter(timeout, first=POLL_S, most=POLL_S)
    while dom.isActive():
        if waiter.expired():
            return False
        waiter.pause()
    return True


def stop(dom: Domain, name: str, host: str, timeout: float, force: bool) -> str:
    """Graceful shutdown, waiting until the VM is off; with `force`, destroy it if it is not off in time.

    Returns how it ended: 'shutdown' or 'destroyed'.
    """
    lv = virt.libvirt()
    try:
        dom.shutdown()
    except lv.libvirtError as e:
        if not dom.isActive():
            return 'shutdown'
        if not force:
            raise HostError('cannot shut %s down on %s: %s' % (name, host, virt.error_text(e)))
    if _wait_inactive(dom, timeout):
        return 'shutdown'
    if not force:
        raise HostError('%s on %s did not shut down within %gs (does its guest handle ACPI shutdown?); '
                        'it is still running: use force to destroy it after the timeout' % (name, host, timeout))
    if dom.isActive():
        virt.call('cannot destroy %s on %s' % (name, host), dom.destroy)
    return 'destroyed'


def _run_job(config: Config, host: str, action: str, args: Dict[str, Any], timeout: float) -> Job:
    job = messages.new_job(host, action, args, ttl=max(1, int(timeout)))
    with Client(config) as client:
        client.submit(job)
        return client.wait(job['id'], timeout)


def ensure(config: Config, name: str, state: Optional[str] = None, vcpus: Optional[int] = None,
           memory: Union[str, int, None] = None, iso: Optional[str] = None,
           boot_device: Union[str, Sequence[str], None] = None, disks: Optional[Sequence[Any]] = None,
           force: bool = False, timeout: float = 120, check_mode: bool = False, force_dependants: bool = False) -> EnsureResult:
    """Bring the VM called `name` to `state` with the given settings; only what differs is changed.

    `force` stops a running VM before removing it; `force_dependants` lets an original image, or a VM whose disks
    back linked clones, be removed - those clones first.
    Returns {changed, name, host, state, restart_required, changes, jobs, before, after, vm}
    (and with state=absent: deleted_disks, removed_dependants).
    """
    if state is not None and state not in STATES:
        raise MaglicaError('state must be one of %s' % ', '.join(STATES))
    if vcpus is not None and (not isinstance(vcpus, int) or vcpus < 1):
        raise MaglicaError('vcpus must be a positive number, got %r' % (vcpus,))
    memory_mb = None
    if memory is not None:
        memory_mb = parse_size(memory, 'M') // MIB
        if memory_mb < 1:
            raise MaglicaError('memory %r is less than 1 MiB' % (memory,))
    if boot_device is not None:
        boot_devices = [boot_device] if isinstance(boot_device, str) else list(boot_device)
        bad = [d for d in boot_devices if d not in BOOT_DEVICES]
        if bad or not boot_devices:
            raise MaglicaError('boot device %s is not one of %s' % (', '.join(bad) or '(none)', ', '.join(BOOT_DEVICES)))
    wanted_disks = normalize_disks(name, disks)
    result: EnsureResult = {'changed': False, 'name': name, 'host': None, 'state': None, 'restart_required': False,
                            'changes': [], 'jobs': [], 'before': {}, 'after': {}, 'vm': None}
    try:
        host, domain = pushed.find_vm(config, name)
    except NotFoundError:
        if state == 'absent':
            result['state'] = 'absent'
            return result
        raise
    result['host'] = host
    before_state = state_word(domain)
    result['state'] = before_state

    if state == 'absent':
        if domain['active'] and not force:
            raise ConflictError('%s is running on %s: stop it first, or use force to remove it anyway' % (name, host))
        with virt.Connection(config, config.host(host), readonly=True) as conn:
            found = dependants(conn, name)
        check_removal(name, host, domain, found, force_dependants)  # the host worker checks again
        result.update({'changed': True, 'state': 'absent', 'before': {'state': before_state}, 'after': {'state': 'absent'}})
        if found:
            result['changes'].append('removed the dependants of %s first: %s' % (name, ', '.join(found)))
        result['changes'].append('removed %s and its disks from %s' % (name, host))
        result['removed_dependants'] = found
        if not check_mode:
            args = {'name': name, 'force_dependants': True} if force_dependants else {'name': name}
            job = _run_job(config, host, 'vm.remove', args, timeout)
            result['jobs'].append(job)
            result['deleted_disks'] = job['data'].get('deleted_disks', [])
            result['removed_dependants'] = job['data'].get('removed_dependants', [])
        return result

    with virt.Connection(config, config.host(host)) as conn:
        lv = virt.libvirt()
        dom = virt.call('cannot look up %s on %s' % (name, host), conn.lookupByName, name)
        root = ET.fromstring(dom.XMLDesc(lv.VIR_DOMAIN_XML_INACTIVE))
        before = read_settings(root)
        if iso:
            check_iso(conn, host, iso)

        # Settings: change the persistent definition only where it differs.
        if vcpus is not None and before['vcpus'] != vcpus:
            _set_vcpus(root, vcpus)
            result['changes'].append('vcpus %d -> %d' % (before['vcpus'], vcpus))
        if memory_mb is not None and before['memory_mb'] != memory_mb:
            _set_memory(root, memory_mb)
            result['changes'].append('memory %d MiB -> %d MiB' % (before['memory_mb'], memory_mb))
        if iso is not None and (before['iso'] or '') != iso:
            _set_iso(root, iso)
            result['changes'].append('CD-ROM %s -> %s' % (before['iso'] or '(empty)', iso or '(empty)'))
        if boot_device is not None and before['boot_devices'] != boot_devices:
            _set_boot(root, boot_devices)
            result['changes'].append('boot devices %s -> %s' % (','.join(before['boot_devices']) or '(default)', ','.join(boot_devices)))
        xml_changed = bool(result['changes'])
        missing_disks = [(v, s) for v, s in wanted_disks if v not in before['disks'] and legacy_volume_name(v) not in before['disks']]
        for volume, size in missing_disks:
            result['changes'].append('new disk %s of %d MiB' % (volume, size // MIB))
        after = dict(read_settings(root), disks=sorted(before['disks'] + [v for v, _s in missing_disks]))

        active = bool(dom.isActive())
        settings_changed = bool(result['changes'])
        # Stop before changing what a stop should precede; start after the settings are in.
        target_active = {'running': True, 'stopped': False, 'destroyed': False}.get(state or '', active)
        if settings_changed and active and target_active:
            result['restart_required'] = True
        result['before'] = dict(before, state=before_state)
        after_state = before_state
        if state == 'running' and before_state != 'running':
            after_state = 'running'
        elif state in ('stopped', 'destroyed') and active:
            after_state = 'stopped'
        result['after'] = dict(after, state=after_state)
        if after_state != before_state:
            result['changes'].append('state %s -> %s' % (before_state, after_state))
        result['changed'] = bool(result['changes'])
        result['state'] = after_state
        if check_mode or not result['changed']:
            result['vm'] = summary(domain, host)
            return result

        # Changed here, not by a job: the client worker is told, so that listings do not read the host's pushed
        # state until one taken after these changes comes.
        try:
            if state in ('stopped', 'destroyed') and active:
                if state == 'destroyed':
                    virt.call('cannot destroy %s on %s' % (name, host), dom.destroy)
                    result['stopped_by'] = 'destroy'
                else:
                    result['stopped_by'] = stop(dom, name, host, timeout, force)
            if xml_changed:
                virt.call('cannot change the definition of %s on %s' % (name, host), conn.defineXML, ET.tostring(root, encoding='unicode'))
            for volume, size in missing_disks:
                job = _run_job(config, host, 'vm.attach_disk', {'name': name, 'volume': volume, 'size': size}, timeout)
                result['jobs'].append(job)
            if state == 'running' and before_state != 'running':
                dom = virt.call('cannot look up %s on %s' % (name, host), conn.lookupByName, name)
                if dom.state()[0] == lv.VIR_DOMAIN_PAUSED:
                    virt.call('cannot resume %s on %s' % (name, host), dom.resume)
                else:
                    virt.call('cannot start %s on %s' % (name, host), dom.create)
        finally:
            pushed.state_changed(config, host)
        dom = virt.call('cannot look up %s on %s' % (name, host), conn.lookupByName, name)
        result['vm'] = entry = summary(virt.describe(dom), host)
        result['state'] = state_word(entry)
    if result['restart_required']:
        result['message'] = '%s is running: the new settings take effect at its next start' % name
    return result
