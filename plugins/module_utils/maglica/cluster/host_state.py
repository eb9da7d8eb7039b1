# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A host's state as its host worker pushes it, and the views of it the library reads.

Runs in three places: the host worker takes the snapshot (as root on its hypervisor), the client worker keeps the
last one of each host and cuts the views out of it, and the library cuts the same views out of what it surveys
itself - one piece of code, so a pushed host and a surveyed one look alike to listings and placement."""

from __future__ import annotations

import hashlib
import json
from typing import Any, Collection, Dict, List, Mapping, Optional, TypedDict

from . import virt
from .virt import Connect, DomainInfo


# What placement reads of an image's domain (the image checks, ImageOnHost): images are named on every host that
# holds them, so they travel without their disks.
IMAGE_KEYS = ('name', 'active', 'state', 'vcpus', 'memory_mb', 'clone_of', 'spread_group', 'image')


class Totals(TypedDict):
    """What placement counts of every domain of a host (placement.HostState's counters)."""
    active: int
    committed_mb: int
    committed_vcpus: int
    groups: Dict[str, int]


def snapshot(conn: Connect) -> Dict[str, Any]:
    """The state a host worker pushes: every domain as a listing describes it (disk sizes included), the host's
    memory (MiB) and CPUs, and the storage of every original image (what placement weighs a full clone by)."""
    domains = virt.list_domains(conn, with_sizes=True)
    memory_mb, cpus = virt.memory_and_cpus(conn)
    storage = {d['name']: virt.image_storage(conn, d) for d in domains if virt.is_image(d)}
    return {'memory_mb': memory_mb, 'cpus': cpus, 'domains': domains, 'storage': storage}


def _lasting(state: Mapping[str, Any]) -> Dict[str, Any]:
    """The state without what changes by itself while nothing is done (disk allocations, free pool space): what a
    change is told by. Those figures are refreshed with every whole copy (host_worker.state_interval)."""
    domains = [dict(d, disks=[dict(disk, capacity=None, allocation=None) for disk in d.get('disks') or []])
               for d in state.get('domains') or []]
    storage = {name: dict(s, disk_bytes=None, pool_free_bytes=None) for name, s in (state.get('storage') or {}).items()}
    return dict(state, domains=domains, storage=storage)


def digest(state: Mapping[str, Any]) -> str:
    """A fingerprint of the lasting part of a state: equal digests, same domains and images."""
    text = json.dumps(_lasting(state), sort_keys=True, separators=(',', ':'))
    return hashlib.sha256(text.encode('utf-8')).hexdigest()


def host_totals(domains: Collection[Mapping[str, Any]]) -> Totals:
    """The running domains, the memory and vCPUs they commit, and the members of each spread group."""
    totals: Totals = {'active': 0, 'committed_mb': 0, 'committed_vcpus': 0, 'groups': {}}
    for domain in domains:
        if domain['active']:
            totals['active'] += 1
            totals['committed_mb'] += domain['memory_mb']
            totals['committed_vcpus'] += domain['vcpus']
        group = domain.get('spread_group')
        if group:
            totals['groups'][group] = totals['groups'].get(group, 0) + 1
    return totals


def placement_view(state: Mapping[str, Any], images: Collection[str] = (), names: Collection[str] = (),
                   totals: Optional[Totals] = None) -> Dict[str, Any]:
    """What one placement needs of a host (virt.host_resources's shape, cut down): the host's memory and CPUs, the
    totals of all its domains (`totals`, when they were counted already), the domains named in `names`, whole (the
    name check returns the domain a re-run finds, its SSH host keys with it; reservations of clones in flight look
    for theirs), those named in `images` with IMAGE_KEYS only (the image checks), and the storage of those images."""
    domains: List[DomainInfo] = []
    for domain in state['domains']:
        if domain['name'] in names:
            domains.append(domain)
        elif domain['name'] in images:
            domains.append({key: domain.get(key) for key in IMAGE_KEYS})
    storage = {name: s for name, s in (state.get('storage') or {}).items() if name in images}
    return {'memory_mb': state['memory_mb'], 'cpus': state['cpus'], 'totals': totals or host_totals(state['domains']),
            'domains': domains, 'storage': storage}
