# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The end and the other beginning of an original image, as the controller asks for them.

remove:          the image's domain and disks go from each target host, by that host's worker (`vm.remove` with
                 `image: true`, one job per host, run at once); refused while linked clones use its disks as
                 backing files, unless force_dependants (then they go first).
create_from_vm:  plans and submits `image.from_vm` for a shut-off VM; its host worker makes and seals the image
                 (host/image_from_vm.py).
"""

from __future__ import annotations

import re
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, TypedDict, Union

from ..cluster import virt
from ..cluster.config import Config, Host
from ..cluster.domains import dependants, lookup
from ..cluster.virt import Connect
from ..errors import ConflictError, HostError, JobFailed, MaglicaError, NotFoundError
from ..protocol import messages
from .client import Client, Job, Progress

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


class Found(TypedDict):
    """The domain called like the image on one host: its description and the linked clones on its disks."""
    domain: Dict[str, Any]
    dependants: List[str]


class _HostRemoval(TypedDict):
    host: str
    state: str
    dependants: List[str]


class HostRemoval(_HostRemoval, total=False):
    """What removing an image does (plan_remove: remove | absent) or did (remove: removed | absent | failed |
    would remove) on one host; deleted_disks once removed."""
    deleted_disks: List[str]


class RemoveResult(TypedDict):
    """remove's result."""
    changed: bool
    name: str
    hosts: List[HostRemoval]
    dependants: List[str]
    jobs: List[Job]


class FromVmPlan(TypedDict):
    """plan_from_vm's answer: where the image is made, or that it was made already (exists) there."""
    exists: bool
    host: str


class _CreateResult(TypedDict):
    changed: bool
    name: str
    host: str
    job_id: Optional[str]
    job: Optional[Job]
    result: Dict[str, Any]


class CreateResult(_CreateResult, total=False):
    """create_from_vm's result; `message` when another run's job was making the image already."""
    message: str


# -- removal ----------------------------------------------------------------------------------

def plan_remove(name: str, found: Mapping[str, Optional[Found]], force_dependants: bool) -> Tuple[List[HostRemoval], List[str]]:
    """What removing image `name` does on each host. Changes nothing.

    `found`: {host: None where no domain is called `name`, else {domain: its description, dependants: [names]}}.
    Returns ([{host, state: 'remove' | 'absent', dependants}], every dependant's name) or raises ConflictError:
    for a domain that is not an original image, or linked clones without force_dependants - naming them all.
    """
    plan: List[HostRemoval] = []
    dependants: List[str] = []
    not_images: List[str] = []
    blocked: List[str] = []
    for host in sorted(found):
        entry = found[host]
        if entry is None:
            plan.append({'host': host, 'state': 'absent', 'dependants': []})
            continue
        domain = entry['domain']
        if not virt.is_image(domain):
            not_images.append('%s on %s is %s' % (name, host, 'a running VM' if domain['active'] else 'a clone of %s' % domain['clone_of']))
        users = sorted(entry['dependants'])
        if users:
            blocked.append('%s (on %s)' % (', '.join(users), host))
        dependants.extend(u for u in users if u not in dependants)
        plan.append({'host': host, 'state': 'remove', 'dependants': users})
    if not_images:
        raise ConflictError('%s, not an original image: remove a VM with maglica_vm state=absent' % '; '.join(not_images))
    if blocked and not force_dependants:
        raise ConflictError('image %s is the backing file of linked clones: %s; use force_dependants to remove them '
                            'with it' % (name, '; '.join(blocked)))
    return plan, sorted(dependants)


def _survey_name(config: Config, name: str, targets: List[str]) -> Dict[str, Optional[Found]]:
    """{host: None or {domain, dependants}} for every target, asked at once; an unreachable target is an error."""
    def query(conn: Connect, host: Host) -> Optional[Found]:
        dom = lookup(conn, name)
        if dom is None:
            return None
        return {'domain': virt.describe(dom, with_sizes=False), 'dependants': dependants(conn, name)}
    answers = virt.ask_hosts(config, query, targets)
    unreachable = [a['error'] for a in answers if not a['reachable']]
    if unreachable:
        raise HostError('cannot tell where image %s is, nothing was changed: %s' % (name, '; '.join(unreachable)))
    return {a['host']: a['result'] for a in answers}


def _run_jobs(config: Config, jobs: List[Job], timeout: float) -> Dict[str, Union[Job, JobFailed]]:
    """Submit the jobs together, then wait for each: {host: finished job or the JobFailed it ended with}."""
    ended: Dict[str, Union[Job, JobFailed]] = {}
    with Client(config) as client:
        for job in jobs:
            client.submit(job)
        for job in jobs:
            try:
                ended[job['host']] = client.wait(job['id'], timeout)
            except JobFailed as e:
                ended[job['host']] = e
    return ended


def remove(config: Config, name: str, targets: Optional[List[str]] = None, force_dependants: bool = False,
           check_mode: bool = False, timeout: float = 600) -> RemoveResult:
    """Remove the original image `name` (its domain and disk volumes) from `targets` (default: every host).

    Refused, before anything changes, when it is a VM on any target or, without `force_dependants`, while linked
    clones use its disks as backing files (they are named); with it they are removed first. Idempotent: a host
    without it reports `absent`. Each host's worker checks again and does the removal, all hosts at once.
    Returns {changed, name, hosts: [{host, state: removed | absent | would remove, dependants}], dependants, jobs}.
    """
    messages.NAME.check('name', name)
    hosts = config.target_names(targets)
    plan, dependants = plan_remove(name, _survey_name(config, name, hosts), force_dependants)
    result: RemoveResult = {'changed': any(p['state'] == 'remove' for p in plan), 'name': name, 'hosts': [],
                            'dependants': dependants, 'jobs': []}
    if check_mode or not result['changed']:
        result['hosts'] = [{'host': p['host'], 'state': 'would remove' if p['state'] == 'remove' else 'absent',
                            'dependants': p['dependants']} for p in plan]
        return result
    args = {'name': name, 'image': True}
    if force_dependants:
        args['force_dependants'] = True
    jobs = [messages.new_job(p['host'], 'vm.remove', dict(args), ttl=max(1, int(timeout))) for p in plan if p['state'] == 'remove']
    ended = _run_jobs(config, jobs, timeout)
    failed = []
    for entry in plan:
        job = ended.get(entry['host'])
        if job is None:
            result['hosts'].append({'host': entry['host'], 'state': 'absent', 'dependants': []})
        elif isinstance(job, JobFailed):
            failed.append('%s: %s' % (entry['host'], job))
            result['hosts'].append({'host': entry['host'], 'state': 'failed', 'dependants': entry['dependants']})
        else:
            result['jobs'].append(job)
            result['hosts'].append({'host': entry['host'], 'state': 'removed',
                                    'dependants': job['data'].get('removed_dependants', []),
                                    'deleted_disks': job['data'].get('deleted_disks', [])})
    if failed:
        done = [h['host'] for h in result['hosts'] if h['state'] == 'removed']
        raise MaglicaError('removing image %s failed on %s%s' % (
            name, '; '.join(failed), '; it was removed from %s' % ', '.join(done) if done else ''))
    result['dependants'] = sorted(set(d for h in result['hosts'] for d in h['dependants']))
    return result


# -- an image from a VM: the library's side ----------------------------------------------------

def plan_from_vm(answers: Sequence[Mapping[str, Any]], name: str, from_vm: str) -> FromVmPlan:
    """Where the image `name` is made from the VM `from_vm`, or that it was made already. Changes nothing.

    `answers`: a survey (virt.survey). Returns {exists, host}; raises NotFoundError / ConflictError / HostError.
    """
    if name == from_vm:
        raise ConflictError('the image needs a name of its own: %s is the VM' % name)
    unreachable = [a['error'] for a in answers if not a['reachable']]
    vms = [(a['host'], d) for a in answers for d in a['result'] or [] if d['name'] == from_vm]
    taken = [(a['host'], d) for a in answers for d in a['result'] or [] if d['name'] == name]
    if taken:
        host, domain = taken[0]
        made = (domain.get('image') or {}).get(MADE_FROM)
        if (len(taken) == 1 and made == from_vm and virt.is_image(domain) and (domain['image'] or {}).get('complete') == 'yes'
                and [h for h, _d in vms] == [host]):
            return {'exists': True, 'host': host}
        what = ('an image' if virt.is_image(domain) else 'a VM') + (' made from %s' % made if made else '')
        raise ConflictError('the name %s is already taken by %s on %s' % (name, what, ', '.join(h for h, _d in taken)))
    if unreachable:
        # The name might be taken there, or the VM be there.
        raise HostError('cannot tell whether the name %s is free, nothing was changed: %s' % (name, '; '.join(unreachable)))
    if not vms:
        raise NotFoundError('no VM named %s on any host' % from_vm)
    if len(vms) > 1:
        raise ConflictError('%s is defined on several hosts (%s): the image would be ambiguous' % (from_vm, ', '.join(h for h, _d in vms)))
    host, domain = vms[0]
    if domain['active']:
        raise ConflictError('%s is %s on %s: shut it down first, an image is made only from a shut-off VM'
                            % (from_vm, domain['state'], host))
    return {'exists': False, 'host': host}


def create_from_vm(config: Config, name: str, from_vm: str, check_mode: bool = False, timeout: float = 3600,
                   progress: Optional[Progress] = None) -> CreateResult:
    """Make the original image `name` from the shut-off VM `from_vm`, on its host, sealed; the VM is left as it was.

    Idempotent: an image `name` made from `from_vm` already gives changed=false; any other domain of that name
    is a conflict. Returns {changed, name, host, job_id, job, result}.
    """
    # Both names are checked before anything is asked (the host name is a placeholder here).
    messages.validate_job({'id': messages.new_job_id(), 'host': config.hosts[0].name, 'action': 'image.from_vm',
                           'args': {'image': name, 'vm': from_vm}})
    plan = plan_from_vm(virt.survey(config), name, from_vm)
    result: CreateResult = {'changed': not plan['exists'], 'name': name, 'host': plan['host'], 'job_id': None,
                            'job': None, 'result': {}}
    if plan['exists'] or check_mode:
        return result
    job = messages.new_job(plan['host'], 'image.from_vm', {'image': name, 'vm': from_vm}, ttl=max(1, int(timeout)))
    with Client(config) as client:
        submitted = client.submit(job)
        result['job_id'] = submitted['id']
        if submitted['id'] != job['id']:
            # The client worker holds the name while a job makes it (an earlier run that timed out, a second
            # run at once): that job is this task's, and this run changes nothing itself.
            result.update({'changed': False, 'host': submitted['host'], 'message': '%s is already being made by job %s on %s'
                           % (name, submitted['id'], submitted['host'])})
        result['job'] = finished = client.wait(submitted['id'], timeout, progress=progress)
    result['result'] = finished['data']
    return result
