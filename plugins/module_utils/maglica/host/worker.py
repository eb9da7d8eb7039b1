# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The host worker: one per hypervisor, runs the jobs published to its host's topic.

    python3 -m maglica.host.worker --config /etc/maglica.conf --name host0.example.com

Every job is recorded before it is acknowledged and is never run twice: a job
delivered again is answered from the record. Results wait in the outbox
(the same record) until the client worker has taken them. A job found
running after a restart is reconciled against libvirt before anything runs.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import os
import queue
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import (
    Any,
    ContextManager,
    Dict,
    Iterable,
    List,
    Mapping,
    Optional,
    Sequence,
    Set,
    Tuple,
    cast,
)

from ..cluster.config import Config
from ..daemon import service
from ..daemon.store import Store, drop_secrets_sql, wal_sync
from ..errors import DispatchError, MessageError
from ..protocol import messages, transport
from . import actions, batching, clone, spares
from .state_push import StateWatcher

LOG = logging.getLogger('maglica.host.worker')
RECORD_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    job TEXT NOT NULL,
    state TEXT NOT NULL,
    result TEXT,
    reported INTEGER NOT NULL DEFAULT 0,
    received REAL NOT NULL,
    finished REAL
);
CREATE INDEX IF NOT EXISTS jobs_outbox ON jobs (reported) WHERE reported = 0;
-- What a running job is about to make (kind file, volume or domain; detail: a domain's UUID), written before
-- it is made: after a restart the job removes what it recorded, never what is merely in its way.
CREATE TABLE IF NOT EXISTS owned (
    job_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (job_id, kind, key)
);
"""
DROP_SECRETS = drop_secrets_sql('jobs', 'job', '.args')
REPORT_BATCH = 64
REPORT_TIMEOUT = 2.0
# A job's acknowledgement waits at most this long (seconds) for the job's result: a job that ends at once is then
# acknowledged in the report of its result, one round trip instead of two for both workers.
ACK_WAIT_S = 0.02
# A running job's progress goes to the client worker at most this often.
PROGRESS_INTERVAL = 0.5
# A spare still being made when the worker stops: its launch may end and remove its files within this (seconds).
SPARE_CLOSE_WAIT = 15.0
# Keep finished jobs this long so a late re-delivery is still answered from the record.
RECORD_KEEP_S = 7 * 86400


class Record(Store):
    """The host worker's own SQLite: jobs it has taken, their results, and which results are not yet taken.

    `synced_by_caller` (the host worker's): commits do not wait for the disk, the worker calls sync() where its
    promises need it - jobs on disk before any of them starts or is acknowledged, results on disk before they
    are reported. A mark that a result was taken needs no fsync: lost, the result is reported again, and the
    client worker takes it again without a change."""

    def __init__(self, path: str, synced_by_caller: bool = False) -> None:
        super(Record, self).__init__(path, RECORD_SCHEMA, synced_by_caller)
        self.path = path
        self.synced_by_caller = synced_by_caller

    def sync(self) -> None:
        """Make every commit so far durable: the fsync of the WAL that synchronous=FULL makes inside COMMIT."""
        if self.synced_by_caller:
            wal_sync(self.path)

    def get(self, job_id: str) -> Optional[Tuple[str, int]]:
        """(state, reported) of a job taken, None when it was not."""
        row = self.db.execute('SELECT state, reported FROM jobs WHERE id = ?', (job_id,)).fetchone()
        return row

    def take(self, job: actions.Job) -> bool:
        """Record a job as running; False when it was taken before (it is never run twice)."""
        cursor = self.db.execute("INSERT OR IGNORE INTO jobs (id, job, state, received) VALUES (?, ?, 'running', ?)",
                                 (job['id'], json.dumps(job), time.time()))
        return cursor.rowcount == 1

    def finish(self, job_id: str, result: Mapping[str, Any], secrets: bool = True, owned: bool = True) -> None:
        """Record a job's result. Its secret arguments are dropped (`secrets`: it has any) and its ownership records
        (`owned`: it has any): reconcile never runs a finished job again."""
        self.db.execute("UPDATE jobs SET state = 'done', result = ?, reported = 0, finished = ? WHERE id = ?",
                        (json.dumps(result), time.time(), job_id))
        if owned:
            self.db.execute('DELETE FROM owned WHERE job_id = ?', (job_id,))
        if secrets:
            self.drop_secrets(DROP_SECRETS, [job_id])

    def report_again(self, job_id: str) -> None:
        self.db.execute("UPDATE jobs SET reported = 0 WHERE id = ? AND state = 'done'", (job_id,))

    def running(self) -> List[actions.Job]:
        return [json.loads(r[0]) for r in self.db.execute("SELECT job FROM jobs WHERE state = 'running' ORDER BY received")]

    def outbox(self, limit: int) -> List[Dict[str, Any]]:
        return [json.loads(r[0]) for r in self.db.execute("SELECT result FROM jobs WHERE state = 'done' AND reported = 0 "
                                                          'ORDER BY finished LIMIT ?', (limit,))]

    def mark_reported(self, job_ids: Iterable[str]) -> None:
        with self.transaction():
            self.db.executemany('UPDATE jobs SET reported = 1 WHERE id = ?', [(i,) for i in job_ids])

    def prune(self) -> None:
        self.db.execute("DELETE FROM jobs WHERE state = 'done' AND reported = 1 AND finished < ?", (time.time() - RECORD_KEEP_S,))


class Intents(Store):
    """The record's `owned` table, on a connection of its own: job threads write their intents there, each
    committed (durable) before the thing is made, while the loop's connection writes the rest."""

    def __init__(self, path: str) -> None:
        super(Intents, self).__init__(path, RECORD_SCHEMA)
        self.lock = threading.Lock()
        # Jobs of this process that have ownership rows (read on reconcile, or written): the rows a job's end deletes.
        self.owners: Set[str] = set()

    def ownership(self, job_id: str, recorded: bool = True) -> clone.Ownership:
        """What the job recorded so far, and where it records more. `recorded` False: a job just taken, which cannot
        have recorded anything yet (the record is read only for a job that ran before: a reconcile)."""
        rows: List[Tuple[str, str, str]] = []
        if recorded:
            with self.lock:
                rows = self.db.execute('SELECT kind, key, detail FROM owned WHERE job_id = ?', (job_id,)).fetchall()
                if rows:
                    self.owners.add(job_id)

        def save(kind: str, key: str, detail: str) -> None:
            with self.lock, self.transaction():
                self.db.execute('INSERT OR REPLACE INTO owned (job_id, kind, key, detail) VALUES (?, ?, ?, ?)',
                                (job_id, kind, key, detail))
                self.owners.add(job_id)
        return clone.Ownership.from_rows(rows, save)

    def ended(self, job_id: str) -> bool:
        """Forget a job that ends; whether it has ownership rows to delete."""
        with self.lock:
            if job_id in self.owners:
                self.owners.discard(job_id)
                return True
            return False


class Slot:
    """One of the worker's `concurrency` slots, held by a job while it works; given back once - when a clone joins the
    shared customisation appliance (it copies no more, and the batch it waits for needs the slot), or at its end."""

    def __init__(self, slots: threading.Semaphore) -> None:
        self.slots = slots
        self.held = False
        self.lock = threading.Lock()

    def __enter__(self) -> 'Slot':
        self.slots.acquire()
        self.held = True
        return self

    def release(self) -> None:
        with self.lock:
            if self.held:
                self.held = False
                self.slots.release()

    def __exit__(self, *exc_info: object) -> None:
        self.release()


def unsendable(result: Dict[str, Any], reason: Any) -> Dict[str, Any]:
    """A failed result in place of one that cannot be sent: the job ends, with the reason."""
    return {'id': result['id'], 'status': 'failed',
            'message': 'the job ended %s but its result cannot be sent to the client worker: %s'
                       % (result.get('status'), str(reason)[:500])}


def progress_figures(done: Any, total: Any) -> Tuple[int, int]:
    """(done, total) as the report schema takes them (messages.PROGRESS): whole bytes within its bounds, whatever a
    job's figures came from (a server's Content-Length...). A total that is unknown or below done is 0 (unknown)."""
    bound = messages.PROGRESS['done'].maximum

    def whole(value: Any) -> int:
        try:
            return min(max(int(value), 0), bound)
        except (TypeError, ValueError, OverflowError):
            return 0
    done, total = whole(done), whole(total)
    return done, (total if total >= done else 0)


class HostWorker(object):
    def __init__(self, config: Config, name: str) -> None:
        self.config = config
        self.host = config.host(name)
        # Its own libvirtd over the local socket; other hosts' (an image copy's source) over the configured transport.
        config.use_local_socket(self.host.name)
        self.name = self.host.name
        zmq = transport.zmq()
        self.context = zmq.Context()
        state_dir = config.host_worker['state_dir']
        self.record = Record(os.path.join(state_dir, '%s.sqlite' % self.name), synced_by_caller=True)
        self.intents = Intents(os.path.join(state_dir, '%s.sqlite' % self.name))
        self.sub = self.context.socket(zmq.SUB)
        self.sub.linger = 0
        transport.secure_client(self.sub, config, self.name)
        self.sub.setsockopt(zmq.SUBSCRIBE, messages.topic(self.name))
        for endpoint in config.endpoints('pub'):  # every client worker's: the active one publishes
            self.sub.connect(endpoint)
        self.requester = transport.Requester(config, self.name, context=self.context)
        window = config.host_worker['batch_window']
        # batch_window 0: one launch and one inspection per clone.
        self.batcher: Optional[batching.CustomizeBatcher] = None
        if window > 0:
            self.batcher = batching.CustomizeBatcher(window=window, cache_path=os.path.join(state_dir, '%s.layouts.json' % self.name))
        self.spare_clones: Optional[spares.SpareClones] = None
        if config.host_worker['spare_images'] > 0:
            self.spare_clones = spares.SpareClones(
                os.path.join(state_dir, '%s.spares.json' % self.name),
                self.batcher.layouts if self.batcher else batching.LayoutCache(), config.host_worker['spare_images'],
                config.host_worker['spare_idle_s'])
        # At most `concurrency` jobs work at once (each holds a Slot); clones waiting in the shared appliance hold
        # none, so the pool has threads for them too: the members of a batch all reach it, whatever the concurrency.
        concurrency = max(1, config.host_worker['concurrency'])
        self.slots = threading.Semaphore(concurrency)
        self.pool = ThreadPoolExecutor(max_workers=concurrency + (self.batcher.max_batch if self.batcher else 0))
        self.finished: queue.Queue[actions.Result] = queue.Queue()
        # A job thread that finishes writes a byte here, so the loop wakes at once to report its result.
        self.wake_read, self.wake_write = os.pipe()
        os.set_blocking(self.wake_read, False)
        os.set_blocking(self.wake_write, False)
        self.poller = zmq.Poller()
        self.poller.register(self.sub, zmq.POLLIN)
        self.poller.register(self.wake_read, zmq.POLLIN)
        self.acks: Set[str] = set()
        self.acks_since = 0.0  # when the oldest acknowledgement not yet sent was made (time.monotonic())
        self.to_fetch: Set[str] = set()
        self.running: Dict[str, Tuple[str, float]] = {}  # running job id: (action, time.monotonic() at its start)
        # Running jobs whose actions may change the host's domains (not actions.CHANGE_NO_DOMAIN).
        self.changing: Set[str] = set()
        # Whether the record's outbox may hold results to report: known here, so that each turn of the loop need not
        # ask the record (set when results are recorded, and from what is left after each report).
        self.outbox_waiting = True
        self.outbox_more = False
        # Running jobs whose arguments hold secrets: their end drops them from the record.
        self.secret_jobs: Set[str] = set()
        # {job id: (done, total)} reported by running jobs' threads, sent with the next report (under progress_lock).
        self.progress: Dict[str, Tuple[int, int]] = {}
        self.progress_lock = threading.Lock()
        self.progress_sent: Dict[str, Tuple[int, int]] = {}
        self.stopping = False
        self.last_report = 0.0
        self.backoff_until = 0.0
        # The host's state, watched and pushed (host_worker.state_poll_interval 0: never).
        self.watcher: Optional[StateWatcher] = None
        if config.host_worker['state_poll_interval'] > 0:
            self.watcher = StateWatcher(config, self.host, self.wake_write)
        self.pushed_digest: Optional[str] = None  # of the state the client worker holds, as far as we know
        self.unsent_digest: Optional[str] = None  # of a state that cannot be sent (too big, refused)
        self.last_push = 0.0

    def close(self) -> None:
        if self.watcher is not None:
            self.watcher.stop()
        # Let running jobs end and keep their results in the outbox for the next start.
        self.pool.shutdown(wait=True)
        self.collect()
        if self.spare_clones is not None:
            self.spare_clones.close(wait=SPARE_CLOSE_WAIT)
        self.requester.close()
        self.intents.close()
        self.sub.close()
        self.context.term()
        os.close(self.wake_read)
        os.close(self.wake_write)

    # -- jobs -------------------------------------------------------------

    def receive(self, frames: Sequence[bytes]) -> None:
        """Take one PUB notice: a job we know is acknowledged again, a new one is fetched."""
        try:
            if len(frames) != 2 or frames[0] != messages.topic(self.name):
                raise MessageError('not a [topic, notice] message for %s' % self.name)
            notice = messages.validate_notice(messages.decode(frames[1]))
            if notice['host'] != self.name:
                raise MessageError('job %s is for host %s, not %s' % (notice['id'], notice['host'], self.name))
        except MessageError as e:
            LOG.warning('dropped a message: %s', e)
            return
        known = self.record.get(notice['id'])
        if known is None:
            self.to_fetch.add(notice['id'])
            return
        self.acknowledge(notice['id'])
        if known[0] == 'done':
            # Delivered again: the client worker has not stored our result yet. Send it again, never re-run.
            self.record.report_again(notice['id'])
            self.outbox_waiting = True

    def fetch(self, start: bool = True) -> List[actions.Job]:
        """Get the jobs we have notices of; record each before it is acknowledged, and start it once the record is on
        disk. `start` False: the new jobs are returned, recorded but neither synced nor started (run() syncs them
        with the results of the same turn, in one fsync, then starts them)."""
        ids = sorted(self.to_fetch)[:256]
        try:
            reply = self.requester.request({'type': 'fetch', 'host': self.name, 'ids': ids}, REPORT_TIMEOUT)
        except DispatchError as e:
            LOG.warning('fetch failed, will retry: %s', e)
            self.backoff_until = time.monotonic() + 1.0
            return []
        if not reply.get('ok'):
            LOG.error('the client worker refused our fetch: %s', reply.get('error'))
            self.backoff_until = time.monotonic() + 5.0
            return []
        # A reply holds as many jobs as fit one frame: the ids it does not answer stay, for the next fetch (at once).
        answered = set(job.get('id') for job in reply.get('jobs') or [] if isinstance(job, dict))
        answered.update(job_id for job_id in reply.get('gone') or [] if isinstance(job_id, str))
        answered.intersection_update(ids)
        self.to_fetch.difference_update(answered)
        if not answered:  # never ask for the same ids in a tight loop
            LOG.error('the client worker answered none of the %d job(s) fetched, will retry', len(ids))
            self.backoff_until = time.monotonic() + 5.0
        taken: List[actions.Job] = []
        with self.record.transaction():  # one commit for every job of the reply; none runs before it is on disk
            for job in reply.get('jobs') or []:
                taken.extend(self._take(job, ids))
        if not start:
            return taken
        if taken:
            self.record.sync()
        for job in taken:
            self.start(job)
        return []

    def _take(self, fetched: Any, ids: Sequence[str]) -> List[actions.Job]:
        """[job] when it is new and ours: recorded (in the caller's transaction) and acknowledged."""
        try:
            job = cast(actions.Job, messages.validate_job(fetched))  # validated: a Job
            if job['host'] != self.name or job['id'] not in ids:
                raise MessageError('job %s is not one we asked for' % job['id'])
        except MessageError as e:
            LOG.warning('dropped a fetched job: %s', e)
            return []
        new = self.record.take(job)
        self.acknowledge(job['id'])
        return [job] if new else []

    def acknowledge(self, job_id: str) -> None:
        """Acknowledge a job (recorded) in a report soon: within ACK_WAIT_S, or with its result if it ends sooner."""
        if not self.acks:
            self.acks_since = time.monotonic()
        self.acks.add(job_id)

    def acks_wait(self, now: float) -> float:
        """Seconds the acknowledgements not yet sent may still wait for their jobs' results (0: due now)."""
        if not self.acks or len(self.acks) >= REPORT_BATCH:
            return 0.0
        return max(0.0, self.acks_since + ACK_WAIT_S - now)

    def start(self, job: actions.Job, reconcile: bool = False) -> None:
        # One line per job at INFO, at its end (collect): a line costs a no-op job a tenth of its CPU here.
        if reconcile:
            LOG.info('job %s %s reconciling', job['id'], job['action'])
        else:
            LOG.debug('job %s %s starting', job['id'], job['action'])
        self.running[job['id']] = (job['action'], time.monotonic())
        if job['action'] not in actions.CHANGE_NO_DOMAIN:
            self.changing.add(job['id'])
        if any(key in job['args'] for key in messages.SECRET_ARGS):
            self.secret_jobs.add(job['id'])
        self.pool.submit(self.execute, job, reconcile)

    def execute(self, job: actions.Job, reconcile: bool) -> None:
        slot = Slot(self.slots)
        customizer: batching.Customizer = batching.customize_alone
        # What the job runs inside, entered in order: its slot, and a clone's place in the customisation batch.
        around: List[ContextManager[Any]] = [slot]
        if self.batcher and job['action'] == 'vm.clone':
            customizer = functools.partial(self.batcher, on_join=slot.release)
            batch = cast(clone.CloneArgs, job['args']).get('batch')
            if batch:
                # Expected before it waits for a slot: the appliance waits for every job of its batch.
                around.insert(0, self.batcher.expecting(batch['id'], batch['size']))
            else:
                around.append(self.batcher.expecting())  # once it runs, as any clone job
        context = actions.Context(self.config, self.host, job, customizer, self.intents.ownership(job['id'], reconcile),
                                  lambda done, total: self.set_progress(job['id'], done, total), self.spare_clones)
        result: actions.Result
        try:
            with contextlib.ExitStack() as stack:
                for manager in around:
                    stack.enter_context(manager)
                result = actions.run(context, reconcile)
        except Exception as e:  # an action's bug must end the job failed, not kill the worker
            LOG.exception('job %s raised', job['id'])
            result = {'status': 'failed', 'message': 'internal error: %s' % e}
        result['id'] = job['id']
        self.finished.put(result)
        try:
            os.write(self.wake_write, b'.')
        except BlockingIOError:  # the pipe is full: the loop is woken already
            pass

    def set_progress(self, job_id: str, done: int, total: int) -> None:
        """Called from a job's thread: how far it is. The loop sends it with its next report."""
        with self.progress_lock:
            self.progress[job_id] = progress_figures(done, total)

    def progress_due(self) -> List[Dict[str, Any]]:
        """Progress entries that changed since they were last sent. A job's last figures go with (or before) the
        report of its result: the client worker records progress before results."""
        with self.progress_lock:
            changed = {k: v for k, v in self.progress.items() if self.progress_sent.get(k) != v}
        return [{'id': k, 'done': v[0], 'total': v[1]} for k, v in sorted(changed.items())][:1024]

    def progress_sent_in(self, entries: List[Dict[str, Any]]) -> None:
        """The client worker has these figures; ended jobs whose last figures it has are forgotten."""
        with self.progress_lock:
            self.progress_sent.update({p['id']: (p['done'], p['total']) for p in entries})
            for job_id in list(self.progress):
                if job_id not in self.running and self.progress_sent.get(job_id) == self.progress[job_id]:
                    del self.progress[job_id]
                    del self.progress_sent[job_id]

    def collect(self, sync: bool = True) -> List[str]:
        """Record every finished job's result, in one commit, on disk before they are reported - `sync` False: the
        caller syncs the record before it reports. The ids of the jobs whose results were recorded."""
        results: List[actions.Result] = []
        while True:
            try:
                results.append(self.finished.get_nowait())
            except queue.Empty:
                break
        if not results:
            return []
        with self.record.transaction():
            for result in results:
                self.record.finish(result['id'], messages.bound_result(dict(result)), secrets=result['id'] in self.secret_jobs,
                                   owned=self.intents.ended(result['id']))
                self.secret_jobs.discard(result['id'])
        if sync:
            self.record.sync()
        self.record.checkpoint_if_dropped()  # (its checkpoint syncs the WAL first)
        now = time.monotonic()
        for result in results:
            action, began = self.running.pop(result['id'], ('', now))
            message = result.get('message') or ''
            LOG.info('job %s %s %s in %.1fs%s', result['id'], action, result['status'], now - began, ': ' + message if message else '')
        self.outbox_waiting = True
        return [result['id'] for result in results]

    def resume(self) -> None:
        """After a restart: jobs recorded as running are reconciled against what exists."""
        for job in self.record.running():
            self.acknowledge(job['id'])
            self.start(job, reconcile=True)

    # -- reporting --------------------------------------------------------

    def report(self) -> None:
        """Send acks, results and a heartbeat in one request. On no answer, keep everything for the next try.

        The results are as many of the outbox as fit one frame (the rest go in the next report, at once);
        a result too big for any frame is sent as a failure that says so, so the outbox never sticks.
        """
        acks = sorted(self.acks)[:1024]
        progress = self.progress_due()
        message: Dict[str, Any] = {'type': 'report', 'host': self.name, 'acks': acks, 'results': [],
                                   'running': sorted(self.running)[:1024], 'pid': os.getpid()}
        if progress:
            message['progress'] = progress
        current = self.watcher.current() if self.watcher is not None else None
        if current is not None and current.digest == self.pushed_digest:
            message['state_digest'] = current.digest  # the client worker's copy is still true
            message['state_age_s'] = round(time.monotonic() - current.at, 3)
        message['results'] = self.results_that_fit(messages.MAX_FRAME_BYTES - messages.encoded_size(message) - 256)
        try:
            try:
                reply = self.requester.request(message, REPORT_TIMEOUT)
            except MessageError as e:
                LOG.error('a report of %d result(s) cannot be sent (%s): sending them as failures', len(message['results']), e)
                message['results'] = [unsendable(r, e) for r in message['results']]
                reply = self.requester.request(message, REPORT_TIMEOUT)
        except DispatchError as e:
            LOG.warning('report not delivered, kept for the next try: %s', e)
            self.backoff_until = time.monotonic() + 1.0
            return
        except MessageError as e:  # never seen: the worker goes on with its heartbeats all the same
            LOG.error('cannot send a report: %s', e)
            self.backoff_until = time.monotonic() + 5.0
            return
        if not reply.get('ok'):
            LOG.error('the client worker refused our report: %s', reply.get('error'))
            self.backoff_until = time.monotonic() + 5.0
            return
        self.acks.difference_update(acks)
        self.progress_sent_in(progress)
        answered = (reply.get('taken') or []) + (reply.get('refused') or [])
        self.record.mark_reported(answered)
        # Left in the outbox: what this report had no room for, and what the client worker did not answer for. (No
        # result is recorded meanwhile: collect() runs in this thread.)
        self.outbox_waiting = self.outbox_more or not set(r['id'] for r in message['results']) <= set(answered)
        self.last_report = time.monotonic()
        if reply.get('state_wanted'):
            self.pushed_digest = None  # (a restarted client worker holds none): pushed in the next turn

    # -- the host's state -------------------------------------------------

    def push_due(self) -> bool:
        current = self.watcher.current() if self.watcher is not None else None
        if current is None or time.monotonic() < self.backoff_until:
            return False
        since = time.monotonic() - self.last_push
        return current.digest not in (self.pushed_digest, self.unsent_digest) or since >= self.config.host_worker['state_interval']

    def push_state(self) -> None:
        """Send the host's last snapshot to the client worker. One that cannot be sent is logged and sent again
        only once it changed or its interval passed: meanwhile the library asks this host's libvirtd itself."""
        current = self.watcher.current() if self.watcher is not None else None
        if current is None:
            return
        self.last_push = time.monotonic()
        try:
            reply = self.requester.request({'type': 'state', 'host': self.name, 'digest': current.digest, 'state': current.state,
                                            'age_s': round(time.monotonic() - current.at, 3)}, REPORT_TIMEOUT)
        except DispatchError as e:
            LOG.warning('state not delivered, sent again later: %s', e)
            self.backoff_until = time.monotonic() + 1.0
            return
        except MessageError as e:  # over a frame (thousands of domains): the library surveys this host instead
            LOG.error('the state of %s cannot be sent: %s', self.name, e)
            self.unsent_digest = current.digest
            return
        if not reply.get('ok'):
            LOG.error('the client worker refused our state: %s', reply.get('error'))
            self.unsent_digest = current.digest
            return
        self.pushed_digest = current.digest

    def results_that_fit(self, budget: int) -> List[Dict[str, Any]]:
        """Results of the outbox, oldest first, each bounded (messages.bound_result), together within `budget` bytes."""
        results: List[Dict[str, Any]] = []
        used = 0
        waiting = self.record.outbox(REPORT_BATCH)
        self.outbox_more = len(waiting) == REPORT_BATCH  # (and below: one that did not fit)
        for result in waiting:
            size = messages.encoded_size(result) + 1
            # Bounded when it was recorded (collect); a small result is within every bound, one recorded by an older
            # version may not be.
            if size > messages.MAX_RESULT_MESSAGE or len(result.get('data') or {}) > 1024:
                result = messages.bound_result(result)
                size = messages.encoded_size(result) + 1
            if used + size > budget:
                if not results:
                    results.append(unsendable(result, 'it is %d bytes' % size))
                self.outbox_more = True
                break
            results.append(result)
            used += size
        return results

    def report_due(self) -> bool:
        now = time.monotonic()
        if now < self.backoff_until:
            return False
        return bool(self.acks) and not self.acks_wait(now) or now - self.last_report >= self.config.host_worker['heartbeat_interval'] or \
            self.outbox_waiting or now - self.last_report >= PROGRESS_INTERVAL and bool(self.progress_due())

    def run(self) -> None:
        LOG.info('host worker %s pid %d, subscribed at %s', self.name, os.getpid(), ', '.join(self.config.endpoints('pub')))
        self.resume()
        if self.watcher is not None:
            self.watcher.take()
            self.watcher.start()
        while not self.stopping:
            # (woken sooner when acknowledgements wait for results: they are sent once their wait ends)
            wait = self.acks_wait(time.monotonic()) or 0.05
            events = dict(self.poller.poll(math.ceil(1000 * min(0.05, wait))))
            if self.wake_read in events:
                try:
                    os.read(self.wake_read, 4096)
                except BlockingIOError:
                    pass
            if self.sub in events:
                while self.sub.poll(0):
                    self.receive(self.sub.recv_multipart())
                    if len(self.acks) >= REPORT_BATCH:
                        break
            # One fsync for the turn: the results it recorded and the jobs it took, before any of those jobs starts
            # and before the results (and the jobs' acknowledgements) are reported.
            collected = self.collect(sync=False)
            taken = self.fetch(start=False) if self.to_fetch and time.monotonic() >= self.backoff_until else []
            if collected or taken:
                self.record.sync()
            for job in taken:
                self.start(job)
            if self.watcher is not None and self.changing.intersection(collected):
                # The domains the ended jobs made or removed reach the client worker before their results do: once
                # a clone's result releases its slot, its name and its load are in the state placement reads.
                self.watcher.take()
            self.changing.difference_update(collected)
            if self.spare_clones is not None:
                self.spare_clones.expire()
            if self.push_due():
                self.push_state()
            if self.report_due():
                self.report()
        self.record.prune()


def main(argv: Optional[Sequence[str]] = None) -> int:
    return service.serve('python3 -m maglica.host.worker', 'Maglica host worker.',
                         lambda config, args: HostWorker(config, args.name), argv,
                         [(('--name',), {'required': True, 'help': 'this host name, as in the configuration'})])


if __name__ == '__main__':
    raise SystemExit(main())
