# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Placement: which host a clone goes to. Pure: it decides from host state it is given, and asks nothing.

Two policies (configuration `placement.policy`):

- `seed` (the default): the least loaded host, load = (running domains + reserved clones) x 10 / weight.
  No host is filtered out for its resources.
- `resources`: hosts whose uncommitted memory or pool space cannot take the clone are filtered out, each with
  its reason; the others are scored by the memory and vCPUs they would have committed, plus their reserved
  clones, divided by their weight (see score_resources and README).

Reservations (clones queued or running at the client worker) count as if their clones ran already. A host in
maintenance takes nothing. A spread
group sends its members to the hosts with the fewest members first. Batches are planned one VM after the
other, each decision reserving its host before the next.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Sequence, TypedDict

from ..errors import ConflictError

POLICIES = ('seed', 'resources')
# Weights of committed memory and committed vCPUs in the resources score.
MEMORY_SHARE = 0.75
VCPU_SHARE = 0.25
GIB = 1024 ** 3
# Candidates a decision explains (best first): enough to see why, not a page per host in a cloud of a thousand.
CANDIDATES_SHOWN = 20


class NoHostFits(ConflictError):
    """No host can take the clone: the message names each host's reason."""

    def __init__(self, message: str, filtered: List[Dict[str, str]]):
        super().__init__(message)
        self.filtered = filtered


@dataclass
class ImageOnHost:
    """An original image as one host holds it: what one clone of it needs there."""
    memory_mb: int
    vcpus: int
    # Allocation of its disks (what a full clone copies), and the pool holding them (None: unknown).
    disk_bytes: int = 0
    pool: Optional[str] = None


@dataclass
class HostState:
    """One host as placement sees it: surveyed domains plus the reservations applied to it."""
    host: str
    weight: int
    order: int = 0
    memory_total_mb: int = 0
    cpus: int = 1
    committed_mb: int = 0           # memory of the domains that run, and of reserved clones that will start
    committed_vcpus: int = 0
    active: int = 0                 # running domains
    reserved: int = 0               # clones queued or running at the client worker
    images: Dict[str, ImageOnHost] = field(default_factory=dict)
    pool_free_bytes: Dict[str, int] = field(default_factory=dict)   # pool name -> free space less reserved copies
    groups: Dict[str, int] = field(default_factory=dict)            # spread group -> members (domains and reserved)
    domains: Dict[str, bool] = field(default_factory=dict)          # name -> active, of every domain defined
    maintenance: bool = False       # in maintenance (maglica_host): it takes no new VM

    def reserve(self, image: str, start: bool = True, clone_mode: str = 'full', spread_group: Optional[str] = None,
                hostname: Optional[str] = None) -> None:
        """Count one clone on its way. A clone that already has a domain here counts through the domain for what
        the survey saw of it (defined: disk and group; running: memory), and through the reservation for the rest."""
        self.reserved += 1
        seen_active = self.domains.get(hostname) if hostname is not None else None
        defined = seen_active is not None
        info = self.images.get(image)
        if info is None:
            return
        if start and not seen_active:
            self.committed_mb += info.memory_mb
            self.committed_vcpus += info.vcpus
        if not defined:
            if clone_mode == 'full' and info.pool is not None and info.pool in self.pool_free_bytes:
                self.pool_free_bytes[info.pool] -= info.disk_bytes
            if spread_group:
                self.groups[spread_group] = self.groups.get(spread_group, 0) + 1


@dataclass
class Request:
    """One clone to place."""
    image: str
    hostname: str = ''
    start: bool = True
    clone_mode: str = 'full'
    spread_group: Optional[str] = None
    host: Optional[str] = None
    exclude_hosts: Sequence[str] = ()


def gib(value_bytes: float) -> str:
    """Bytes for reasons: '1.1 GiB', '2 GiB'; under 1 GiB in MiB ('300 MiB')."""
    if value_bytes < GIB:
        return '%d MiB' % (value_bytes // 1048576)
    text = '%.1f' % (value_bytes / GIB)
    return (text[:-2] if text.endswith('.0') else text) + ' GiB'


def uncommitted_mb(state: HostState, overcommit: float) -> float:
    return state.memory_total_mb * overcommit - state.committed_mb


def unfit_reason(state: HostState, request: Request, overcommit: float) -> Optional[str]:
    """Why `state` cannot take the clone under the resources policy, or None when it can."""
    info = state.images[request.image]
    if request.start:
        free = uncommitted_mb(state, overcommit)
        if info.memory_mb > free:
            return '%s: %s uncommitted, clone needs %s' % (state.host, gib(max(free, 0) * 1048576), gib(info.memory_mb * 1048576))
    if request.clone_mode == 'full' and info.pool is not None and info.pool in state.pool_free_bytes:
        free_disk = state.pool_free_bytes[info.pool]
        if info.disk_bytes > free_disk:
            return '%s: %s free in pool %s, clone needs %s' % (state.host, gib(max(free_disk, 0)), info.pool, gib(info.disk_bytes))
    return None


def score_seed(state: HostState) -> float:
    """The load of a host, with reserved clones counted as running: (active + reserved) x 10 / weight."""
    return (state.active + state.reserved) * 10.0 / state.weight


def score_resources(state: HostState, request: Request, overcommit: float) -> float:
    """Lower is better: (100 x (0.75 x memory share + 0.25 x vCPU share) + reserved) / weight, where the shares are
    what the host would have committed with this clone, of its memory capacity (total x overcommit) and its CPUs."""
    info = state.images[request.image]
    memory = state.committed_mb + (info.memory_mb if request.start else 0)
    vcpus = state.committed_vcpus + (info.vcpus if request.start else 0)
    capacity = max(state.memory_total_mb * overcommit, 1.0)
    share = MEMORY_SHARE * memory / capacity + VCPU_SHARE * vcpus / max(state.cpus, 1)
    return (100.0 * share + state.reserved) / state.weight


class Candidate(TypedDict):
    """A host that can take the clone, as check mode and --dry-run show it."""
    host: str
    weight: int
    score: float
    active: int
    reserved: int
    free_memory_mb: int
    free_disk_bytes: Optional[int]
    group_members: int


def candidate(state: HostState, request: Request, score: float, overcommit: float) -> Candidate:
    """What check mode and --dry-run show of a host that can take the clone."""
    info = state.images[request.image]
    free_disk = state.pool_free_bytes.get(info.pool) if info.pool is not None else None
    return {'host': state.host, 'weight': state.weight, 'score': round(score, 4), 'active': state.active,
            'reserved': state.reserved, 'free_memory_mb': int(uncommitted_mb(state, overcommit)),
            'free_disk_bytes': free_disk,
            'group_members': state.groups.get(request.spread_group, 0) if request.spread_group else 0}


@dataclass
class Decision:
    host: str
    candidates: List[Candidate]   # best first, the CANDIDATES_SHOWN best
    filtered: List[Dict[str, str]]


def decide(states: Iterable[HostState], request: Request, policy: str = 'seed', overcommit: float = 1.0) -> Decision:
    """Choose a host for one clone. Raises NoHostFits (each host's reason) when none can take it,
    ConflictError when the forced `host` cannot."""
    if policy not in POLICIES:
        raise ConflictError('placement policy %r is not one of %s' % (policy, ', '.join(POLICIES)))
    excluded = set(request.exclude_hosts or ())
    filtered: List[Dict[str, str]] = []
    scored = []
    group = request.spread_group
    resources = policy == 'resources'
    for state in states:
        if state.host in excluded:
            filtered.append({'host': state.host, 'reason': '%s: excluded (exclude_hosts)' % state.host})
            continue
        if request.host is not None and state.host != request.host:
            continue
        if state.maintenance:
            filtered.append({'host': state.host, 'reason': '%s: in maintenance (maglica host activate %s brings it back)'
                             % (state.host, state.host)})
            continue
        if request.image not in state.images:
            filtered.append({'host': state.host, 'reason': '%s: does not hold image %s' % (state.host, request.image)})
            continue
        if resources:
            reason = unfit_reason(state, request, overcommit)
            if reason is not None:
                filtered.append({'host': state.host, 'reason': reason})
                continue
            value = score_resources(state, request, overcommit)
        else:
            value = score_seed(state)
        members = state.groups.get(group, 0) if group else 0
        scored.append((members, value, state.order, state))
    if not scored:
        what = 'host %s' % request.host if request.host is not None else 'no host'
        reasons = '; '.join(f['reason'] for f in filtered) or 'no host holds image %s' % request.image
        raise NoHostFits('%s fits a clone of %s%s: %s' % (what, request.image, ' as %s' % request.hostname if request.hostname else '',
                                                          reasons), filtered)
    # A spread group first: the fewest members of the group, then the score, then configuration order.
    scored.sort(key=lambda entry: (entry[0], entry[1], entry[2]))
    candidates = [candidate(state, request, value, overcommit) for _members, value, _order, state in scored[:CANDIDATES_SHOWN]]
    return Decision(host=scored[0][3].host, candidates=candidates, filtered=filtered)


def place(states: Sequence[HostState], request: Request, policy: str = 'seed', overcommit: float = 1.0) -> Decision:
    """decide(), then the clone reserved on the host chosen: a batch is placed by calling this for each VM in order,
    so that each VM's host is counted before the next is placed."""
    decision = decide(states, request, policy, overcommit)
    chosen = next(state for state in states if state.host == decision.host)
    chosen.reserve(request.image, request.start, request.clone_mode, request.spread_group, request.hostname)
    return decision
