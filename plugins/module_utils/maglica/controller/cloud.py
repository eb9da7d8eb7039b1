# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What Maglica does, as functions: the one place that modules and the `maglica` command call."""

from __future__ import annotations

import collections
import contextlib
import functools
from typing import (
    Any,
    Collection,
    Dict,
    List,
    Mapping,
    Optional,
    Sequence,
    Tuple,
    TypedDict,
)

from ..cluster import virt

# What modules and the `maglica` command call besides this module's own functions: they import this module
# alone (an import-linter contract in `make test`).
from ..cluster.config import Config, uri_problems
from ..cluster.config import load as load_config
from ..deps import missing as missing_libraries
from ..errors import (
    ConflictError,
    HostError,
    JobFailed,
    MaglicaError,
    NotFoundError,
    StalePlacement,
)
from ..protocol import messages
from ..protocol.import_job import Limits as ImportLimits
from ..cluster.host_state import host_totals
from . import maintenance, migration, placement, pushed, reach
from .client import Client, Job, Progress, Reservations, Slot
from .hosts import host_info
from .image_copy import copy as copy_image
from .image_import import import_image
from .image_lifecycle import create_from_vm
from .image_lifecycle import remove as remove_image
from .known_hosts import known_hosts_lines
from .maintenance import DrainIncomplete, DrainMove, HostResult
from .migration import MigrationResult
from .migration import migrate_to as vm_migrate_to
from .reach import WAIT_FOR, clone_names, interface_addresses
from .snapshots import SnapshotList, SnapshotResult, add_snapshots, list_snapshots
from .snapshots import snapshot as vm_snapshot
from .vm import ensure as ensure_vm
from .vm import inventory, parse_size, state_word, vm_list

__all__ = [
    'CLONE_MODES',
    'CONSOLE_TIMEOUT',
    'ImportLimits',
    'STALE_RETRIES',
    'VM_KEYS',
    'WAIT_FOR',
    'clone',
    'clone_args',
    'clone_batch',
    'clone_names',
    'console',
    'copy_image',
    'create_from_vm',
    'ensure_vm',
    'DrainIncomplete',
    'DrainMove',
    'HostResult',
    'host_info',
    'host_refresh',
    'host_state',
    'host_states',
    'image_list',
    'import_image',
    'interface_addresses',
    'inventory',
    'job_info',
    'known_hosts_lines',
    'MigrationResult',
    'plan_migration',
    'vm_migrate',
    'vm_migrate_to',
    'load_config',
    'missing_libraries',
    'parse_size',
    'plan_clone',
    'remove_image',
    'reservations',
    'state_word',
    'uri_problems',
    'vm_list',
    'vm_snapshot',
    'vm_snapshots',
    'vm_list_with_snapshots',
]

CLONE_MODES = ('full', 'linked')


class ImageListing(TypedDict):
    """image_list's result: the images, and per host {host, reachable, error, images: how many}."""
    images: List[Dict[str, Any]]
    hosts: List[Dict[str, Any]]


class _ClonePlan(TypedDict):
    exists: bool
    host: str
    candidates: List[placement.Candidate]
    filtered: List[Dict[str, str]]
    unreachable: List[str]
    # The hosts whose libvirtd this plan asked itself (no pushed state young enough), and the age of the oldest
    # pushed state it read (seconds; 0 when it read none).
    surveyed: List[str]
    state_age_s: float
    warnings: List[str]
    policy: str
    seen: List[str]


class ClonePlan(_ClonePlan, total=False):
    """Where a clone goes (plan_clone): `domain` when it exists already; `job_id` (_plan_batch) the id its job will have."""
    domain: Dict[str, Any]
    job_id: str


class Batch(TypedDict):
    """A clone job's place in its batch: the batch id and how many of its jobs go to the same host."""
    id: str
    size: int


class _CloneArgs(TypedDict):
    image: str
    hostname: str
    clone_mode: str
    start: bool


class CloneArgs(_CloneArgs, total=False):
    """A vm.clone job's arguments (messages.ACTIONS['vm.clone'])."""
    network: Dict[str, Any]
    root_password_hash: str
    ssh_authorized_keys: List[str]
    cloud_init_user_data: str
    spread_group: str
    batch: Batch
    customize: bool  # false: the disks stay the image's


class _CloneResult(TypedDict):
    changed: bool
    hostname: str
    host: str
    candidates: List[placement.Candidate]
    filtered: List[Dict[str, str]]
    policy: str
    unreachable: List[str]
    surveyed: List[str]
    state_age_s: float
    warnings: List[str]
    job_id: Optional[str]
    job: Optional[Job]
    result: Dict[str, Any]
    ip: Optional[str]
    ssh_host_keys: List[str]
    known_hosts: List[str]


class CloneResult(_CloneResult, total=False):
    """clone's result (one per VM in clone_batch's): `domain` when the VM existed already, `message` when its clone
    was under way already, `failed` when its job failed."""
    domain: Dict[str, Any]
    message: str
    failed: str


class PlannedClone(TypedDict):
    """Where one VM of a batch went, and why."""
    hostname: str
    host: str
    candidates: List[placement.Candidate]
    filtered: List[Dict[str, str]]
    exists: bool


class BatchResult(TypedDict):
    """clone_batch's result."""
    changed: bool
    results: List[CloneResult]
    plan: List[PlannedClone]


def image_list(config: Config, patterns: Optional[Sequence[str]] = None, hosts: Optional[Sequence[str]] = None) -> ImageListing:
    """Original images (inactive domains that are not clones) on every host, asked in parallel.

    Returns {images: [...], hosts: [{host, reachable, error, images}]}; a host that
    cannot be reached is reported in `hosts` and does not stop the others.
    """
    def select(domain: Mapping[str, Any], host: str) -> Optional[Dict[str, Any]]:
        return dict(domain, host=host) if virt.is_image(domain) and virt.matches(domain['name'], patterns) else None
    images, report = virt.collect(config, select, 'images', hosts, pushed.answers(config, 'images', hosts))
    return {'images': images, 'hosts': report}


# Re-plans after the client worker refused a placement as stale (another clone took the host meanwhile).
STALE_RETRIES = 8


def reservations(config: Config, required: bool = False) -> Tuple[List[Slot], Optional[str]]:
    """(the slot reservations of every clone in flight and the hosts in maintenance (a client.Reservations), None),
    or ([], why) when the client worker cannot say:
    then the plan counts domains only (check mode says so). With `required` (a clone that will be submitted),
    that failure is raised instead: the submission would meet the same silent client worker."""
    try:
        with Client(config) as client:
            return client.slots(), None
    except MaglicaError as e:
        if required:
            raise
        return [], 'client worker: %s (clones in flight are not counted in this plan)' % e


def host_states(config: Config, answers: Sequence[Mapping[str, Any]], slots: Sequence[Slot],
                images: Collection[str], maintenance: Optional[Collection[str]] = None) -> List[placement.HostState]:
    """Placement's view of every reachable host: its domains, the storage of `images`, and the reservations.
    The hosts in `maintenance` (default: those the client worker named with the reservations) take nothing."""
    if maintenance is None:
        maintenance = slots.maintenance if isinstance(slots, Reservations) else ()
    states = []
    configured = {host.name: host.memory_mb for host in config.hosts}
    for order, answer in enumerate(answers):
        if not answer['reachable']:
            continue
        found = answer['result']
        # Placement's view (pushed.answers) counted every domain already and keeps the domains it names only.
        totals = found.get('totals') or host_totals(found['domains'])
        state = placement.HostState(host=answer['host'], weight=answer['weight'], order=order,
                                    memory_total_mb=configured.get(answer['host']) or found['memory_mb'],
                                    cpus=found['cpus'], maintenance=answer['host'] in maintenance,
                                    active=totals['active'], committed_mb=totals['committed_mb'],
                                    committed_vcpus=totals['committed_vcpus'], groups=dict(totals['groups']))
        for domain in found['domains']:
            state.domains[domain['name']] = domain['active']
            if domain['name'] in images and virt.is_image(domain):
                storage = found['storage'].get(domain['name']) or {}
                pool = storage.get('pool')
                state.images[domain['name']] = placement.ImageOnHost(domain['memory_mb'], domain['vcpus'],
                                                                     storage.get('disk_bytes') or 0, pool)
                if pool is not None and storage.get('pool_free_bytes') is not None:
                    state.pool_free_bytes[pool] = storage['pool_free_bytes']
        states.append(state)
    by_host = {state.host: state for state in states}
    for slot in slots:
        if slot['host'] in by_host:
            by_host[slot['host']].reserve(slot['image'], slot['start'], slot['clone_mode'], slot.get('spread_group'), slot['hostname'])
    return states


def _states_counting_reservations(config: Config, answers: Sequence[Mapping[str, Any]],
                                  images: Collection[str]) -> List[placement.HostState]:
    """host_states with the clones in flight (when the client worker can say): placement's view, as clones get it."""
    slots, _why = reservations(config)
    return host_states(config, answers, slots, images)


def vm_migrate(config: Config, name: str, host: Optional[str] = None, live: Optional[bool] = None, wait: bool = True,
               timeout: float = migration.DEFAULT_TIMEOUT, check_mode: bool = False) -> MigrationResult:
    """Move the VM `name` to `host`, or where placement (the clones' own) chooses: see controller/migration.py."""
    return migration.migrate(config, name, _states_counting_reservations, host, live, wait, timeout, check_mode)


def plan_migration(config: Config, name: str, host: Optional[str] = None, live: Optional[bool] = None,
                   exclude_hosts: Sequence[str] = ()) -> MigrationResult:
    """Where the VM would go (check mode's answer), never `exclude_hosts` nor its own host; changes nothing."""
    return migration.plan(config, name, _states_counting_reservations, host, live, exclude_hosts)


def _check_image(answers: Sequence[Mapping[str, Any]], image: str) -> List[str]:
    """The image must be an inactive original wherever it is, and somewhere."""
    holders = []
    for answer in answers:
        for domain in (answer['result'] or {}).get('domains') or []:
            if domain['name'] == image:
                if domain['active']:
                    raise ConflictError('image %s is running on %s; an original image must be an inactive domain' % (image, answer['host']))
                if not virt.is_image(domain):
                    raise ConflictError('%s on %s is a clone, not an original image' % (image, answer['host']))
                holders.append(answer['host'])
    if not holders:
        unreachable = [a['error'] for a in answers if not a['reachable']]
        asked = ', '.join(a['host'] for a in answers if a['reachable']) or 'none reachable'
        extra = '; unreachable: %s' % '; '.join(unreachable) if unreachable else ''
        raise NotFoundError('image %s is not on any host (asked: %s%s)' % (image, asked, extra))
    return holders


def _existing(answers: Sequence[Mapping[str, Any]], hostname: str,
              allow_unreachable: bool = False) -> Optional[Tuple[str, Dict[str, Any]]]:
    """(host, domain) of the domain called `hostname`, None when there is none.

    Fail closed: when it is on no host that answered and a host did not answer, it may be there - a clone now
    would make a second VM of that name. Refused (HostError naming those hosts) unless `allow_unreachable`."""
    existing = [(a['host'], d) for a in answers for d in (a['result'] or {}).get('domains') or [] if d['name'] == hostname]
    if len(existing) > 1:
        raise ConflictError('%s is defined on several hosts (%s): remove all but one' % (hostname, ', '.join(where for where, _domain in existing)))
    if existing:
        where, domain = existing[0]
        if virt.is_image(domain):
            raise ConflictError('the hostname %s is already used by an image on %s' % (hostname, where))
        return existing[0]
    down = [a for a in answers if not a['reachable']]
    if down and not allow_unreachable:
        raise HostError('cannot tell whether %s is already defined: %s cannot be reached (%s); nothing was changed. '
                        'allow_unreachable (--allow-unreachable) clones all the same, at the risk of a second VM of '
                        'that name' % (hostname, ', '.join(a['host'] for a in down), '; '.join(a['error'] for a in down)))
    return None


def _check_hosts(config: Config, host: Optional[str], exclude_hosts: Optional[Sequence[str]]) -> None:
    config.target_names(([host] if host is not None else []) + list(exclude_hosts or []))
    if host is not None and host in (exclude_hosts or []):
        raise ConflictError('host %s is both forced (host) and excluded (exclude_hosts)' % host)


def _request(vm: Mapping[str, Any]) -> placement.Request:
    return placement.Request(image=vm['image'], hostname=vm['hostname'], start=vm.get('start', True),
                             clone_mode=vm.get('clone_mode') or 'full', spread_group=vm.get('spread_group'),
                             host=vm.get('host'), exclude_hosts=tuple(vm.get('exclude_hosts') or ()))


def _plan_batch(config: Config, vms: Sequence[Mapping[str, Any]], slots: Optional[List[Slot]] = None, skip: Collection[int] = (),
                submitting: bool = False, allow_unreachable: bool = False) -> Dict[int, ClonePlan]:
    """Place every VM of `vms` (dicts of clone()'s per-VM keywords) except the indexes in `skip`, in order, as one
    decision: each VM's host is reserved before the next is placed. Returns {index: plan} (plan_clone's, plus
    `job_id`, the id its job will have)."""
    warnings = []
    if slots is None:
        slots, why = reservations(config, required=submitting)
        if why:
            warnings.append(why)
    images = set(vm['image'] for vm in vms) | set(slot['image'] for slot in slots)
    names = set(vm['hostname'] for vm in vms) | set(slot['hostname'] for slot in slots)
    # An image defined a moment ago may be in no pushed state yet: then every host is asked.
    answers = pushed.placement_answers(config, images=images, names=names, held=images)
    unreachable = [a['error'] for a in answers if not a['reachable']]
    surveyed = [a['host'] for a in answers if a['source'] == 'survey']
    oldest = max((a['age_s'] for a in answers), default=0.0)
    policy = config.placement['policy']
    overcommit = config.placement['memory_overcommit']
    states: Optional[List[placement.HostState]] = None
    plans: Dict[int, ClonePlan] = {}
    for index, vm in enumerate(vms):
        if index in skip:
            continue
        found = _existing(answers, vm['hostname'], allow_unreachable)
        if found is not None:
            plans[index] = {'exists': True, 'host': found[0], 'domain': found[1], 'candidates': [], 'filtered': [],
                            'unreachable': unreachable, 'surveyed': surveyed, 'state_age_s': oldest, 'warnings': warnings, 'policy': policy, 'seen': []}
            continue
        holders = _check_image(answers, vm['image'])
        in_flight = next((slot for slot in slots if slot['hostname'] == vm['hostname']), None)
        if in_flight is not None:
            # Its clone is on its way (an earlier run that did not wait): it is already counted where it goes, and
            # the client worker will answer with that job.
            plans[index] = {'exists': False, 'host': in_flight['host'], 'candidates': [], 'filtered': [],
                            'unreachable': unreachable, 'surveyed': surveyed, 'state_age_s': oldest, 'warnings': warnings, 'policy': policy,
                            'seen': [slot['job_id'] for slot in slots if slot['host'] == in_flight['host']],
                            'job_id': messages.new_job_id()}
            continue
        if vm.get('host') is not None and vm['host'] not in holders:
            raise ConflictError('host %s does not hold image %s; hosts that do: %s' % (vm['host'], vm['image'], ', '.join(holders)))
        if states is None:
            states = host_states(config, answers, slots, images)
        request = _request(vm)
        decision = placement.place(states, request, policy, overcommit)
        # The reservations on the chosen host that this plan counted: the client worker checks them.
        counted = [slot['job_id'] for slot in slots if slot['host'] == decision.host]
        counted.extend(plan['job_id'] for plan in plans.values() if plan.get('job_id') and plan['host'] == decision.host)
        plans[index] = {'exists': False, 'host': decision.host, 'candidates': decision.candidates, 'filtered': decision.filtered,
                        'unreachable': unreachable, 'surveyed': surveyed, 'state_age_s': oldest, 'warnings': warnings, 'policy': policy, 'seen': counted,
                        'job_id': messages.new_job_id()}
    return plans


def plan_clone(config: Config, image: str, hostname: str, host: Optional[str] = None, exclude_hosts: Optional[Sequence[str]] = None,
               spread_group: Optional[str] = None, clone_mode: str = 'full', start: bool = True,
               slots: Optional[List[Slot]] = None, allow_unreachable: bool = False) -> ClonePlan:
    """Decide where a clone goes, without changing anything.

    Returns {exists, host, candidates, filtered, unreachable, warnings, policy, seen}: `exists` when a domain called
    `hostname` is already defined (then `host` is where it is); `candidates` best first (host, weight, score,
    active, reserved, free_memory_mb, free_disk_bytes, group_members); `filtered` [{host, reason}] of the hosts
    left out; `seen` the reservations on the chosen host that were counted. `slots`: the reservations to count
    (default: asked of the client worker). Raises placement.NoHostFits naming each host's reason, and HostError
    when a host cannot be reached and `hostname` is on none of the others (unless `allow_unreachable`).
    """
    _check_hosts(config, host, exclude_hosts)
    vm = {'image': image, 'hostname': hostname, 'host': host, 'exclude_hosts': exclude_hosts, 'spread_group': spread_group,
          'clone_mode': clone_mode, 'start': start}
    plan = _plan_batch(config, [vm], slots, allow_unreachable=allow_unreachable)[0]
    plan.pop('job_id', None)
    return plan


def clone_args(image: str, hostname: str, clone_mode: str = 'full', start: bool = True, network: Optional[Mapping[str, Any]] = None,
               root_password_hash: Optional[str] = None, ssh_authorized_keys: Optional[Sequence[str]] = None,
               cloud_init_user_data: Optional[str] = None, spread_group: Optional[str] = None, customize: bool = True) -> CloneArgs:
    args: CloneArgs = {'image': image, 'hostname': hostname, 'clone_mode': clone_mode, 'start': start}
    if not customize:
        if network or root_password_hash or ssh_authorized_keys or cloud_init_user_data:
            raise MaglicaError('%s: customize=false writes nothing into the clone, so network, root_password_hash, '
                               'ssh_authorized_keys and cloud_init_user_data cannot be given' % hostname)
        args['customize'] = False
    if network:
        args['network'] = {k: v for k, v in network.items() if v is not None}
    if root_password_hash:
        args['root_password_hash'] = root_password_hash
    if ssh_authorized_keys:
        args['ssh_authorized_keys'] = list(ssh_authorized_keys)
    if cloud_init_user_data:
        args['cloud_init_user_data'] = cloud_init_user_data
    if spread_group:
        args['spread_group'] = spread_group
    return args


# The per-VM keywords of clone() that a batch item may carry.
VM_KEYS = ('image', 'hostname', 'host', 'clone_mode', 'start', 'network', 'root_password_hash', 'ssh_authorized_keys',
           'cloud_init_user_data', 'spread_group', 'exclude_hosts', 'customize')


def clone(config: Config, image: str, hostname: str, host: Optional[str] = None, clone_mode: str = 'full', start: bool = True,
          network: Optional[Mapping[str, Any]] = None, root_password_hash: Optional[str] = None,
          ssh_authorized_keys: Optional[Sequence[str]] = None, wait: bool = True, timeout: float = 600, check_mode: bool = False,
          progress: Optional[Progress] = None, wait_for: str = 'none', wait_for_timeout: float = 300,
          cloud_init_user_data: Optional[str] = None, spread_group: Optional[str] = None,
          exclude_hosts: Optional[Sequence[str]] = None, allow_unreachable: bool = False, customize: bool = True) -> CloneResult:
    """Clone `image` to a VM called `hostname` on the best host. Idempotent on `hostname`: refused when a host cannot
    be reached (the VM may be there), unless `allow_unreachable`.

    With `wait_for` ip or ssh, also waits (up to `wait_for_timeout` seconds, apart from the job's `timeout`)
    until the started clone has an address, or answers SSH with the host key it was given; a clone that
    does not get there is kept and reach.NotReachable is raised.
    With `customize` false the clone's disks stay as the image's (its hostname, network settings, machine-id and SSH
    host keys are the image's): no appliance is launched, and wait_for ssh cannot be asked (no host key is made).
    Returns {changed, host, candidates, filtered, policy, unreachable, job_id, job, result, ip, ssh_host_keys, known_hosts}.
    """
    vm = {'image': image, 'hostname': hostname, 'host': host, 'clone_mode': clone_mode, 'start': start, 'network': network,
          'root_password_hash': root_password_hash, 'ssh_authorized_keys': ssh_authorized_keys,
          'cloud_init_user_data': cloud_init_user_data, 'spread_group': spread_group, 'exclude_hosts': exclude_hosts,
          'customize': customize}
    return clone_batch(config, [vm], wait, timeout, check_mode, progress, wait_for, wait_for_timeout,
                       allow_unreachable)['results'][0]


def _vm_args(config: Config, index: int, vm: Mapping[str, Any]) -> CloneArgs:
    """The job arguments of one batch item, checked before anything is asked or submitted."""
    unknown = set(vm) - set(VM_KEYS)
    if unknown:
        raise MaglicaError('vms[%d] has unknown key(s) %s; known: %s' % (index, ', '.join(sorted(unknown)), ', '.join(VM_KEYS)))
    for key in ('image', 'hostname'):
        if not vm.get(key):
            raise MaglicaError('vms[%d] needs %s' % (index, key))
    args = clone_args(vm['image'], vm['hostname'], vm.get('clone_mode') or 'full', vm.get('start', True), vm.get('network'),
                      vm.get('root_password_hash'), vm.get('ssh_authorized_keys'), vm.get('cloud_init_user_data'),
                      vm.get('spread_group'), vm.get('customize') is not False)
    # The host name is a placeholder here.
    messages.validate_job({'id': messages.new_job_id(), 'host': config.hosts[0].name, 'action': 'vm.clone', 'args': args})
    _check_hosts(config, vm.get('host'), vm.get('exclude_hosts'))
    return args


def clone_batch(config: Config, vms: List[Dict[str, Any]], wait: bool = True, timeout: float = 600, check_mode: bool = False,
                progress: Optional[Progress] = None, wait_for: str = 'none', wait_for_timeout: float = 300,
                allow_unreachable: bool = False) -> BatchResult:
    """Clone several VMs, placed as one decision: each VM's host is reserved before the next is placed, every job is
    submitted, then all are waited for. `vms`: dicts of clone()'s per-VM keywords (VM_KEYS).

    Returns {changed, results: [one clone()-shaped result per VM, in order], plan: [{hostname, host, candidates,
    filtered}]}. When no host fits a VM, placement.NoHostFits is raised before any job is submitted; HostError when
    a host cannot be reached and a VM's hostname is on none of the others (unless `allow_unreachable`). When jobs
    fail, every job is waited for first; then the failure (JobFailed) is raised, its `results` attribute holding
    what the others did.
    """
    if not isinstance(vms, list) or not vms:
        raise MaglicaError('vms must be a non-empty list of VMs to clone')
    all_args = [_vm_args(config, index, vm) for index, vm in enumerate(vms)]
    names = [vm['hostname'] for vm in vms]
    twice = sorted(set(name for name in names if names.count(name) > 1))
    if twice:
        raise MaglicaError('vms name %s more than once: each hostname is one VM' % ', '.join(twice))
    if wait_for not in reach.WAIT_FOR:
        raise MaglicaError('wait_for must be one of %s, not %r' % (', '.join(reach.WAIT_FOR), wait_for))
    for vm in vms:
        if wait_for != 'none' and not (vm.get('start', True) and wait):
            raise MaglicaError('wait_for=%s needs start=true and wait=true: only a started clone can answer' % wait_for)
        if wait_for == 'ssh' and vm.get('customize') is False:
            raise MaglicaError('wait_for=ssh needs customize=true: the SSH host keys it checks are made in customisation')
    results: Dict[int, CloneResult] = {}
    plans: Dict[int, ClonePlan] = {}
    with contextlib.ExitStack() as stack:
        client: Optional[Client] = None
        for attempt in range(STALE_RETRIES + 1):
            pending = [i for i in range(len(vms)) if i not in results]
            if not pending:
                break
            planned = _plan_batch(config, vms, skip=set(results), submitting=not check_mode, allow_unreachable=allow_unreachable)
            plans.update(planned)
            # The jobs of a batch carry its id and how many of them go to their host: that host's worker customises
            # them in one appliance launch, whatever its concurrency (batching.py).
            batch_id = messages.new_job_id()
            per_host = collections.Counter(planned[i]['host'] for i in pending if not planned[i]['exists'])
            for index in pending:
                plan = planned[index]
                result: CloneResult = {
                    'changed': False, 'hostname': vms[index]['hostname'], 'host': plan['host'], 'candidates': plan['candidates'],
                    'filtered': plan['filtered'], 'policy': plan['policy'], 'unreachable': plan['unreachable'],
                    'surveyed': plan['surveyed'], 'state_age_s': plan['state_age_s'], 'warnings': plan['warnings'],
                    'job_id': None, 'job': None, 'result': {}, 'ip': None, 'ssh_host_keys': [], 'known_hosts': []}
                results[index] = result
                if plan['exists']:
                    result['domain'] = plan['domain']
                    result['ssh_host_keys'] = plan['domain'].get('ssh_host_keys') or []
                    continue
                result['changed'] = True
                if check_mode:
                    continue
                args = all_args[index]
                if len(vms) > 1:
                    args = {**args, 'batch': {'id': batch_id, 'size': per_host[plan['host']]}}
                job = messages.new_job(plan['host'], 'vm.clone', args, ttl=max(1, int(timeout)))
                job['id'] = plan['job_id']
                if client is None:
                    client = stack.enter_context(Client(config))
                try:
                    result['job'] = submitted = client.submit(job, seen=plan['seen'])
                except StalePlacement:
                    # Another clone took room on that host since it was planned: place this VM and the rest again.
                    for later in pending[pending.index(index):]:
                        results.pop(later, None)
                    if attempt == STALE_RETRIES:
                        raise
                    break
                result['job_id'] = submitted['id']
                if result['job_id'] != job['id']:
                    # The client worker holds the name for a clone already in flight (an earlier run that timed out or
                    # did not wait): that job is this task's, and this run changes nothing itself.
                    result.update({'changed': False, 'host': submitted['host'],
                                   'message': 'a clone of %s is already under way as job %s on %s'
                                   % (vms[index]['hostname'], result['job_id'], submitted['host'])})
        ordered = [results[i] for i in range(len(vms))]
        if wait and not check_mode:
            failures = []
            for result in ordered:
                if result['job_id'] is None or client is None:  # a job id: it was submitted through the client
                    continue
                try:
                    result['job'] = finished = client.wait(result['job_id'], timeout, progress=progress)
                except JobFailed as e:
                    result['failed'] = str(e)
                    failures.append(e)
                    continue
                result['result'] = finished['data']
            if failures:
                error = failures[0] if len(failures) == 1 else JobFailed('%d clones failed: %s' % (
                    len(failures), '; '.join(str(e) for e in failures)), failures[0].job)
                error.results = ordered  # type: ignore[attr-defined]
                raise error
    for vm, result in zip(vms, ordered):
        if result['job_id'] is not None:
            result['ssh_host_keys'] = (result['result'].get('ssh_host_keys')
                                       or (result['result'].get('domain') or {}).get('ssh_host_keys') or [])
        if wait_for != 'none' and not check_mode and wait:
            reached = reach.wait(config, result['host'], vm['hostname'], wait_for, result['ssh_host_keys'], wait_for_timeout,
                                 console=functools.partial(console, config, result['host'], vm['hostname']))
            result['ip'] = reached.ip
        result['known_hosts'] = known_hosts_lines(reach.clone_names(vm['hostname'], result['ip']), result['ssh_host_keys'])
    plan_summary: List[PlannedClone] = [{'hostname': vm['hostname'], 'host': r['host'], 'candidates': r['candidates'],
                                         'filtered': r['filtered'], 'exists': plans[i]['exists']}
                                        for i, (vm, r) in enumerate(zip(vms, ordered))]
    return {'changed': any(r['changed'] for r in ordered), 'results': ordered, 'plan': plan_summary}


CONSOLE_TIMEOUT = 30


def console(config: Config, host: str, name: str, lines: int = 40) -> List[str]:
    """The last lines of a VM's serial console, read by its host's worker (the log is a file of that host)."""
    job = messages.new_job(host, 'vm.console', {'name': name, 'lines': lines}, ttl=CONSOLE_TIMEOUT)
    with Client(config) as client:
        client.submit(job)
        return client.wait(job['id'], CONSOLE_TIMEOUT)['data'].get('lines') or []


def job_info(config: Config, job_id: Optional[str] = None, limit: int = 20, host: Optional[str] = None) -> List[Job]:
    """One job by id, or the most recent ones."""
    with Client(config) as client:
        if job_id:
            return [client.status(job_id)]
        return client.recent(limit, host)


def vm_snapshots(config: Config, vm: str, timeout: float = 120) -> SnapshotList:
    """The snapshots of VM `vm` with their sizes (its host worker reads them): see controller.snapshots."""
    return list_snapshots(config, vm, timeout)


def vm_list_with_snapshots(config: Config, patterns: Optional[Sequence[str]] = None, hosts: Optional[Sequence[str]] = None,
                           states: Optional[Sequence[str]] = None, timeout: float = 120) -> Dict[str, Any]:
    """vm_list, each VM (not the images) with its `snapshots` as vm_snapshots lists them."""
    listing = vm_list(config, patterns, hosts, states)
    add_snapshots(config, listing['vms'], timeout)
    return dict(listing)


# What vm_snapshot returns (controller.snapshots.snapshot).
VmSnapshotResult = SnapshotResult


def host_state(config: Config, host: str, state: str, max_parallel: int = maintenance.MAX_PARALLEL,
               timeout: float = maintenance.DRAIN_TIMEOUT, check_mode: bool = False) -> HostResult:
    """Put `host` in maintenance and drain it, or bring it back (state 'active'): maintenance.host_state, with
    placement's view of the hosts as clones get it (host_states) and migration's migrate_to."""
    return maintenance.host_state(config, host, state, functools.partial(host_states, config), migrate_to=vm_migrate_to,
                                  max_parallel=max_parallel, timeout=timeout, check_mode=check_mode)


def host_refresh(config: Config, host: str) -> None:
    """Tell the client worker that `host`'s domains were changed by hand (virsh): listings and placement ask its
    libvirtd until its host worker pushes a state taken after now. Raises DispatchError when the client worker
    does not answer (then use `fresh` until the next snapshot, host_worker.state_poll_interval)."""
    config.host(host)
    with Client(config) as client:
        client.state_changed(host)
