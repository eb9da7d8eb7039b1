# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Migrating a VM to another host, as the controller asks: where it is, where it goes (placement, as for clones,
never its own host), then one `vm.migrate` job in the SOURCE's host worker, which does it (host/migration.py).

migrate() chooses; migrate_to() moves along a plan made elsewhere (a drain plans all its VMs itself).
"""

from __future__ import annotations

from typing import Any, Callable, Collection, Dict, List, Mapping, Optional, Sequence, Tuple, TypedDict

from ..cluster import virt
from ..cluster.config import Config
from ..errors import ConflictError, NotFoundError
from ..protocol import messages
from . import placement
from .client import Client, Job

DEFAULT_TIMEOUT = 1800.0
# Placement's view of the hosts, (config, placement survey answers, images) -> host states, with the clones in flight
# counted: the clones' own (cloud.host_states with the reservations; the facade passes it, cloud imports this module).
HostStates = Callable[[Config, Sequence[Mapping[str, Any]], Collection[str]], List[placement.HostState]]


class MigrationResult(TypedDict):
    """What migrate() and migrate_to() return."""
    changed: bool
    name: str
    source: str
    destination: str
    live: bool
    job_id: Optional[str]
    # The job's result data (host/migration.MigrateResult): disks [{target, path, copy: overlay|full, bytes}],
    # snapshots carried, seconds, downtime_ms (live). Empty in check mode and when nothing changed.
    result: Dict[str, Any]
    # Placement's explanation when it chose the destination: candidates best first, hosts filtered with reasons.
    candidates: List[placement.Candidate]
    filtered: List[Dict[str, str]]


def _locate(answers: Sequence[Mapping[str, Any]], name: str) -> Tuple[str, Dict[str, Any]]:
    """(host, domain) of the VM `name` in a placement survey; refuses an image, a missing or a doubled VM."""
    found = [(a['host'], d) for a in answers for d in (a['result'] or {}).get('domains') or [] if d['name'] == name]
    if not found:
        down = ['%s' % a['error'] for a in answers if not a['reachable']]
        raise NotFoundError('no VM named %s on any reachable host%s' % (name, '; unreachable: %s' % '; '.join(down) if down else ''))
    if len(found) > 1:
        raise ConflictError('%s is defined on several hosts (%s): migrate one of them by removing the others first'
                            % (name, ', '.join(host for host, _domain in found)))
    host, domain = found[0]
    if virt.is_image(domain):
        raise ConflictError('%s on %s is an original image, not a VM: images are copied (maglica_image), not migrated' % (name, host))
    return host, domain


def choose_live(name: str, domain: Mapping[str, Any], live: Optional[bool]) -> bool:
    """Running -> live, stopped -> cold; a live migration of a stopped VM is refused, naming it."""
    if live is None:
        return bool(domain['active'])
    if live and not domain['active']:
        raise ConflictError('%s is not running: it cannot be migrated live (leave live out, or set it false, for a cold migration)' % name)
    if not live and domain['active']:
        raise ConflictError('%s is running: a cold migration needs it stopped (stop it first, or migrate it live)' % name)
    return live


def vm_request(name: str, domain: Mapping[str, Any], source: str, live: bool,
               states: Sequence[placement.HostState], exclude_hosts: Sequence[str] = ()) -> placement.Request:
    """Placement's request for moving the VM `domain` off `source`: what the VM itself needs (its memory and vCPUs
    when it runs), its spread group, never its own host. Each host that may take it gets the VM as the 'image' the
    request names; a stopped linked clone only the hosts that hold its image (its overlay needs it there)."""
    key = '\0migrate:%s' % name  # no image is called so: NAME_RE starts with a letter or digit
    need_image = not live and domain.get('clone_mode') == 'linked' and domain.get('clone_of')
    for state in states:
        if need_image and domain['clone_of'] not in state.images:
            continue
        state.images[key] = placement.ImageOnHost(int(domain['memory_mb']), int(domain['vcpus']), 0, None)
    return placement.Request(image=key, hostname=name, start=live, clone_mode='linked',
                             spread_group=domain.get('spread_group'), exclude_hosts=tuple([source] + list(exclude_hosts)))


def plan(config: Config, name: str, states_of: HostStates, host: Optional[str] = None, live: Optional[bool] = None,
         exclude_hosts: Sequence[str] = ()) -> MigrationResult:
    """Where the VM is and where it would go, changing nothing (check mode); `changed` False when it is on `host`."""
    if host is not None:
        config.target_names([host])
    answers = virt.placement_survey(config, ())
    source, domain = _locate(answers, name)
    live = choose_live(name, domain, live)
    result: MigrationResult = {'changed': False, 'name': name, 'source': source, 'destination': host or source, 'live': live,
                               'job_id': None, 'result': {}, 'candidates': [], 'filtered': []}
    if host == source:
        return result
    images = [domain['clone_of']] if domain.get('clone_of') else []
    answers = virt.placement_survey(config, images) if images else answers
    states = states_of(config, answers, images)
    request = vm_request(name, domain, source, live, states, exclude_hosts)
    if host is not None:
        request.host = host
    try:
        decision = placement.decide(states, request, config.placement['policy'], config.placement['memory_overcommit'])
    except placement.NoHostFits as e:
        reasons = '; '.join(f['reason'] for f in e.filtered if not f['host'] == source) or 'no other host'
        missing = ''
        if not live and domain.get('clone_mode') == 'linked':
            missing = ' (a stopped linked clone goes only where its image %s is)' % domain['clone_of']
        raise placement.NoHostFits('no host can take %s from %s%s: %s' % (name, source, missing, reasons.replace('\0migrate:' + name, 'it')),
                                   e.filtered)
    result['changed'], result['destination'] = True, decision.host
    result['candidates'], result['filtered'] = decision.candidates, decision.filtered
    return result


def migrate(config: Config, name: str, states_of: HostStates, host: Optional[str] = None, live: Optional[bool] = None,
            wait: bool = True, timeout: float = DEFAULT_TIMEOUT, check_mode: bool = False) -> MigrationResult:
    """Move the VM `name` to `host`, or to the host placement chooses (spread groups, resources, the clones in
    flight; never its own host). live None: running -> live, stopped -> cold. A VM already on `host`: changed False."""
    result = plan(config, name, states_of, host, live)
    if not result['changed'] or check_mode:
        return result
    return _submit(config, result, wait, timeout)


def migrate_to(config: Config, name: str, source: str, destination: str, live: bool,
               timeout: float = DEFAULT_TIMEOUT, wait: bool = True) -> MigrationResult:
    """Move the VM `name` from `source` to `destination` as planned elsewhere (no placement, no survey): the source's
    host worker checks the VM is there, in the state `live` needs."""
    config.target_names([source, destination])
    if source == destination:
        raise ConflictError('the source and the destination of %s are both %s' % (name, source))
    result: MigrationResult = {'changed': True, 'name': name, 'source': source, 'destination': destination, 'live': live,
                               'job_id': None, 'result': {}, 'candidates': [], 'filtered': []}
    return _submit(config, result, wait, timeout)


def _submit(config: Config, result: MigrationResult, wait: bool, timeout: float) -> MigrationResult:
    args = {'name': result['name'], 'destination': result['destination'], 'live': result['live']}
    job: Job = messages.new_job(result['source'], 'vm.migrate', args, ttl=max(1, int(timeout)))
    with Client(config) as client:
        client.submit(job)
        result['job_id'] = job['id']
        if wait:
            finished = client.wait(job['id'], timeout)
            result['result'] = dict(finished.get('data') or {})
    return result
