# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""An original image made from a shut-off VM, on the host worker (`image.from_vm`): its disks copied, then
"sealed" - the clone customisation in reverse, so that it carries no machine identity (empty machine-id, no SSH
host keys, a generic hostname, no DHCP leases, no hard-wired MAC or DHCP host name), all things every clone of it
gets anew. The VM itself is only read.
"""

from __future__ import annotations

import re
import uuid
import xml.etree.ElementTree as ET
from typing import Callable, List, Optional, TypedDict

from ..cluster import virt
from ..cluster.config import Config, Host
from ..cluster.domains import clone_disk_paths, lookup
from ..cluster.virt import Domain
from ..errors import ConflictError, HostError, MaglicaError, NotFoundError
from . import clone, customize
from .cloudinit import NOCLOUD_DIR, forget_cloud_init_instance
from .guest import Guest, GuestSettings, drop_keys, inspect, launch
from .guest_network import IFCFG_DIR, INTERFACES, INTERFACES_D, NM_DIR

GENERIC_HOSTNAME = 'localhost'
# What an image made from a VM says in its image metadata (virt.IMAGE_METADATA_NS).
MADE_FROM = 'made_from'
# Debian's own dhclient.conf line: the guest sends whatever its hostname is. A clone's customisation writes its name.
DHCLIENT_SEND_HOSTNAME = 'send host-name = gethostname();'
DHCLIENT_SEND_RE = re.compile(r'^\s*send\s+host-name\s+.*;\s*$', re.M)
# ifupdown's `hostname NAME` option in a dhcp stanza (what the clone customisation writes).
INTERFACES_HOSTNAME_RE = re.compile(r'^[ \t]+hostname[ \t]+\S+[ \t]*\n?', re.M)
# Keys naming one machine in RHEL ifcfg files (virt-sysprep's net-hwaddr and net-hostname) and NetworkManager keyfiles.
IFCFG_MACHINE_KEYS = ('HWADDR', 'MACADDR', 'UUID', 'HOSTNAME', 'DHCP_HOSTNAME')
KEYFILE_MACHINE_KEYS = ('mac-address', 'dhcp-hostname')
# A NoCloud seed written by Maglica's clone customisation: its instance-id says so.
MAGLICA_INSTANCE_PREFIX = 'iid-maglica-'


class FromVmArgs(TypedDict):
    """An image.from_vm job's args (messages.ACTIONS['image.from_vm']): the new image, and the VM it is made from."""

    image: str
    vm: str


class SealedOs(TypedDict):
    distro: str
    major_version: int
    previous_hostname: str


class Sealed(TypedDict):
    """What seal() changed."""

    os: SealedOs
    hostname: str
    changed_files: List[str]
    removed_files: List[str]


class _FromVmResult(TypedDict):
    image: str
    from_vm: str


class FromVmResult(_FromVmResult, total=False):
    """An image.from_vm job's result data: the image's disks and what sealing changed, or (reconciled) the image
    found complete after a restart."""

    disks: List[str]
    seal: Sealed
    reconciled: bool


# -- removal ----------------------------------------------------------------------------------

# -- an image from a VM: the host worker's side -------------------------------------------------

def generic_dhclient(text: str) -> str:
    """dhclient.conf sending the guest's own hostname again, not the name a clone's customisation wrote."""
    return DHCLIENT_SEND_RE.sub(DHCLIENT_SEND_HOSTNAME, text, count=1)


def generic_interfaces(text: str) -> str:
    """An interfaces(5) text without `hostname NAME` options (each clone's customisation writes its own)."""
    return INTERFACES_HOSTNAME_RE.sub('', text)


def generic_ifcfg(text: str) -> str:
    """An RHEL ifcfg file, or /etc/sysconfig/network, without what names one machine: MAC, UUID, host names."""
    return drop_keys(text, IFCFG_MACHINE_KEYS)


def generic_keyfile(text: str) -> str:
    """A NetworkManager keyfile without the MAC it was bound to and the DHCP host name it sent."""
    return drop_keys(text, KEYFILE_MACHINE_KEYS)


def is_maglica_seed(meta_data: str) -> bool:
    """Whether a NoCloud meta-data text is one that Maglica's clone customisation wrote (by its instance-id)."""
    for line in meta_data.splitlines():
        key, sep, value = line.partition(':')
        if sep and key.strip() == 'instance-id':
            return value.strip().strip('"\'').startswith(MAGLICA_INSTANCE_PREFIX)
    return False


def _rewrite(guest: Guest, paths: List[str], function: Callable[[str], str]) -> None:
    for path in paths:
        text = guest.read(path)
        if text is not None:
            guest.write(path, function(text))


def seal_guest(guest: Guest, old_hostname: Optional[str]) -> None:
    """The clone customisation in reverse, on a mounted guest: what names one machine goes, and each clone of the
    image gets it anew (virt-sysprep's default operations that the clone customisation redoes)."""
    settings = GuestSettings(GENERIC_HOSTNAME)
    old = old_hostname if old_hostname not in customize.GENERIC_HOSTNAMES else None
    # customize: a generic hostname; the old one nowhere it stays.
    guest.write('/etc/hostname', GENERIC_HOSTNAME + '\n')
    guest.write('/etc/hosts', customize.hosts_file(guest.read('/etc/hosts'), settings, old))
    if old:
        _rewrite(guest, list(customize.HOSTNAME_FILES), lambda text: customize.replace_hostname(text, old, settings))
    # machine-id, udev-persistent-net, dhcp-client-state, yum-uuid, random-seed: the clone customisation's own step.
    customize.reset_machine_state(guest)
    # ssh-hostkeys: every host key, and certificates for them.
    for path in guest.g.glob_expand(customize.SSH_DIR + '/*_host_*'):
        guest.remove(path)
    # net-hwaddr, net-hostname: the network settings stay, what binds them to one machine goes.
    _rewrite(guest, ['/etc/dhcp/dhclient.conf'], generic_dhclient)
    _rewrite(guest, [INTERFACES] + guest.glob(INTERFACES_D + '/*'), generic_interfaces)
    _rewrite(guest, guest.glob(IFCFG_DIR + '/ifcfg-*') + ['/etc/sysconfig/network'], generic_ifcfg)
    _rewrite(guest, guest.glob(NM_DIR + '/*'), generic_keyfile)
    # cloud-init: its instance state, and a NoCloud seed that Maglica wrote for the VM (its name, its user-data).
    forget_cloud_init_instance(guest)
    if is_maglica_seed(guest.read(NOCLOUD_DIR + '/meta-data') or ''):
        guest.remove(NOCLOUD_DIR)


def seal(disks: customize.Disks) -> Sealed:
    """Seal the guest on `disks` [(path, format)], in one libguestfs appliance launch. Returns what changed."""
    g = launch(disks)
    try:
        layout, mountpoints = inspect(g)
        for mountpoint in sorted(mountpoints, key=len):
            g.mount(mountpoints[mountpoint], mountpoint)
        guest = Guest(g)
        try:
            seal_guest(guest, layout['hostname'])
            customize.relabel(guest, [])
            g.sync()
        finally:
            g.umount_all()
        g.shutdown()
    except RuntimeError as e:
        raise MaglicaError('sealing the image failed: %s' % e)
    finally:
        g.close()
    return {'os': {'distro': layout['distro'], 'major_version': layout['major_version'],
                   'previous_hostname': layout['hostname']},
            'hostname': GENERIC_HOSTNAME, 'changed_files': guest.changed, 'removed_files': guest.removed}


def _complete(dom: Domain, job_id: str) -> bool:
    lv = virt.libvirt()
    meta = virt.image_metadata_of(ET.fromstring(dom.XMLDesc(lv.VIR_DOMAIN_XML_INACTIVE)))
    return meta.get('job') == job_id and meta.get('complete') == 'yes'


def make_from_vm(config: Config, host: Host, job_id: str, args: FromVmArgs, reconcile: bool = False,
                 ownership: Optional[clone.Ownership] = None) -> FromVmResult:
    """Runs in the VM's host worker: copy the shut-off VM args['vm'] into the image args['image'], and seal it.

    The copy is a clone's full copy (clone.clone_volumes: a linked clone's disk is flattened, the definition gets a
    new UUID, no MACs and no metadata - so no clone metadata); the image is then marked in the image metadata
    (`made_from`). Everything is recorded in `ownership` before it is made, and removed again if a step fails.
    """
    ownership = ownership if ownership is not None else clone.Ownership()
    name, vm_name = args['image'], args['vm']
    with virt.Connection(config, host) as conn:
        existing = lookup(conn, name)
        if existing is not None and _complete(existing, job_id):
            return {'image': name, 'from_vm': vm_name, 'reconciled': True}
        if reconcile:
            clone.remove_owned(conn, name, ownership)  # what an earlier run of this job made, and only that
        source = lookup(conn, vm_name)
        if source is None:
            raise NotFoundError('no VM named %s on %s' % (vm_name, host.name))
        info = virt.describe(source, with_sizes=False)
        if info['active']:
            raise ConflictError('%s is running on %s: shut it down first, an image is made only from a shut-off VM'
                                % (vm_name, host.name))
        targets = clone_disk_paths(info, name)
        if not targets:
            raise ConflictError('%s on %s has no disk to make an image of' % (vm_name, host.name))
        volumes = clone.pool_volumes(conn, targets)
        if volumes is None:
            raise HostError('the disks of %s are not all in a libvirt storage pool of %s' % (vm_name, host.name))
        meta = {MADE_FROM: vm_name, 'job': job_id}
        try:
            with clone.VOLUME_LOCK:
                clone._check_absent(conn, name, targets)  # pylint: disable=protected-access
                domain_uuid = str(uuid.uuid4())
                ownership.intend_domain(name, domain_uuid)
                for _disk, path in targets:
                    ownership.intend_file(path)
                clone.clone_volumes(conn, source, name, volumes, False, domain_uuid)
            dom = lookup(conn, name)
            if dom is None:
                raise HostError('the image %s was not defined' % name)
            virt.set_image_metadata(dom, dict(meta, complete='no'))
            disks = [(d['path'], d['format']) for d in virt.describe(dom, with_sizes=False)['disks']
                     if d['device'] == 'disk' and d['path']]
            sealed = seal(disks)
            virt.set_image_metadata(dom, dict(meta, complete='yes'))
        except BaseException as failure:
            try:
                clone.remove_owned(conn, name, ownership)
            except Exception as e:  # report the rollback failure with the original one
                raise MaglicaError('%s; removing the half-made image also failed: %s' % (failure, e))
            raise
        return {'image': name, 'from_vm': vm_name, 'disks': [path for path, _format in disks], 'seal': sealed}
