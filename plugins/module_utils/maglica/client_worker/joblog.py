# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The client worker's durable job log: SQLite in WAL mode (or PostgreSQL: joblog_postgres.py, the same statements).

A job is written here before its submitter is told its id. States move
queued -> dispatched -> running -> succeeded | failed | expired.

Writes made inside transaction() share one commit: the client worker answers every
request waiting on its socket after a single commit of them all. It opens the log with
synced_by_caller: the fsync of the WAL is its WalSync's, before any reply goes out.
"""

from __future__ import annotations

import json
import time
from typing import Any, Dict, Iterable, List, Optional, Sequence, Set, Tuple, cast

from ..daemon.store import Store, WalSync, drop_secrets_sql
from ..protocol.messages import SECRET_ARGS

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    host TEXT NOT NULL,
    action TEXT NOT NULL,
    args TEXT NOT NULL,
    state TEXT NOT NULL,
    message TEXT NOT NULL DEFAULT '',
    data TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    expires REAL NOT NULL,
    published REAL,
    acked REAL,
    finished REAL,
    late_result TEXT,
    progress TEXT,
    secrets INTEGER NOT NULL DEFAULT 1,
    claims INTEGER NOT NULL DEFAULT 1
);
CREATE INDEX IF NOT EXISTS jobs_open ON jobs (state) WHERE state IN ('queued', 'dispatched', 'running');
CREATE INDEX IF NOT EXISTS jobs_created ON jobs (created);
-- What open jobs hold, cluster-wide: kind 'hostname' (key: the VM name a clone makes, so two clones of one
-- name never run) and, for placement, kind 'slot' (key: the job id, host: where it counts). A claim is taken
-- in the same transaction that logs its job and is released when the job ends.
CREATE TABLE IF NOT EXISTS claims (
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    host TEXT NOT NULL,
    job_id TEXT NOT NULL,
    created REAL NOT NULL,
    PRIMARY KEY (kind, key)
);
CREATE INDEX IF NOT EXISTS claims_job ON claims (job_id);
CREATE INDEX IF NOT EXISTS claims_host ON claims (host, kind);
-- Hosts in maintenance (maglica_host state: maintenance): out of placement, and the client worker refuses a job that
-- would put a VM on them (worker.ADMISSIONS), in the transaction that would reserve its slot. Lasts until cleared.
CREATE TABLE IF NOT EXISTS maintenance (
    host TEXT PRIMARY KEY,
    since REAL NOT NULL
);
"""
FINAL_STATES_SQL = "('succeeded', 'failed', 'expired')"
COLUMNS = ('id', 'host', 'action', 'args', 'state', 'message', 'data', 'attempts',
           'created', 'updated', 'expires', 'published', 'acked', 'finished', 'late_result', 'progress')
# Columns added after the first release, with their type: an older database gets them when opened.
# `secrets` (the job's args hold a messages.SECRET_ARGS entry) and `claims` (it may hold claims) say what a job's
# end must clean up; a row logged before they existed gets 1 for both, so it is cleaned as every job once was.
ADDED_COLUMNS = (('late_result', 'TEXT'), ('progress', 'TEXT'), ('secrets', 'INTEGER NOT NULL DEFAULT 1'),
                 ('claims', 'INTEGER NOT NULL DEFAULT 1'))
# Between a domain name and a host in the key of a claim on that name for one host: `@` is in no name (NAME_RE).
NAME_HOST_SEPARATOR = '@'


def name_key(name: str, host: Optional[str] = None) -> str:
    """The key of a 'hostname' claim: the name on every host, or name@host on `host` only."""
    return name if host is None else name + NAME_HOST_SEPARATOR + host


DROP_SECRETS = drop_secrets_sql('jobs', 'args')
# A job as the log holds it: a dict of COLUMNS, its JSON columns (args, data, late_result, progress) decoded - what
# status, list and submit replies carry (messages.JOB_ROW).
JobRow = Dict[str, Any]


class JobLog(Store):
    # The column that orders rows logged in the same second: SQLite's rowid (PostgreSQL's log has a sequence).
    ROWID = 'rowid'

    def __init__(self, path: str, synced_by_caller: bool = False) -> None:
        super(JobLog, self).__init__(path, SCHEMA, synced_by_caller)
        self.path = path
        # The lease (its methods below): an SQLite log's worker holds it from the start and for ever - no epoch, no expiry.
        self.epoch: Optional[int] = None
        self.held_until = float('inf')
        present = set(row[1] for row in self.db.execute('PRAGMA table_info(jobs)'))
        for column, kind in ADDED_COLUMNS:
            if column not in present:
                self.db.execute('ALTER TABLE jobs ADD COLUMN %s %s' % (column, kind))

    def make_syncer(self, wake_fd: int) -> WalSync:
        """The thread that makes the commits of a log opened with synced_by_caller durable, waking `wake_fd` each time."""
        return WalSync(self.path, wake_fd)

    # -- the lease: which client worker writes the log (PostgresJobLog's, where several share it). An SQLite log is
    # its one worker's: these are what the worker calls on either store.

    @property
    def active(self) -> bool:
        """Whether this worker holds the lease (may write the log)."""
        return True

    def take_lease(self) -> bool:
        """Take the lease when it is free; whether this worker holds it now."""
        return True

    def release_lease(self) -> None:
        """Give the lease up (a clean stop), so that a standby takes over at once."""

    def lease_holder(self) -> Optional[str]:
        """The name of the client worker that holds the lease, None when none does (or on SQLite: its one worker needs no name)."""
        return None

    def add(self, job: Dict[str, Any], default_ttl: float, now: Optional[float] = None, claims: bool = True,
            published: bool = False) -> Tuple[JobRow, bool]:
        """Record a validated job as queued - or, `published`, as dispatched once (its notice goes out when the
        caller's transaction is committed). `claims`: the job may hold claims (its end releases them). Returns
        (job row, created) - a resubmitted id is not added twice, and its row is the one logged the first time."""
        now = now or time.time()
        ttl = job.get('ttl') or default_ttl
        args = json.dumps(job['args'], sort_keys=True)
        secrets = any(key in job['args'] for key in SECRET_ARGS)
        state, attempts = ('dispatched', 1) if published else ('queued', 0)
        with self.writing():
            cursor = self.db.execute(
                'INSERT INTO jobs (id, host, action, args, state, attempts, created, updated, expires, published, '
                'secrets, claims) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING',
                (job['id'], job['host'], job['action'], args, state, attempts, now, now, now + ttl,
                 now if published else None, int(secrets), int(claims)))
        if cursor.rowcount != 1:
            return cast(JobRow, self.get(job['id'])), False  # there: logged by the first submission of the id
        # The row as inserted, without reading it back: what _job would make of it.
        row = dict(zip(COLUMNS, (job['id'], job['host'], job['action'], json.loads(args), state, '', {}, attempts, now, now,
                                 now + ttl, now if published else None, None, None, None, None)))
        return row, True

    def scrub(self, job_ids: Iterable[str]) -> None:
        """Replace the secret arguments of these jobs by '(secret)' (those that still hold any)."""
        self.drop_secrets(DROP_SECRETS, job_ids)

    def exists(self, job_id: str) -> bool:
        return self.db.execute('SELECT 1 FROM jobs WHERE id = ?', (job_id,)).fetchone() is not None

    def holder(self, kind: str, key: str) -> Optional[str]:
        """The id of the open job that holds the claim (kind, key), or None."""
        held = self.db.execute(
            'SELECT c.job_id FROM claims c JOIN jobs j ON j.id = c.job_id WHERE c.kind = ? AND c.key = ? '
            'AND j.state NOT IN %s' % FINAL_STATES_SQL, (kind, key)).fetchone()
        return held[0] if held is not None else None

    def name_holder(self, name: str, host: Optional[str] = None) -> Optional[str]:
        """The id of an open job that holds the domain name `name`: its claim for every host ('hostname', name), or
        one for a single host ('hostname', name@host) - of `host`, or of any host when `host` is None."""
        keys = ' OR substr(c.key, 1, CAST(? AS INTEGER)) = ?' if host is None else ' OR c.key = ?'
        params: List[Any] = [name] + ([len(name) + 1, name + NAME_HOST_SEPARATOR] if host is None
                                      else [name_key(name, host)])
        held = self.db.execute(
            "SELECT c.job_id FROM claims c JOIN jobs j ON j.id = c.job_id WHERE c.kind = 'hostname' AND (c.key = ?%s) "
            'AND j.state NOT IN %s ORDER BY c.created LIMIT 1' % (keys, FINAL_STATES_SQL), params).fetchone()
        return held[0] if held is not None else None

    def claim(self, kind: str, key: str, host: str, job_id: str, now: Optional[float] = None) -> str:
        """Take the claim (kind, key) for job_id, in the caller's transaction. Returns the id of the job that
        holds it: job_id, or an open job that took it first. A claim left by an ended job is taken over."""
        now = now or time.time()
        with self.writing():
            held = self.holder(kind, key)
            if held is not None:
                return held
            self.db.execute('INSERT INTO claims (kind, key, host, job_id, created) VALUES (?, ?, ?, ?, ?) ON CONFLICT (kind, key) '
                            'DO UPDATE SET host = excluded.host, job_id = excluded.job_id, created = excluded.created',
                            (kind, key, host, job_id, now))
        return job_id

    def set_maintenance(self, host: str, on: bool, now: Optional[float] = None) -> bool:
        """Put `host` in maintenance (on) or bring it back (off). Returns whether that changed anything."""
        now = now or time.time()
        with self.transaction():
            if on:
                cursor = self.db.execute('INSERT INTO maintenance (host, since) VALUES (?, ?) ON CONFLICT DO NOTHING', (host, now))
            else:
                cursor = self.db.execute('DELETE FROM maintenance WHERE host = ?', (host,))
        return cursor.rowcount == 1

    def maintenance(self) -> Dict[str, float]:
        """{host: since} of the hosts in maintenance."""
        return {r[0]: r[1] for r in self.db.execute('SELECT host, since FROM maintenance ORDER BY host')}

    def in_maintenance(self, host: str) -> bool:
        return self.db.execute('SELECT 1 FROM maintenance WHERE host = ?', (host,)).fetchone() is not None

    def open_slots(self, host: Optional[str] = None) -> List[Dict[str, Any]]:
        """The slot claims of open jobs (of one host), oldest first, with their jobs' arguments:
        [{host, job_id, args}]."""
        query = ("SELECT c.host, c.job_id, j.args FROM claims c JOIN jobs j ON j.id = c.job_id WHERE c.kind = 'slot' "
                 'AND j.state NOT IN %s' % FINAL_STATES_SQL)
        params: List[Any] = []
        if host is not None:
            query += ' AND c.host = ?'
            params.append(host)
        return [{'host': r[0], 'job_id': r[1], 'args': json.loads(r[2])}
                for r in self.db.execute(query + ' ORDER BY c.created, c.key', params)]

    def moving_hosts(self) -> Set[str]:
        """The hosts of open jobs that move a domain from their host to another (vm.migrate): both ends."""
        hosts: Set[str] = set()
        for host, args in self.db.execute("SELECT host, args FROM jobs WHERE state IN ('queued', 'dispatched', 'running') "
                                          "AND action = 'vm.migrate'"):
            hosts.add(host)
            destination = json.loads(args).get('destination')
            if isinstance(destination, str):
                hosts.add(destination)
        return hosts

    def claims(self, kind: Optional[str] = None, host: Optional[str] = None) -> List[Tuple[str, str, str, str]]:
        """[(kind, key, host, job_id)] of the claims held, optionally of one kind and one host."""
        query = 'SELECT kind, key, host, job_id FROM claims WHERE 1 = 1'
        params: List[str] = []
        if kind is not None:
            query += ' AND kind = ?'
            params.append(kind)
        if host is not None:
            query += ' AND host = ?'
            params.append(host)
        return [(r[0], r[1], r[2], r[3]) for r in self.db.execute(query + ' ORDER BY created, key', params)]

    def release_ended(self) -> None:
        """Drop the claims of jobs that have ended (or are gone)."""
        with self.transaction():
            self.db.execute('DELETE FROM claims WHERE job_id NOT IN (SELECT id FROM jobs WHERE state NOT IN %s)' % FINAL_STATES_SQL)

    def to_run(self, job_id: str, host: str) -> Optional[Dict[str, Any]]:
        """The job `job_id` as a host worker fetches it ({id, host, action, args, ttl}) while it is `host`'s, still
        to run and not acknowledged; else None. Only the columns that takes."""
        row = self.db.execute(
            "SELECT action, args, expires - created FROM jobs WHERE id = ? AND host = ? AND acked IS NULL "
            "AND state NOT IN %s" % FINAL_STATES_SQL, (job_id, host)).fetchone()
        if row is None:
            return None
        return {'id': job_id, 'host': host, 'action': row[0], 'args': json.loads(row[1]), 'ttl': max(1, int(row[2]))}

    def get(self, job_id: str) -> Optional[JobRow]:
        return _row(self.db.execute('SELECT %s FROM jobs WHERE id = ?' % ', '.join(COLUMNS), (job_id,)).fetchone())

    def recent(self, limit: int = 20, host: Optional[str] = None, after: Optional[str] = None) -> List[JobRow]:
        """The `limit` newest jobs (of `host`), newest first; with `after` (a job id), those listed after it."""
        query = 'SELECT %s FROM jobs' % ', '.join(COLUMNS)
        conditions: List[str] = []
        params: List[Any] = []
        if host:
            conditions.append('host = ?')
            params.append(host)
        if after:
            position = self.db.execute('SELECT created, %s FROM jobs WHERE id = ?' % self.ROWID, (after,)).fetchone()
            if position is None:
                return []
            conditions.append('(created < ? OR created = ? AND %s < ?)' % self.ROWID)
            params.extend([position[0], position[0], position[1]])
        if conditions:
            query += ' WHERE ' + ' AND '.join(conditions)
        query += ' ORDER BY created DESC, %s DESC LIMIT ?' % self.ROWID
        params.append(limit)
        return [_job(r) for r in self.db.execute(query, params)]

    def due_for_publish(self, interval: float, now: Optional[float] = None) -> List[JobRow]:
        """Jobs no worker has acknowledged yet, not published within `interval` seconds."""
        now = now or time.time()
        rows = self.db.execute(
            "SELECT %s FROM jobs WHERE state IN ('queued', 'dispatched') AND expires > ? "
            'AND (published IS NULL OR published <= ?) ORDER BY created' % ', '.join(COLUMNS),
            (now, now - interval))
        return [_job(r) for r in rows]

    def mark_published(self, job_ids: Iterable[str], now: Optional[float] = None) -> None:
        now = now or time.time()
        with self.writing():
            self.db.executemany(
                "UPDATE jobs SET state = CASE state WHEN 'queued' THEN 'dispatched' ELSE state END, "
                'attempts = attempts + 1, published = ?, updated = ? WHERE id = ?',
                [(now, now, i) for i in job_ids])

    def acknowledge(self, host: str, job_ids: Sequence[str], now: Optional[float] = None) -> None:
        """The host's worker has the jobs: they are running. Only jobs of that host count, and only
        while they are waiting: an expired job stays expired (its submitter was told so)."""
        now = now or time.time()
        with self.writing():
            # The host worker has recorded the job: its secrets are not needed here any more. A job whose args
            # hold none has nothing to drop; one acknowledged before, or ended, had them dropped then.
            for job_id in job_ids:
                acked = self.db.execute(
                    "UPDATE jobs SET state = 'running', acked = ?, updated = ? "
                    "WHERE id = ? AND host = ? AND state IN ('queued', 'dispatched') RETURNING secrets",
                    (now, now, job_id, host)).fetchone()
                if acked is not None and acked[0]:
                    self.scrub([job_id])

    def set_progress(self, host: str, entries: List[Dict[str, Any]], now: Optional[float] = None) -> None:
        """Record how far running jobs of `host` are ({id, done, total}); other hosts' jobs and ended ones are left alone."""
        now = now or time.time()
        with self.writing():
            self.db.executemany(
                "UPDATE jobs SET progress = ?, updated = ? WHERE id = ? AND host = ? AND state NOT IN %s" % FINAL_STATES_SQL,
                [(json.dumps({'done': e['done'], 'total': e['total']}, sort_keys=True), now, e['id'], host) for e in entries])

    def finish(self, host: str, result: Dict[str, Any], now: Optional[float] = None) -> bool:
        """Store a host's result. Returns False when the job is not that host's (or unknown).

        A final state is never overwritten: the result of a job that ended already (sent again because
        the first reply was lost) is taken and changes nothing, and the result of an expired job is
        kept as its `late_result` - the job stays expired.
        """
        now = now or time.time()
        with self.writing():
            # The usual case in one statement: an open job of that host ends.
            ended = self.db.execute(
                'UPDATE jobs SET state = ?, message = ?, data = ?, updated = ?, finished = ?, acked = COALESCE(acked, ?) '
                'WHERE id = ? AND host = ? AND state NOT IN %s RETURNING secrets, claims' % FINAL_STATES_SQL,
                (result['status'], result.get('message', ''), json.dumps(result.get('data') or {}, sort_keys=True),
                 now, now, now, result['id'], host)).fetchone()
            if ended is None:
                row = self.db.execute('SELECT state, secrets, claims FROM jobs WHERE id = ? AND host = ?',
                                      (result['id'], host)).fetchone()
                if row is None:
                    return False
                if row[0] == 'expired':
                    late = {'status': result['status'], 'message': result.get('message', ''),
                            'data': result.get('data') or {}, 'received': now}
                    self.db.execute('UPDATE jobs SET late_result = ?, updated = ? WHERE id = ?',
                                    (json.dumps(late, sort_keys=True), now, result['id']))
                ended = row[1:]
            # Secrets and claims go with the job's end: only a job that had them pays for it.
            if ended[0]:
                self.scrub([result['id']])
            if ended[1]:
                self.db.execute('DELETE FROM claims WHERE job_id = ?', (result['id'],))
        return True

    def expire(self, now: Optional[float] = None) -> int:
        """Jobs whose host worker never acknowledged them within their TTL end expired."""
        now = now or time.time()
        with self.transaction():
            ids = [r[0] for r in self.db.execute("SELECT id FROM jobs WHERE state IN ('queued', 'dispatched') AND expires <= ?", (now,))]
            cursor = self.db.execute(
                "UPDATE jobs SET state = 'expired', updated = ?, finished = ?, message = "
                "'no host worker for ' || host || ' acknowledged the job within its TTL (' || "
                "CAST(attempts AS TEXT) || ' publications)' "
                "WHERE state IN ('queued', 'dispatched') AND expires <= ?", (now, now, now))
            if cursor.rowcount:
                self.release_ended()
            self.scrub(ids)  # never fetched now
        return cursor.rowcount

    def prune(self, older_than: float, now: Optional[float] = None) -> int:
        """Delete the jobs that ended more than `older_than` seconds ago (the retention). Returns how many."""
        now = now or time.time()
        with self.transaction():
            cursor = self.db.execute("DELETE FROM jobs WHERE state IN ('succeeded', 'failed', 'expired') AND finished < ?",
                                     (now - older_than,))
        return cursor.rowcount


def _row(row: Optional[Sequence[Any]]) -> Optional[JobRow]:
    return None if row is None else _job(row)


def _job(row: Sequence[Any]) -> JobRow:
    """A job of the log from its row of COLUMNS."""
    job = dict(zip(COLUMNS, row))
    job['args'] = json.loads(job['args'])
    job['data'] = json.loads(job['data']) if job['data'] else {}
    job['late_result'] = json.loads(job['late_result']) if job['late_result'] else None
    job['progress'] = json.loads(job['progress']) if job['progress'] else None
    return job
