# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Host maintenance (maglica_host): the lasting flag that takes a host out of placement, and the drain.

The flag lives in the client worker's job log (client_worker/joblog.py): placement reads it with the reservations,
and the client worker itself refuses a clone to a host in maintenance. Then the drain moves every VM off the host:
destinations chosen by placement for all of them at once (host_states and placement.place, as a batch of clones is
placed: each VM reserved on its host before the next is placed, so spread groups stay spread over the hosts left),
running VMs live and stopped ones cold, at most `max_parallel` migrations at once. Original images stay.
"""

from __future__ import annotations

import concurrent.futures
from typing import Any, Callable, Collection, Dict, List, Mapping, Optional, Sequence, Tuple, TypedDict

from ..cluster import virt
from ..cluster.config import Config
from ..errors import HostError, MaglicaError
from ..protocol.messages import HOST_STATES
from . import migration, placement
from .client import Client, Reservations, Slot

# migrate_to(config, name, source, destination, live, timeout) -> a MigrationResult (controller/migration.py):
# a mapping with at least changed, name, source, destination, live, job_id, result. It raises MaglicaError when the
# migration fails (JobFailed with the job), and then the VM is where it was.
MigrateTo = Callable[[Config, str, str, str, bool, float], Mapping[str, Any]]
# cloud.host_states with the configuration given: (survey answers, reservations, images, hosts in maintenance) ->
# placement's view of every reachable host. Passed in by the facade (cloud imports this module, never the other way).
HostStates = Callable[[Sequence[Mapping[str, Any]], Sequence[Slot], Collection[str], Collection[str]], List[placement.HostState]]

MAX_PARALLEL = 2
DRAIN_TIMEOUT = 1800.0


class DrainMove(TypedDict):
    """One VM of the host in a drain: where placement sends it (None: it stays, `reason` says why) and, once the
    drain has run, what happened (`status` planned | migrated | stayed)."""
    name: str
    source: str
    destination: Optional[str]
    live: bool
    spread_group: Optional[str]
    status: str
    reason: Optional[str]
    candidates: List[placement.Candidate]
    filtered: List[Dict[str, str]]
    job_id: Optional[str]             # the migration's job
    result: Dict[str, Any]            # what the migration's job reported (MigrationResult's `result`)


class HostResult(TypedDict):
    """host_state's result: the flag before and after, the drain's plan and outcome per VM, the images left."""
    changed: bool
    host: str
    state: str
    maintenance: bool
    was_maintenance: bool
    since: Optional[float]
    vms: List[DrainMove]
    images: List[str]
    warnings: List[str]


class DrainIncomplete(MaglicaError):
    """A drain that could not move every VM: the host stays in maintenance; `result` (a HostResult) says, per VM,
    where it went or why it stayed."""

    def __init__(self, message: str, result: HostResult) -> None:
        super().__init__(message)
        self.result = result


def _order(domain: Mapping[str, Any]) -> Tuple[int, int, int, str]:
    """The order VMs are placed in: stopped linked clones first (they go only where their image is: placed later,
    they could find their one host taken by a member of their group), then spread groups (their members take the
    hosts with fewest members), then running VMs, then names."""
    constrained = not domain['active'] and domain.get('clone_mode') == 'linked'
    return (0 if constrained else 1, 0 if domain.get('spread_group') else 1, 0 if domain['active'] else 1, domain['name'])


def plan_drain(config: Config, source: str, answers: Sequence[Mapping[str, Any]], slots: Sequence[Slot],
               maintenance: Collection[str], host_states: HostStates) -> Tuple[List[DrainMove], List[str]]:
    """Where each VM of `source` goes, placed by placement's own code as one batch. Returns (moves, images): a move
    whose `destination` is None stays (its `reason` says why); `images` are the original images, which stay.

    Each VM is placed as migrate() places one (migration.vm_request): it asks of a destination what it needs itself
    (its memory and vCPUs when it runs), and a stopped linked clone only hosts that hold its image. Its disks are not
    counted against the destination's pool (the survey knows the pools of images only): a migration that finds the
    pool full fails, and the drain reports that VM as stayed. `answers` must have surveyed the images of the host's
    linked clones (drain_images)."""
    found = next((a for a in answers if a['host'] == source), None)
    if found is None or not found['reachable']:
        raise HostError('cannot drain %s: its libvirtd cannot be reached (%s); it stays in maintenance'
                        % (source, found['error'] if found else 'not surveyed'))
    domains = sorted(found['result']['domains'], key=_order)
    images = sorted(d['name'] for d in domains if virt.is_image(d))
    vms = [d for d in domains if not virt.is_image(d)]
    states = host_states(answers, slots, drain_images(found), set(maintenance) | {source})
    in_flight = {slot['hostname']: slot['job_id'] for slot in slots if slot['host'] == source}
    moves: List[DrainMove] = []
    for domain in vms:
        move: DrainMove = {'name': domain['name'], 'source': source, 'destination': None, 'live': bool(domain['active']),
                           'spread_group': domain.get('spread_group'), 'status': 'planned', 'reason': None,
                           'candidates': [], 'filtered': [], 'job_id': None, 'result': {}}
        moves.append(move)
        if domain['name'] in in_flight:
            move['reason'] = ('its clone (job %s) is still under way on %s: drain again when it has ended'
                              % (in_flight[domain['name']], source))
            continue
        request = migration.vm_request(domain['name'], domain, source, bool(domain['active']), states)
        try:
            decision = placement.place(states, request, config.placement['policy'], config.placement['memory_overcommit'])
        except placement.NoHostFits as e:
            # The source is excluded by the request (its own host), and in maintenance: said once is enough.
            move['filtered'] = [f for f in e.filtered if f['host'] != source]
            reasons = '; '.join(f['reason'].replace('image %s' % request.image, 'its image %s' % domain.get('clone_of'))
                                for f in move['filtered']) or 'no other host'
            linked = '' if domain['active'] or domain.get('clone_mode') != 'linked' else \
                ' (a stopped linked clone goes only where its image %s is)' % domain['clone_of']
            move['reason'] = 'no host fits it%s: %s' % (linked, reasons)
            continue
        move.update({'destination': decision.host, 'candidates': decision.candidates,
                     'filtered': [f for f in decision.filtered if f['host'] != source]})
    # Clones still on their way to the host, whose domain is not there yet: they would be left behind.
    named = set(d['name'] for d in domains)
    for hostname, job_id in sorted(in_flight.items()):
        if hostname not in named:
            moves.append({'name': hostname, 'source': source, 'destination': None, 'live': False, 'spread_group': None,
                          'status': 'planned', 'reason': 'its clone (job %s) is still under way on %s: drain again when '
                          'it has ended' % (job_id, source), 'candidates': [], 'filtered': [], 'job_id': None, 'result': {}})
    return moves, images


def run_drain(config: Config, moves: List[DrainMove], migrate_to: MigrateTo, max_parallel: int = MAX_PARALLEL,
              timeout: float = DRAIN_TIMEOUT) -> List[DrainMove]:
    """Migrate every planned VM to its destination, at most `max_parallel` at once (live when it runs, cold when it
    is stopped). Each move ends migrated, or stayed with the reason. Returns `moves`, updated."""
    check_parallel(max_parallel)

    def one(move: DrainMove) -> None:
        destination = move['destination']
        if destination is None:
            move['status'] = 'stayed'
            return
        try:
            result = migrate_to(config, move['name'], move['source'], destination, move['live'], timeout)
        except MaglicaError as e:
            move.update({'status': 'stayed', 'reason': 'its migration to %s failed: %s' % (destination, e)})
            job = getattr(e, 'job', None)
            move['job_id'] = job.get('id') if isinstance(job, dict) else None
            return
        move.update({'status': 'migrated', 'job_id': result.get('job_id'), 'result': dict(result.get('result') or {})})

    with concurrent.futures.ThreadPoolExecutor(max_workers=max_parallel) as pool:
        for future in [pool.submit(one, move) for move in moves]:
            future.result()
    return moves


def hosts_in_maintenance(config: Config) -> Tuple[List[str], Optional[str]]:
    """(the hosts in maintenance, None), or ([], why) when the client worker does not answer."""
    try:
        with Client(config, timeout=min(config.jobs['request_timeout'], 5.0)) as client:
            slots = client.slots()
    except MaglicaError as e:
        return [], 'which hosts are in maintenance is unknown: %s' % e
    return list(slots.maintenance), None


def drain_images(answer: Mapping[str, Any]) -> List[str]:
    """The images of the linked clones of a host's survey answer: a stopped one goes only where its image is."""
    return sorted(set(d['clone_of'] for d in (answer['result'] or {}).get('domains') or []
                      if d.get('clone_of') and d.get('clone_mode') == 'linked'))


def check_parallel(max_parallel: int) -> None:
    if max_parallel < 1:
        raise MaglicaError('max_parallel must be at least 1, not %d' % max_parallel)


def _stayed_message(host: str, moves: Sequence[DrainMove]) -> str:
    stayed = ['%s (%s)' % (m['name'], m['reason']) for m in moves if m['status'] == 'stayed']
    moved = ['%s -> %s' % (m['name'], m['destination']) for m in moves if m['status'] == 'migrated']
    return ('the drain of %s did not finish; %s stays in maintenance, and %d VM(s) stayed on it: %s%s'
            % (host, host, len(stayed), '; '.join(stayed), '. Moved: %s' % ', '.join(moved) if moved else ''))


def host_state(config: Config, host: str, state: str, host_states: HostStates, migrate_to: Optional[MigrateTo] = None,
               max_parallel: int = MAX_PARALLEL, timeout: float = DRAIN_TIMEOUT, check_mode: bool = False) -> HostResult:
    """Put `host` in maintenance and drain it (state 'maintenance'), or bring it back ('active').

    In maintenance, the flag is set first (placement and the client worker give the host nothing from then on), then
    every VM but the original images is migrated to the host placement chooses for it: live when it runs, cold when
    it is stopped, `migrate_to` at most `max_parallel` at once, each waited for up to `timeout` seconds. Check mode
    sets nothing and returns the plan. Returns a HostResult; `changed` is false for a host in maintenance already
    with nothing to move. A drain that cannot move a VM (no host fits it, its migration failed) raises
    DrainIncomplete naming each VM that stayed and why; the host stays in maintenance and the VMs that could move
    have moved.
    """
    config.target_names([host])
    check_parallel(max_parallel)
    if state not in HOST_STATES:
        raise MaglicaError('state must be one of %s, not %r' % (', '.join(HOST_STATES), state))
    with Client(config) as client:
        flag = client.maintenance(host)
        was = flag['maintenance']
        result: HostResult = {'changed': False, 'host': host, 'state': state, 'maintenance': was, 'was_maintenance': was,
                              'since': flag['since'], 'vms': [], 'images': [], 'warnings': []}
        if state == 'active':
            result['changed'] = was
            result['maintenance'] = False if not check_mode else was
            if was and not check_mode:
                client.maintenance(host, 'active')
                result['since'] = None
            return result
        if not was and not check_mode:
            flag = client.maintenance(host, 'maintenance')
            result.update({'maintenance': True, 'since': flag['since']})
        # Read after the flag is set: no new clone is reserved on the host from here on.
        slots = client.slots()
    answers = virt.placement_survey(config)
    source = next((a for a in answers if a['host'] == host and a['reachable']), None)
    images = drain_images(source) if source is not None else []
    if images:  # the storage of the linked clones' images, where they are: a second survey that asks for them
        answers = virt.placement_survey(config, images)
    result['warnings'] = ['%s cannot be reached, nothing goes there: %s' % (a['host'], a['error'])
                          for a in answers if not a['reachable']]
    maintenance = set(slots.maintenance if isinstance(slots, Reservations) else ()) | {host}
    moves, result['images'] = plan_drain(config, host, answers, slots, maintenance, host_states)
    result['vms'] = moves
    result['changed'] = not was or any(m['destination'] is not None for m in moves)
    if check_mode:
        return result
    if any(m['destination'] is not None for m in moves):
        if migrate_to is None:
            raise MaglicaError('cannot drain %s: migration is not available' % host)
        run_drain(config, moves, migrate_to, max_parallel, timeout)
    else:
        for move in moves:
            move['status'] = 'stayed'
    if any(m['status'] == 'stayed' for m in moves):
        raise DrainIncomplete(_stayed_message(host, moves), result)
    return result
