# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What a host's libvirt says about domains and their disks: lookup, disk paths, backing chains, dependants.

Read-only, over any libvirt connection: the controller checks with it before it asks, and the host worker again
before it acts."""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from typing import Any, Dict, Iterable, List, Optional, Set, Tuple

from ..errors import ConflictError, HostError
from . import virt
from .virt import Connect, Domain, DomainInfo

# Between a VM's name and the name of one of its further disks; NAME_RE allows it in no VM name.
DISK_SEPARATOR = '@'


def lookup(conn: Connect, name: str) -> Optional[Domain]:
    lv = virt.libvirt()
    try:
        return conn.lookupByName(name)
    except lv.libvirtError as e:
        if e.get_error_code() == lv.VIR_ERR_NO_DOMAIN:
            return None
        raise HostError('cannot look up domain %s: %s' % (name, virt.error_text(e)))


def clone_disk_paths(image_info: DomainInfo, hostname: str) -> List[Tuple[Dict[str, Any], str]]:
    """Where each disk of the clone goes: beside the image's disk, named after the clone. The first is HOSTNAME.ext,
    the others HOSTNAME@diskN.ext: `@` is in no VM name, so no two clones (`web` with two disks, `web-1`) share a file."""
    paths: List[Tuple[Dict[str, Any], str]] = []
    for index, disk in enumerate(d for d in image_info['disks'] if d['device'] == 'disk' and d['path']):
        directory = os.path.dirname(disk['path'])
        extension = os.path.splitext(disk['path'])[1] or '.img'
        suffix = '' if index == 0 else '%sdisk%d' % (DISK_SEPARATOR, index)
        paths.append((disk, os.path.join(directory, '%s%s%s' % (hostname, suffix, extension))))
    return paths


def domain_disks(info: DomainInfo) -> List[str]:
    return [d['path'] for d in info['disks'] if d['device'] == 'disk' and d['path']]


def backing_chain(conn: Connect, path: str, limit: int = 16) -> List[str]:
    """The files a disk is backed by, nearest first, as libvirt's storage pools know them."""
    lv = virt.libvirt()
    chain: List[str] = []
    while path and len(chain) < limit:
        try:
            backing = ET.fromstring(conn.storageVolLookupByPath(path).XMLDesc(0)).findtext('./backingStore/path')
        except lv.libvirtError:  # not a pool volume: its chain is not known here
            break
        if not backing or backing in chain:
            break
        chain.append(backing)
        path = backing
    return chain


def disk_users(conn: Connect, paths: Iterable[str], but: Optional[str] = None) -> Dict[str, List[str]]:
    """{path: [names of the domains (other than `but`) whose definitions use it as a disk or a backing file]}."""
    wanted = set(paths)
    users: Dict[str, List[str]] = {}
    lv = virt.libvirt()
    for dom in conn.listAllDomains(0):
        if dom.name() == but:
            continue
        try:
            info = virt.describe(dom, with_sizes=False)
        except lv.libvirtError as e:
            if e.get_error_code() == lv.VIR_ERR_NO_DOMAIN:
                continue  # undefined since the listing, by a job beside this one (a migration, a removal): it uses no disk
            raise
        for own in domain_disks(info):
            for path in [own] + backing_chain(conn, own):
                if path in wanted:
                    users.setdefault(path, [])
                    if dom.name() not in users[path]:
                        users[path].append(dom.name())
    return {path: sorted(names) for path, names in users.items()}


def dependants(conn: Connect, name: str) -> List[str]:
    """The other domains of this host whose disks are backed (at any depth) by a disk of `name`: its linked clones."""
    dom = lookup(conn, name)
    if dom is None:
        return []
    own = domain_disks(virt.describe(dom, with_sizes=False))
    found: Set[str] = set()
    for users in disk_users(conn, own, but=name).values():
        found.update(users)
    # A domain that uses the very same file is not a dependant but a co-owner; backing users are.
    direct: Set[str] = set()
    lv = virt.libvirt()
    for other in conn.listAllDomains(0):
        if other.name() == name:
            continue
        try:
            info = virt.describe(other, with_sizes=False)
        except lv.libvirtError as e:
            if e.get_error_code() == lv.VIR_ERR_NO_DOMAIN:
                continue  # undefined since the listing (a migration beside this job): it uses no disk
            raise
        if set(domain_disks(info)) & set(own):
            direct.add(other.name())
    return sorted(found - direct)


def check_removal(name: str, host: str, info: DomainInfo, found: List[str], force_dependants: bool, image: bool = False) -> None:
    """Refuse removing an original image, or a VM whose disks back linked clones (`found`), unless forced.

    With `image` (an image's removal, asked as such): refuse anything but an original image, and its linked
    clones unless forced - the image itself needs no force."""
    if image:
        if not virt.is_image(info):
            raise ConflictError('%s on %s is %s, not an original image: remove it as a VM' % (
                name, host, 'a running VM' if info['active'] else 'a clone of %s' % info['clone_of']))
        if found and not force_dependants:
            raise ConflictError('image %s on %s is the backing file of linked clones: %s: use force_dependants to '
                                'remove them with it' % (name, host, ', '.join(found)))
        return
    if force_dependants or not (virt.is_image(info) or found):
        return
    users = 'linked clones use its disks: %s' % ', '.join(found) if found else ''
    if virt.is_image(info):
        raise ConflictError('%s on %s is an original image, not a clone%s: use force_dependants to remove it%s'
                            % (name, host, '; ' + users if users else '', ' and them first' if found else ''))
    raise ConflictError('%s on %s: %s: use force_dependants to remove them first' % (name, host, users))


def in_pool(conn: Connect, path: str) -> bool:
    lv = virt.libvirt()
    try:
        conn.storageVolLookupByPath(path)
        return True
    except lv.libvirtError:
        return False
