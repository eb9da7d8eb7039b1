# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The library's side of job dispatch: submit a job to the client worker, ask for its state, wait for it."""

from __future__ import annotations

from typing import Any, Callable, Dict, Iterable, List, Optional, TypedDict

from ..cluster.config import Config
from ..errors import ConflictError, DispatchError, JobFailed, NotFoundError, StalePlacement
from ..protocol import curve, messages
from ..protocol.transport import Requester
from .waiting import Waiter

# A job as the client worker's log holds it (messages.JOB_ROW): id, host, action, args, state, message, data...
Job = Dict[str, Any]
# What is told of a job each time it is polled (wait's `progress`).
Progress = Callable[[Job], None]


class _Slot(TypedDict):
    host: str
    job_id: str
    hostname: str
    image: str
    start: bool
    clone_mode: str


class Slot(_Slot, total=False):
    """A slot reservation of a clone in flight (messages.SLOT): what it will make where."""
    spread_group: str


class Reservations(List[Slot]):
    """The slot reservations of the clones in flight, and (`maintenance`) the hosts in maintenance: what placement
    counts besides the hosts' domains. A list of the slots, so that code that counts slots only reads it as before."""

    def __init__(self, slots: Iterable[Slot] = (), maintenance: Iterable[str] = ()) -> None:
        super().__init__(slots)
        self.maintenance = sorted(maintenance)


class MaintenanceFlag(TypedDict):
    """A host's maintenance flag as the client worker keeps it (messages.REPLIES['maintenance'])."""
    host: str
    maintenance: bool
    since: Optional[float]
    changed: bool


class _HostStatus(TypedDict):
    host: str
    alive: bool
    last_seen_s: Optional[float]
    running: List[str]


class HostStatus(_HostStatus, total=False):
    """A host worker as the client worker sees it (messages.HOST_STATUS), and whether its host is in maintenance."""
    pid: Optional[int]
    maintenance: bool


class PushedState(TypedDict):
    """A host's state as its host worker pushed it (messages.REPLIES['states']), seconds since it was last known true."""
    host: str
    age_s: float
    state: Dict[str, Any]


# Why a job that did not finish in time is still in its state, in words for the user.
WAITING_REASONS = {
    'queued': 'it was not yet published to the host',
    'dispatched': 'no host worker for %(host)s has acknowledged it: is the host worker running?',
    'running': 'the host worker for %(host)s is still running it',
}


class Client(object):
    def __init__(self, config: Config, timeout: Optional[float] = None) -> None:
        self.config = config
        self.timeout = timeout or config.jobs['request_timeout']
        self.requester = Requester(config, curve.LIBRARY)

    def close(self) -> None:
        self.requester.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def call(self, kind: str, timeout: Optional[float] = None, **fields: Any) -> Dict[str, Any]:
        reply = self.requester.request(dict(fields, type=kind), min(timeout or self.timeout, self.timeout))
        if not reply.get('ok'):
            if reply.get('code') == 'not_found':
                raise NotFoundError(reply.get('error') or 'not found')
            if reply.get('code') == 'stale':
                raise StalePlacement(reply.get('error') or 'the placement is stale')
            if reply.get('code') == 'maintenance':
                raise ConflictError(reply.get('error') or 'the host is in maintenance')
            raise DispatchError('the client worker refused the %s request: %s' % (kind, reply.get('error')))
        return reply

    def submit(self, job: Job, timeout: Optional[float] = None, seen: Optional[Iterable[str]] = None) -> Job:
        """Hand a validated job to the client worker; returns the job as logged. The id makes a resend harmless.

        `seen` (clones): the slot reservations on the job's host that its placement counted; the client worker
        refuses the job with StalePlacement when the host has others now.
        """
        fields = {'job': job} if seen is None else {'job': job, 'seen': list(seen)}
        return self.call('submit', timeout=timeout, **fields)['job']

    def slots(self) -> Reservations:
        """The slot reservations of the clones in flight: [{host, job_id, hostname, image, start, clone_mode, spread_group}],
        with the hosts in maintenance as their `maintenance`."""
        reply = self.call('slots')
        return Reservations(reply['slots'], reply.get('maintenance') or [])

    def maintenance(self, host: str, state: Optional[str] = None) -> MaintenanceFlag:
        """Set (state 'maintenance'), clear ('active') or only read (None) the maintenance flag of `host`."""
        reply = self.call('maintenance', host=host, state=state)
        return {'host': reply['host'], 'maintenance': reply['maintenance'], 'since': reply.get('since'),
                'changed': reply['changed']}

    def status(self, job_id: str) -> Job:
        return self.call('status', id=job_id)['job']

    def recent(self, limit: int = 20, host: Optional[str] = None) -> List[Job]:
        """The `limit` newest jobs, newest first, without their diffs. Asked for in pages that fit a frame each."""
        jobs: List[Job] = []
        while len(jobs) < limit:
            reply = self.call('list', limit=limit - len(jobs), host=host, after=jobs[-1]['id'] if jobs else None)
            jobs.extend(reply['jobs'])
            if not reply.get('more') or not reply['jobs']:
                break
        return jobs

    def hosts(self) -> List[HostStatus]:
        return self.call('hosts')['hosts']

    def state_changed(self, host: str) -> None:
        """Tell the client worker that `host`'s domains were changed here: its pushed state is not read until one
        taken after now comes."""
        self.call('state_changed', host=host)

    def states(self, view: str, hosts: Optional[Iterable[str]] = None, images: Iterable[str] = (),
               names: Iterable[str] = ()) -> List[PushedState]:
        """The states the host workers pushed, in `view` ('domains': whole; 'placement': cut down to `images` and
        `names`, host_state.placement_view): [{host, age_s, state}], asked for in pages that fit a frame each."""
        fields: Dict[str, Any] = {'view': view, 'hosts': list(hosts) if hosts else None, 'images': sorted(images) or None,
                                  'names': sorted(names) or None}
        states: List[PushedState] = []
        while True:
            reply = self.call('states', after=states[-1]['host'] if states else None, **fields)
            states.extend(reply['states'])
            if not reply['more'] or not reply['states']:
                return states

    def wait(self, job_id: str, timeout: float, progress: Optional[Progress] = None) -> Job:
        """Poll a job until it ends or `timeout` seconds pass. Returns the finished job.

        Raises JobFailed when it ends failed or expired, or does not end in time.
        """
        waiter = Waiter(timeout, first=0.05, most=0.5)
        while True:
            job = self.call('status', id=job_id, timeout=max(0.5, waiter.remaining()))['job']
            if progress:
                progress(job)
            if job['state'] in messages.FINAL_STATES:
                if job['state'] != 'succeeded':
                    late = job.get('late_result')
                    # The job's effect may exist all the same: say so, the user decides.
                    note = '; its host worker reported it late: %s' % late['status'] if late else ''
                    if late and late.get('message'):
                        note += ' (%s)' % late['message']
                    raise JobFailed('job %s (%s on %s) %s: %s%s' % (job_id, job['action'], job['host'], job['state'], job['message'], note), job)
                return job
            if waiter.expired():
                reason = WAITING_REASONS.get(job['state'], '') % {'host': job['host']}
                raise JobFailed('job %s (%s on %s) did not finish within %gs; it is %s: %s'
                                % (job_id, job['action'], job['host'], timeout, job['state'], reason), job)
            waiter.pause()
