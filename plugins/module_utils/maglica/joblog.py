# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The client worker's durable job log: SQLite in WAL mode.

A job is written here before its submitter is told its id. States move
queued -> dispatched -> running -> succeeded | failed | expired.

Writes made inside transaction() share one commit (one fsync): the client worker
answers every request waiting on its socket after a single commit of them all.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import time
from typing import List, Optional, Tuple

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
    finished REAL
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
"""
FINAL_STATES_SQL = "('succeeded', 'failed', 'expired')"
COLUMNS = ('id', 'host', 'action', 'args', 'state', 'message', 'data', 'attempts',
           'created', 'updated', 'expires', 'published', 'acked', 'finished')


def open_database(path):
    """Open (creating) an SQLite database in WAL mode with durable commits."""
    # exist_ok: several workers sharing a state directory start at once.
    os.makedirs(os.path.dirname(os.path.abspath(path)), 0o750, exist_ok=True)
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    db.execute('PRAGMA journal_mode=WAL')
    # FULL: a commit survives a power cut, not only a process kill.
    db.execute('PRAGMA synchronous=FULL')
    db.execute('PRAGMA busy_timeout=5000')
    return db


def _row(row):
    if row is None:
        return None
    job = dict(zip(COLUMNS, row))
    job['args'] = json.loads(job['args'])
    job['data'] = json.loads(job['data']) if job['data'] else {}
    return job


class Store(object):
    """An SQLite database from open_database, with `schema` applied, whose writes can share one commit."""

    def __init__(self, path, schema):
        self.db = open_database(path)
        self.db.executescript(schema)
        self.depth = 0

    def close(self):
        self.db.close()

    @contextlib.contextmanager
    def transaction(self):
        """Everything inside is committed at once when the outermost block ends. A nested block is a
        savepoint: when it raises, only its own writes are undone and the error goes on."""
        savepoint = 's%d' % self.depth
        self.db.execute('BEGIN IMMEDIATE' if self.depth == 0 else 'SAVEPOINT %s' % savepoint)
        self.depth += 1
        try:
            yield
        except BaseException:
            self.depth -= 1
            if self.depth == 0:
                if self.db.in_transaction:
                    self.db.execute('ROLLBACK')
            else:
                self.db.execute('ROLLBACK TO %s' % savepoint)
                self.db.execute('RELEASE %s' % savepoint)
            raise
        self.depth -= 1
        if self.depth:
            self.db.execute('RELEASE %s' % savepoint)
            return
        try:
            self.db.execute('COMMIT')
        except BaseException:
            if self.db.in_transaction:
                self.db.execute('ROLLBACK')
            raise


class JobLog(Store):
    def __init__(self, path):
        super(JobLog, self).__init__(path, SCHEMA)

    def add(self, job, default_ttl, now=None):
        """Record a validated job as queued. Returns (job row, created) - a resubmitted id is not added twice."""
        now = now or time.time()
        ttl = job.get('ttl') or default_ttl
        with self.transaction():
            cursor = self.db.execute(
                'INSERT OR IGNORE INTO jobs (id, host, action, args, state, created, updated, expires) '
                "VALUES (?, ?, ?, ?, 'queued', ?, ?, ?)",
                (job['id'], job['host'], job['action'], json.dumps(job['args'], sort_keys=True), now, now, now + ttl))
        return self.get(job['id']), cursor.rowcount == 1

    def claim(self, kind: str, key: str, host: str, job_id: str, now: Optional[float] = None) -> str:
        """Take the claim (kind, key) for job_id, in the caller's transaction. Returns the id of the job that
        holds it: job_id, or an open job that took it first. A claim left by an ended job is taken over."""
        now = now or time.time()
        with self.transaction():
            held = self.db.execute(
                'SELECT c.job_id FROM claims c JOIN jobs j ON j.id = c.job_id WHERE c.kind = ? AND c.key = ? '
                'AND j.state NOT IN %s' % FINAL_STATES_SQL, (kind, key)).fetchone()
            if held is not None:
                return held[0]
            self.db.execute('INSERT OR REPLACE INTO claims (kind, key, host, job_id, created) VALUES (?, ?, ?, ?, ?)',
                            (kind, key, host, job_id, now))
        return job_id

    def claims(self, kind: Optional[str] = None, host: Optional[str] = None) -> List[Tuple[str, str, str, str]]:
        """[(kind, key, host, job_id)] of the claims held, optionally of one kind and one host."""
        query, params = 'SELECT kind, key, host, job_id FROM claims WHERE 1 = 1', []
        if kind is not None:
            query += ' AND kind = ?'
            params.append(kind)
        if host is not None:
            query += ' AND host = ?'
            params.append(host)
        return [tuple(r) for r in self.db.execute(query + ' ORDER BY created, key', params)]

    def release_ended(self) -> None:
        """Drop the claims of jobs that have ended (or are gone)."""
        with self.transaction():
            self.db.execute('DELETE FROM claims WHERE job_id NOT IN (SELECT id FROM jobs WHERE state NOT IN %s)' % FINAL_STATES_SQL)

    def get(self, job_id):
        return _row(self.db.execute('SELECT %s FROM jobs WHERE id = ?' % ', '.join(COLUMNS), (job_id,)).fetchone())

    def recent(self, limit=20, host=None):
        query = 'SELECT %s FROM jobs' % ', '.join(COLUMNS)
        params = []
        if host:
            query += ' WHERE host = ?'
            params.append(host)
        query += ' ORDER BY created DESC, rowid DESC LIMIT ?'
        params.append(limit)
        return [_row(r) for r in self.db.execute(query, params)]

    def due_for_publish(self, interval, now=None):
        """Jobs no worker has acknowledged yet, not published within `interval` seconds."""
        now = now or time.time()
        rows = self.db.execute(
            "SELECT %s FROM jobs WHERE state IN ('queued', 'dispatched') AND expires > ? "
            'AND (published IS NULL OR published <= ?) ORDER BY created' % ', '.join(COLUMNS),
            (now, now - interval))
        return [_row(r) for r in rows]

    def mark_published(self, job_ids, now=None):
        now = now or time.time()
        with self.transaction():
            self.db.executemany(
                "UPDATE jobs SET state = CASE state WHEN 'queued' THEN 'dispatched' ELSE state END, "
                'attempts = attempts + 1, published = ?, updated = ? WHERE id = ?',
                [(now, now, i) for i in job_ids])

    def acknowledge(self, host, job_ids, now=None):
        """The host's worker has the jobs: they are running. Only jobs of that host count."""
        now = now or time.time()
        with self.transaction():
            self.db.executemany(
                "UPDATE jobs SET state = 'running', acked = ?, updated = ? "
                "WHERE id = ? AND host = ? AND state IN ('queued', 'dispatched', 'expired')",
                [(now, now, i, host) for i in job_ids])

    def finish(self, host, result, now=None):
        """Store a host's result. Returns False when the job is not that host's (or unknown)."""
        now = now or time.time()
        with self.transaction():
            cursor = self.db.execute(
                'UPDATE jobs SET state = ?, message = ?, data = ?, updated = ?, finished = ?, '
                'acked = COALESCE(acked, ?) WHERE id = ? AND host = ?',
                (result['status'], result.get('message', ''), json.dumps(result.get('data') or {}, sort_keys=True),
                 now, now, now, result['id'], host))
            self.db.execute('DELETE FROM claims WHERE job_id = ?', (result['id'],))
        return cursor.rowcount == 1

    def expire(self, now=None):
        """Jobs whose host worker never acknowledged them within their TTL end expired."""
        now = now or time.time()
        with self.transaction():
            cursor = self.db.execute(
                "UPDATE jobs SET state = 'expired', updated = ?, finished = ?, message = "
                "'no host worker for ' || host || ' acknowledged the job within its TTL (' || "
                "CAST(attempts AS TEXT) || ' publications)' "
                "WHERE state IN ('queued', 'dispatched') AND expires <= ?", (now, now, now))
            if cursor.rowcount:
                self.release_ended()
        return cursor.rowcount
