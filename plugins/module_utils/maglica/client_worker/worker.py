# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The client worker: takes requests on REP, publishes job notices on PUB, keeps the durable job log.

    python3 -m maglica.client_worker.worker --config /etc/maglica.conf [--name CW1]

A job is written to the log, and the log is on disk, before its submitter is answered: every reply and notice
waits for the fsync of the WAL that follows the commits it may depend on (store.WalSync, a thread of its own),
while the loop takes the next requests - one fsync makes the commits of several batches durable at once.
A notice of the job (id, host, action: never its arguments) is published to its host's topic, and
published again until that host's worker acknowledges it or its TTL runs out
(PUB drops messages for absent subscribers). The host worker fetches the job
itself over REP, where its key is checked against the job's host.

With a PostgreSQL job log (joblog_postgres.py), several client workers may run (client.workers, each started with
--name): the one holding the lease is active, the others answer every request `standby` (naming the active one)
and take the lease over when it runs out. Pushed states and heartbeats are kept in memory: a worker that becomes
active asks every host worker for its state again (state_wanted), on their next report.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, FrozenSet, Iterable, Iterator, List, Mapping, Optional, Sequence, Set, Tuple, TypedDict, TypeVar, Union, cast

from ..cluster import host_state, virt
from ..cluster.config import Config
from ..daemon import service
from ..errors import MessageError
from ..protocol import curve, messages, transport
from .joblog import JobLog, JobRow, name_key
from .joblog_postgres import LeaseLost, PostgresJobLog

LOG = logging.getLogger('maglica.client_worker.worker')
# Requests only the library's key may make; a host's key may only report on its own jobs.
LIBRARY_REQUESTS = ('submit', 'status', 'list', 'hosts', 'slots', 'maintenance', 'states', 'state_changed')
# Requests a host's key makes for its own host only (`host`).
HOST_REQUESTS = ('report', 'fetch', 'state')
# Requests that name a host (where): refused alike when it is not in the configuration, before they do anything.
NAMED_HOST: Dict[str, Callable[[Request], str]] = {
    'submit': lambda data: data['job']['host'], 'maintenance': lambda data: data['host'], 'fetch': lambda data: data['host'],
    'report': lambda data: data['host'], 'state': lambda data: data['host'], 'state_changed': lambda data: data['host']}
# Requests that write the job log: each runs in a transaction (a savepoint of its batch's), the others only read.
WRITING_REQUESTS = ('submit', 'report', 'maintenance')
# Replies sent without waiting for the fsync of the commits before them: a fetch gives out only jobs whose
# notices went out, so after their logging was on disk, and an id it says is gone comes back in a notice should
# the log lose the job's end in a power cut (the job is then as it was on disk, and published again).
# Pushed states are kept in memory only (a restarted client worker asks for them again): their requests wait for no fsync.
UNSYNCED_REPLIES = ('fetch', 'state', 'states', 'state_changed')
SWEEP_INTERVAL = 0.25
# Seconds between a standby's attempts to take the lease (a fraction of joblog.lease_s at most).
LEASE_POLL = 0.5
OWN_HOST = ''  # Admission.maintenance: the job's own host


@dataclass(frozen=True)
class Admission:
    """What the client worker looks at when a job of an action is first submitted, in the transaction that logs it.
    An action not in ADMISSIONS is logged as it comes."""
    # The argument naming the domain the job makes: one job at a time makes a name, cluster-wide...
    name: Optional[str] = None
    # ...or on the job's own host only: an image is imported on several hosts at once, one job per host. A claim of a
    # name on one host and one on every host exclude each other.
    name_on_host: bool = False
    # Reserves a slot on its host while it is open (placement counts it): a claim of kind 'slot'.
    slot: bool = False
    # The host it puts a VM on: OWN_HOST, or the argument naming it. A host in maintenance refuses the job (fail
    # closed: placement also leaves the host out).
    maintenance: Optional[str] = None

    def claims(self) -> bool:
        return self.name is not None or self.slot

    def name_host(self, job: Mapping[str, Any]) -> Optional[str]:
        return job['host'] if self.name_on_host else None

    def target(self, job: Mapping[str, Any]) -> Optional[str]:
        if self.maintenance is None:
            return None
        target = job['host'] if self.maintenance == OWN_HOST else job['args'].get(self.maintenance)
        return target if isinstance(target, str) else None


ADMISSIONS: Dict[str, Admission] = {
    'vm.clone': Admission(name='hostname', slot=True, maintenance=OWN_HOST),
    'image.from_vm': Admission(name='image'),
    'image.import': Admission(name='name', name_on_host=True),
    'vm.migrate': Admission(maintenance='destination'),
}
# Requests answered after one commit of the job log, at most.
MAX_BATCH = 256
# Seconds between prunings of the job log (at most; a short retention prunes more often).
PRUNE_INTERVAL = 600.0
# Bytes of jobs in one reply, leaving room in the frame for the rest of the reply.
REPLY_BUDGET = messages.MAX_FRAME_BYTES - 4096
# Views each pushed state keeps encoded (Pushed.texts): its whole state, its images, and 8 placement views (by the
# images asked for).
VIEWS_KEPT = 10
T = TypeVar('T')

# pyzmq is loaded on first use (transport.zmq, deps.load): to mypy its module and objects are Any.
ZmqModule = Any  # the zmq module
Frame = Any  # zmq.Frame: a request's frame, with the sender's identity under CURVE (`User-Id`)
# A request's data (messages.decode_request) and the reply to it (messages.REPLIES, ERROR_REPLY).
Request = Dict[str, Any]
Reply = Dict[str, Any]
# What a request handler returns: a reply, or its frame already encoded (request_states).
Answered = Union[Reply, bytes]


class Heartbeat(TypedDict):
    """A host worker's last heartbeat (its report)."""

    time: float
    pid: Optional[int]
    running: List[str]  # ids of the jobs it runs


@dataclass
class Pushed:
    """A host's state as its host worker last pushed it, and when it was last known to be true."""
    state: Dict[str, Any]
    digest: str
    totals: host_state.Totals
    # time.time() here when the host worker took it, or took a snapshot of the same digest since (its reports say).
    taken: float
    names: FrozenSet[str] = frozenset()  # of its domains
    # Views encoded for the requests after (messages.encoded_text), at most VIEWS_KEPT: the whole state ('domains',),
    # its images ('images',), and placement's view for the images asked for ('placement', image...).
    texts: Dict[Tuple[str, ...], str] = field(default_factory=dict)

    def text(self, view: str, images: Set[str], names: Set[str]) -> str:
        if view not in ('domains', 'images') and names & self.names:
            # Not kept: placement's view of a host that holds a name asked for depends on those names.
            return messages.encoded_text(host_state.placement_view(self.state, images, names, self.totals))
        key = (view,) if view in ('domains', 'images') else ('placement',) + tuple(sorted(images))
        text = self.texts.get(key)
        if text is None:
            if len(self.texts) >= VIEWS_KEPT:
                self.texts.clear()
            if view == 'domains':
                value: Dict[str, Any] = self.state
            elif view == 'images':
                value = dict(self.state, domains=[d for d in self.state['domains'] if virt.is_image(d)])
            else:
                value = host_state.placement_view(self.state, images, (), self.totals)
            text = self.texts[key] = messages.encoded_text(value)
        return text


def one_page(entries: Iterable[T], size: Callable[[T], int]) -> Tuple[List[T], bool]:
    """As many `entries` as fit one reply (at least one), and whether some were left (the requester asks again
    after the last one it got). `entries` is read no further than the page."""
    page: List[T] = []
    used = 0
    for entry in entries:
        length = size(entry) + 1
        if page and used + length > REPLY_BUDGET:
            return page, True
        page.append(entry)
        used += length
    return page, False


class BatchFailed(Exception):
    """A request failed inside a batch's transaction where it had no savepoint of its own (PostgreSQL)."""


def open_job_log(config: Config, name: str) -> JobLog:
    """The job log the configuration names: SQLite, synced by the worker's WalSync, or PostgreSQL (lease holder `name`)."""
    if config.joblog['backend'] == 'postgresql':
        return PostgresJobLog(config.joblog['dsn'], name, config.joblog['lease_s'], synced_by_caller=True)
    return JobLog(config.jobs['database'], synced_by_caller=True)


class ClientWorker(object):
    def __init__(self, config: Config, name: Optional[str] = None) -> None:
        self.config = config
        self.me = config.client_worker(name)
        # Under CURVE: {public key: identity} of the keys allowed in, and the ZAP authenticator thread.
        self.allowed: Optional[Dict[bytes, str]] = None
        self.auth: Any = None
        zmq = transport.zmq()
        self.context = zmq.Context()
        self.pub = self.context.socket(zmq.PUB)
        # ROUTER, not REP: it can take every waiting request, commit them to the log at once, then answer
        # each. Peers use REQ; to them it is a REP socket.
        self.rep = self.context.socket(zmq.ROUTER)
        for sock in (self.pub, self.rep):
            sock.linger = 0
        # A host worker that is down must not make the PUB socket block or grow without bound.
        self.pub.sndhwm = 100000
        if transport.curve_enabled(config):
            self._secure(zmq)
        else:
            LOG.warning('CURVE is off (security.curve: false): anyone who reaches ports %d and %d can submit jobs',
                        config.client['pub_port'], config.client['rep_port'])
        self.log = open_job_log(config, self.me.name)
        self.wake_read, self.wake_write = os.pipe()
        os.set_blocking(self.wake_read, False)
        os.set_blocking(self.wake_write, False)
        # The log's commits are made durable by self.syncer (a thread) before anything that depends on them leaves the worker.
        self.syncer = self.log.make_syncer(self.wake_write)
        # Commits that wrote something, counted; changes() of the log when last counted.
        self.commits = 0
        self.changes = self.log.changes()
        # Replies (ROUTER messages) and notices waiting for the fsync of commit number N: [(N, replies, notices)].
        self.outgoing: List[Tuple[int, List[List[bytes]], List[JobRow]]] = []
        self.pub.bind(self.me.bind_endpoint('pub'))
        self.rep.bind(self.me.bind_endpoint('rep'))
        # Whether this worker holds the lease (an SQLite log's worker is the only one, always active), who does when
        # another one does, and when this one last tried to take it.
        self.active = self.log.active
        self.active_name: Optional[str] = None
        self.last_lease_try = 0.0
        self.host_names = set(h.name for h in config.hosts)
        self.heartbeats: Dict[str, Heartbeat] = {}
        self.pushed: Dict[str, Pushed] = {}
        # {host: time.time() of the library's last state_changed}: states taken before it are not read.
        self.changed: Dict[str, float] = {}
        # The hosts at either end of a migration under way (since its submission, until the sweep after its end): while
        # a domain moves, and until a state taken after its move comes, a host's pushed state may miss it (the other
        # end pushed first).
        self.moving: Set[str] = set()
        self.stopping = False
        self.last_sweep = 0.0
        self.last_prune = 0.0
        self.notices: List[JobRow] = []
        # The kind of the request handle() took last (None when it could not be decoded).
        self.kind: Optional[str] = None

    def _secure(self, zmq: ZmqModule) -> None:
        key_dir = self.config.security['key_dir']
        self.allowed = curve.load_allowed(key_dir)
        public, secret = curve.load_pair(key_dir, curve.SERVER)
        thread_auth = importlib.import_module('zmq.auth.thread')
        self.auth = thread_auth.ThreadAuthenticator(self.context, log=logging.getLogger('maglica.zap'))
        self.auth.start()
        self.auth.configure_curve_callback(transport.ZAP_DOMAIN_PUB, transport.AllowList(self.allowed, hosts_only=True))
        self.auth.configure_curve_callback(transport.ZAP_DOMAIN_REP, transport.AllowList(self.allowed))
        for sock, domain in ((self.pub, transport.ZAP_DOMAIN_PUB), (self.rep, transport.ZAP_DOMAIN_REP)):
            sock.curve_server = True
            sock.curve_publickey = public
            sock.curve_secretkey = secret
            sock.zap_domain = domain.encode()
        LOG.info('CURVE on, %d key(s) allowed: %s', len(self.allowed), ', '.join(sorted(self.allowed.values())))

    def close(self) -> None:
        # Whatever waits for the disk is sent once it is there: one last fsync, here.
        self.syncer.stop()
        if self.outgoing and self.syncer.error is None:
            self.syncer.sync()
            self.syncer.synced = self.commits
            self.release()
        self.syncer.close()
        self.log.release_lease()  # a standby takes over at once
        self.log.close()
        os.close(self.wake_read)
        os.close(self.wake_write)
        if self.auth is not None:
            self.auth.stop()
        self.pub.close()
        self.rep.close()
        self.context.term()

    # -- requests ---------------------------------------------------------

    def identity(self, frame: Frame) -> Optional[str]:
        """Who sent a frame: an allow-list identity under CURVE, None in plain mode."""
        if self.allowed is None:
            return None
        user = frame.get('User-Id')
        return self.allowed.get(user.encode('ascii')) if user else None

    def handle(self, frame: Frame) -> Answered:
        """Answer one request frame. Never raises on bad input: the error goes back as the reply."""
        self.kind = None
        try:
            kind, data = messages.decode_request(frame.bytes)
            self.kind = kind
        except MessageError as e:
            LOG.warning('refused a malformed request: %s', e)
            return {'ok': False, 'error': str(e)}
        if self.allowed is not None:
            # Fail closed: under CURVE a sender without a known identity gets nothing at all.
            who = self.identity(frame)
            if who is None:
                LOG.warning('refused %s from a key that is not in the allow-list', kind)
                return {'ok': False, 'error': 'the sender key is not in the allow-list'}
            if kind in LIBRARY_REQUESTS and who != curve.LIBRARY:
                LOG.warning('refused %s from %s: only the library key may make it', kind, who)
                return {'ok': False, 'error': '%s may not make %s requests' % (who, kind)}
            if kind in HOST_REQUESTS and who != data['host']:
                LOG.warning('refused a report for %s from the key of %s', data['host'], who)
                return {'ok': False, 'error': 'the key of %s may not report for %s' % (who, data['host'])}
        if kind in NAMED_HOST and NAMED_HOST[kind](data) not in self.host_names:
            return {'ok': False, 'code': 'not_found', 'error': 'host %s is not in the client worker configuration' % NAMED_HOST[kind](data)}
        handlers: Dict[str, Callable[[Request], Answered]] = {
            'submit': self.request_submit, 'status': self.request_status, 'list': self.request_list,
            'hosts': self.request_hosts, 'report': self.request_report, 'fetch': self.request_fetch,
            'slots': self.request_slots, 'maintenance': self.request_maintenance,
            'state': self.request_state, 'states': self.request_states, 'state_changed': self.request_state_changed}
        if kind not in WRITING_REQUESTS:
            return handlers[kind](data)
        # Alone, its own transaction. In a batch, a savepoint, so that a failing request undoes only itself - where
        # savepoints cost no round trip (SQLite); else the batch's transaction, and a failure answers the batch
        # again one request at a time (BatchFailed).
        with self.log.transaction() if self.log.depth == 0 or self.log.cheap_savepoints else contextlib.nullcontext():
            return handlers[kind](data)

    def request_submit(self, data: Request) -> Reply:
        """Log a job. A clone's placement and its slot reservation are one step here: the library sends the
        reservations it counted on the chosen host (`seen`); when that host has any other open one now, the
        placement is stale and refused, and the library plans again with the reservations as they are."""
        job = data['job']
        rules = ADMISSIONS.get(job['action'])
        # A resent id is answered below, as it was the first time; a job with no admission rules needs no look first
        # (the log's insert leaves the first submission as it is).
        if rules is not None and not self.log.exists(job['id']):
            answered = self._admit(job, rules, data.get('seen'))
            if answered is not None:
                return answered
        # Logged as published: its notice goes out once the transaction is committed.
        row, created = self.log.add(job, self.config.jobs['ttl'], claims=rules is not None and rules.claims(), published=True)
        if created:
            LOG.debug('job %s %s on %s queued', job['id'], job['action'], job['host'])  # (its end is logged at INFO)
            self.notices.append(row)
            if job['action'] == 'vm.migrate':
                # Moving from now on, even should it end before the next sweep looks (sweep() then notes its end).
                self.moving.update(h for h in (job['host'], job['args'].get('destination')) if isinstance(h, str))
        return {'ok': True, 'job': messages.redact(row)}

    def _admit(self, job: Dict[str, Any], rules: Admission, seen: Optional[Sequence[str]]) -> Optional[Reply]:
        """A new job's admission: the reply that answers it instead of queueing it, or None with its claims taken."""
        if rules.name is not None:
            # One job per VM name cluster-wide, decided in the transaction that logs the job: a second clone of a
            # name whose clone is in flight (a re-run after a wait timeout, two forks at once) gets the first job.
            holder = self.log.name_holder(job['args'][rules.name], rules.name_host(job))
            if holder is not None:
                LOG.info('job %s not queued: %s is being made by job %s', job['id'], job['args'][rules.name], holder)
                # name_holder found it by joining the jobs table: the row is there.
                return {'ok': True, 'job': messages.redact(cast(JobRow, self.log.get(holder)))}
        target = rules.target(job)
        if target is not None and self.log.in_maintenance(target):
            LOG.info('job %s %s refused: %s is in maintenance', job['id'], job['action'], target)
            return {'ok': False, 'code': 'maintenance',
                    'error': 'host %s is in maintenance: it takes no new VMs (maglica host activate %s brings it back)'
                    % (target, target)}
        if rules.slot and seen is not None:
            counted = set(seen)
            others = [slot['job_id'] for slot in self.log.open_slots(job['host']) if slot['job_id'] not in counted]
            if others:
                LOG.info('job %s refused: placement on %s is stale (%d clone(s) reserved there since)', job['id'], job['host'], len(others))
                return {'ok': False, 'code': 'stale',
                        'error': 'the placement on %s is stale: %d other clone(s) were reserved there since it was planned'
                        % (job['host'], len(others))}
        if rules.name is not None:
            self.log.claim('hostname', name_key(job['args'][rules.name], rules.name_host(job)), job['host'], job['id'])
        if rules.slot:
            self.log.claim('slot', job['id'], job['host'], job['id'])
        return None

    def request_slots(self, data: Request) -> Reply:
        """The slot reservations of the open clone jobs: what placement counts besides the hosts' domains."""
        slots: List[Dict[str, Any]] = []
        for slot in self.log.open_slots():
            args = slot['args']
            entry = {'host': slot['host'], 'job_id': slot['job_id'], 'hostname': args['hostname'], 'image': args['image'],
                     'start': bool(args.get('start', True)), 'clone_mode': args.get('clone_mode') or 'full'}
            if args.get('spread_group'):
                entry['spread_group'] = args['spread_group']
            slots.append(entry)
        return {'ok': True, 'slots': slots, 'maintenance': sorted(self.log.maintenance())}

    def request_maintenance(self, data: Request) -> Reply:
        """Set (state maintenance), clear (active) or read a host's maintenance flag; it lasts in the job log."""
        host = data['host']
        changed = False
        if data.get('state') is not None:
            changed = self.log.set_maintenance(host, data['state'] == 'maintenance')
            if changed:
                LOG.warning('host %s is %s', host, 'in maintenance' if data['state'] == 'maintenance' else 'active again')
        since = self.log.maintenance().get(host)
        return {'ok': True, 'host': host, 'maintenance': since is not None, 'since': since, 'changed': changed}

    def request_status(self, data: Request) -> Reply:
        row = self.log.get(data['id'])
        if row is None:
            return {'ok': False, 'code': 'not_found', 'error': 'no job with id %s' % data['id']}
        return {'ok': True, 'job': messages.fit_job(messages.redact(row), REPLY_BUDGET)}

    def request_list(self, data: Request) -> Reply:
        """One page of the newest jobs, diffs left out, as many as fit one frame; `more` when the limit
        was not reached (the library asks again `after` the last one)."""
        limit = data.get('limit') or 20
        jobs, more = one_page((messages.fit_job(messages.without_diffs(messages.redact(row)), REPLY_BUDGET)
                               for row in self.log.recent(limit, data.get('host'), data.get('after'))), messages.encoded_size)
        return {'ok': True, 'jobs': jobs, 'more': more}

    def request_hosts(self, data: Request) -> Reply:
        now = time.time()
        hosts: List[Dict[str, Any]] = []
        maintenance = self.log.maintenance()
        for host in self.config.hosts:
            heartbeat = self.heartbeats.get(host.name)
            age = now - heartbeat['time'] if heartbeat else None
            hosts.append({'host': host.name, 'alive': age is not None and age < 3 * self.config.host_worker['heartbeat_interval'],
                          'last_seen_s': age, 'pid': heartbeat['pid'] if heartbeat else None,
                          'running': heartbeat['running'] if heartbeat else [], 'maintenance': host.name in maintenance})
        return {'ok': True, 'hosts': hosts}

    def request_fetch(self, data: Request) -> Reply:
        """The jobs of this host that are still to run; the others are `gone` (finished, expired, unknown).
        As many jobs as fit one frame (at least one); the ids in neither list are asked for again."""
        jobs: List[Dict[str, Any]] = []
        gone: List[str] = []
        used = 0
        for job_id in data['ids']:
            # An acknowledged job is in its host worker's record, and its secrets are gone from here.
            job = self.log.to_run(job_id, data['host'])
            if job is None:
                gone.append(job_id)
                used += len(job_id) + 3
                continue
            size = messages.encoded_size(job) + 1
            if jobs and used + size > REPLY_BUDGET:
                continue  # not in this reply: the host worker fetches it next
            jobs.append(job)
            used += size
        return {'ok': True, 'jobs': jobs, 'gone': gone}

    def request_report(self, data: Request) -> Reply:
        host = data['host']
        for problem in data.pop('problems', None) or []:  # items messages.check_report dropped or made failures
            LOG.warning('a report of %s had a bad item, refused alone: %s', host, problem)
        self.heartbeats[host] = {'time': time.time(), 'pid': data.get('pid'), 'running': data.get('running') or []}
        # A job whose result comes in the same report is not acknowledged first: its end does all an acknowledgement
        # does (running, acked, secrets dropped).
        results = data.get('results') or []
        ended = set(result['id'] for result in results)
        acks = [job_id for job_id in data.get('acks') or () if job_id not in ended]
        if acks:
            self.log.acknowledge(host, acks)
        if data.get('progress'):
            self.log.set_progress(host, data['progress'])
        taken: List[str] = []
        refused: List[str] = []
        for result in results:
            if self.log.finish(host, result):
                LOG.info('job %s on %s %s', result['id'], host, result['status'])
                taken.append(result['id'])
            else:
                LOG.warning('refused a result from %s for job %s: not a job of that host', host, result['id'])
                refused.append(result['id'])
        reply: Reply = {'ok': True, 'taken': taken, 'refused': refused}
        digest = data.get('state_digest')
        if digest is not None:
            pushed = self.pushed.get(host)
            if pushed is not None and pushed.digest == digest:
                pushed.taken = max(pushed.taken, time.time() - (data.get('state_age_s') or 0.0))
            else:
                reply['state_wanted'] = True
        return reply

    def request_state(self, data: Request) -> Reply:
        """Keep a host's pushed state (validated as messages.HOST_STATE with the request)."""
        host = data['host']
        state = data['state']
        for domain in state['domains']:  # every key a listing reads, as virt.describe gives them (None: not set)
            for key in messages.DOMAIN_INFO:
                domain.setdefault(key, None)
        whole = messages.encoded_text(state)
        if len(whole) > REPLY_BUDGET - 256:  # it could not be sent on in a reply
            return {'ok': False, 'error': 'the state of %s is %d bytes: over the %d a reply can carry' % (host, len(whole), REPLY_BUDGET - 256)}
        self.pushed[host] = Pushed(state, data['digest'], host_state.host_totals(state['domains']),
                                   time.time() - (data.get('age_s') or 0.0), frozenset(d['name'] for d in state['domains']),
                                   {('domains',): whole})
        return {'ok': True}

    def request_state_changed(self, data: Request) -> Reply:
        self.changed[data['host']] = time.time()
        return {'ok': True}

    def request_states(self, data: Request) -> bytes:
        """One page of the pushed states, in configuration order from the host after `after`: each host's whole
        state (view `domains`) or placement's view of it, with its age. Hosts without a pushed state are left out.
        Encoded here (a frame): each host's view is encoded once and kept for the requests after (Pushed.text)."""
        wanted = set(data.get('hosts') or self.host_names) - self.moving - self.log.moving_hosts()
        images, names = set(data.get('images') or ()), set(data.get('names') or ())
        order = [host.name for host in self.config.hosts]
        start = order.index(data['after']) + 1 if data.get('after') in order else 0
        now = time.time()

        def entries() -> Iterator[str]:
            for host in order[start:]:
                pushed = self.pushed.get(host)
                if pushed is None or host not in wanted or pushed.taken <= self.changed.get(host, 0.0):
                    continue
                age = messages.encoded_text(round(max(0.0, now - pushed.taken), 3))
                # The keys in encode()'s order: age_s, host, state.
                yield '{"age_s":%s,"host":%s,"state":%s}' % (age, messages.encoded_text(host), pushed.text(data['view'], images, names))
        page, more = one_page(entries(), len)
        return messages.encode_list_reply('states', page, more)

    # -- publishing -------------------------------------------------------

    def publish(self, rows: List[JobRow]) -> None:
        """Mark jobs published in the current transaction; their notices go out once it is committed."""
        self.log.mark_published([row['id'] for row in rows])
        self.notices.extend(rows)

    def committed(self) -> int:
        """The number of the last commit that wrote to the log, after asking for its fsync if it is a new one."""
        changes = self.log.changes()
        if changes != self.changes:
            self.changes = changes
            self.commits += 1
            self.syncer.want(self.commits)
        return self.commits

    def send_after_sync(self, replies: List[List[bytes]]) -> None:
        """Send `replies` and the notices gathered so far once every commit made so far is on disk (they may tell
        of any of them: a reply that only read may have read a commit still in the page cache)."""
        commit = self.committed()
        if replies or self.notices:
            self.outgoing.append((commit, replies, self.notices))
            self.notices = []
        self.release()

    def release(self) -> None:
        """Send what waited for commits that are on disk now, in order. A failed fsync stops the worker: what it
        would say might not be durable, so it says nothing (the requesters resend, the restarted worker answers)."""
        if self.syncer.error is not None:
            self.outgoing = []
            raise RuntimeError('the job log cannot be made durable: %s' % self.syncer.error)
        synced = self.syncer.synced
        while self.outgoing and self.outgoing[0][0] <= synced:
            _commit, replies, notices = self.outgoing.pop(0)
            for reply in replies:
                self.rep.send_multipart(reply)
            for row in notices:
                notice = {'id': row['id'], 'host': row['host'], 'action': row['action']}
                self.pub.send_multipart([messages.topic(row['host']), messages.encode(notice)])

    def send_notices(self) -> None:
        self.send_after_sync([])

    def sweep(self) -> None:
        """Expire jobs past their TTL and publish again those no host worker has acknowledged; note the hosts whose
        migrations ended (their pushed states are read again once taken after now)."""
        moving = self.log.moving_hosts()
        now = time.time()
        for host in self.moving - moving:
            self.changed[host] = now
        self.moving = moving
        with self.log.transaction():
            expired = self.log.expire()
            due = self.log.due_for_publish(self.config.jobs['republish_interval'])
            if due:
                self.publish(due)
        self.log.checkpoint_if_dropped()
        retention = self.config.jobs['retention_days'] * 86400
        now = time.monotonic()
        if now - self.last_prune >= min(PRUNE_INTERVAL, retention / 10):
            self.last_prune = now
            pruned = self.log.prune(retention)
            if pruned:
                LOG.info('pruned %d job(s) that ended more than %g day(s) ago', pruned, self.config.jobs['retention_days'])
        if expired:
            LOG.warning('%d job(s) expired: no host worker acknowledged them', expired)
        self.send_notices()

    # -- the loop ---------------------------------------------------------

    def receive(self, zmq: ZmqModule) -> List[Tuple[List[bytes], Optional[Frame]]]:
        """Every request waiting on the socket (at most MAX_BATCH): [(envelope, frame or None when malformed)]."""
        requests: List[Tuple[List[bytes], Optional[Frame]]] = []
        while len(requests) < MAX_BATCH:
            try:
                frames = self.rep.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                break
            # [peer identity, empty delimiter, request]: what a REQ socket sends through ROUTER.
            delimiter = next((n for n, f in enumerate(frames) if not f.bytes), None)
            if delimiter is None:
                continue  # not from a REQ socket: REP would have dropped it too
            envelope, body = [f.bytes for f in frames[:delimiter + 1]], frames[delimiter + 1:]
            requests.append((envelope, body[0] if len(body) == 1 else None))
        return requests

    def answer(self, frame: Optional[Frame]) -> Answered:
        """The reply to one request. Its writes (and notices) are undone when it fails; never raises."""
        if frame is None:
            return {'ok': False, 'error': 'a request must be one frame'}
        notices = len(self.notices)
        try:
            return self.handle(frame)
        except LeaseLost:
            raise  # the whole batch is answered standby
        except Exception as e:  # a bug must not take the worker down
            if self.log.depth and not self.log.cheap_savepoints:
                raise BatchFailed() from e  # the batch's transaction is spoilt: undone, and answered again one by one
            del self.notices[notices:]
            LOG.exception('request failed')
            return {'ok': False, 'error': 'internal error: %s' % e}

    # -- the lease (PostgreSQL) -------------------------------------------

    def standby_reply(self) -> Reply:
        who = ': the active one is %s' % self.active_name if self.active_name else '; none is active yet'
        reply: Reply = {'ok': False, 'code': 'standby', 'error': 'client worker %s is standby%s' % (self.me.name, who)}
        if self.active_name:
            reply['active'] = self.active_name
        return reply

    def holds_lease(self) -> bool:
        """Whether this worker is active now: renews the lease first when it might have run out (after a pause)."""
        if self.active and time.monotonic() >= self.log.held_until - self.config.joblog['lease_s'] / 2:
            try:
                with self.log.transaction():
                    pass  # start() renews the lease
            except LeaseLost as e:
                self.became_standby(e)
        return self.active

    def became_standby(self, why: Exception) -> None:
        LOG.warning('client worker %s is standby now: %s', self.me.name, why)
        self.active = False
        self.notices = []
        self.active_name = self.log.lease_holder()

    def try_lease(self) -> None:
        """A standby's turn: take the lease when it is free, and start as the active client worker."""
        if self.active:
            return  # an SQLite log's worker always is
        if not self.log.take_lease():
            self.active_name = self.log.lease_holder()
            return
        LOG.warning('client worker %s is active (lease epoch %s)', self.me.name, self.log.epoch)
        self.active, self.active_name = True, self.me.name
        # What a worker kept in memory while it was active before is as old as its pause: every host worker
        # reports and pushes its state again.
        self.heartbeats, self.pushed, self.changed, self.moving = {}, {}, {}, set()
        self.last_sweep = 0.0

    def serve_waiting(self, zmq: ZmqModule) -> None:
        """Answer every waiting request after one commit of the job log: one fsync for all of them. A request
        alone is its own transaction (when it writes at all). A standby answers each one `standby`."""
        requests = self.receive(zmq)
        replies: List[Answered] = []
        at_once: List[bool] = []
        if not self.holds_lease():
            for envelope, _frame in requests:
                self.rep.send_multipart(envelope + [messages.encode(self.standby_reply())])
            return
        try:
            try:
                with self.log.transaction() if len(requests) > 1 else contextlib.nullcontext():
                    for _envelope, frame in requests:
                        self.kind = None
                        replies.append(self.answer(frame))
                        at_once.append(self.kind in UNSYNCED_REPLIES)
            except BatchFailed:
                LOG.warning('a request failed in a batch of %d: each is answered alone', len(requests))
                replies, at_once, self.notices = [], [], []
                for _envelope, frame in requests:
                    self.kind = None
                    replies.append(self.answer(frame))
                    at_once.append(self.kind in UNSYNCED_REPLIES)
        except LeaseLost as e:  # another worker holds the lease: this batch wrote nothing
            self.became_standby(e)
            replies = [self.standby_reply()] * len(requests)
            at_once = [True] * len(requests)
        except Exception as e:  # the commit failed (a full disk): nothing of this batch is logged
            LOG.exception('cannot commit the job log')
            replies = [{'ok': False, 'error': 'internal error: the job log cannot be written: %s' % e}] * len(requests)
            at_once = [False] * len(requests)
            self.notices = []
        self.log.checkpoint_if_dropped()
        messages_out: List[List[bytes]] = []
        for (envelope, _frame), reply, now in zip(requests, replies, at_once):
            try:
                data = reply if isinstance(reply, bytes) else messages.encode(reply)
            except MessageError as e:  # e.g. a listing too long for one frame
                data = messages.encode({'ok': False, 'error': 'the reply cannot be sent: %s' % e})
            if now:
                self.rep.send_multipart(envelope + [data])
            else:
                messages_out.append(envelope + [data])
        self.send_after_sync(messages_out)

    def run(self) -> None:
        zmq = transport.zmq()
        LOG.info('client worker %s pid %d: PUB %s, REP %s, job log %s', self.me.name, os.getpid(), self.me.bind_endpoint('pub'),
                 self.me.bind_endpoint('rep'), self.config.joblog['backend'])
        poller = zmq.Poller()
        poller.register(self.rep, zmq.POLLIN)
        poller.register(self.wake_read, zmq.POLLIN)
        while not self.stopping:
            events = dict(poller.poll(int(SWEEP_INTERVAL * 1000)))
            if self.wake_read in events:
                try:
                    os.read(self.wake_read, 4096)
                except BlockingIOError:
                    pass
                self.release()
            if self.rep in events:
                self.serve_waiting(zmq)
            now = time.monotonic()
            if not self.active:
                if now - self.last_lease_try >= min(LEASE_POLL, self.config.joblog['lease_s'] / 4):
                    self.last_lease_try = now
                    self.try_lease()
            elif now - self.last_sweep >= SWEEP_INTERVAL:
                self.last_sweep = now
                try:
                    self.sweep()
                except LeaseLost as e:
                    self.became_standby(e)


def main(argv: Optional[Sequence[str]] = None) -> int:
    return service.serve('python3 -m maglica.client_worker.worker', 'Maglica client worker.',
                         lambda config, args: ClientWorker(config, args.name), argv,
                         [(('--name',), {'default': None, 'help': 'which of client.workers this is (when there are several)'})])


if __name__ == '__main__':
    raise SystemExit(main())
