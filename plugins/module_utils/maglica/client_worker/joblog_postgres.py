# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The job log in PostgreSQL (joblog.backend: postgresql), and the lease that makes one client worker active.
Runs in the client worker.

The statements are JobLog's: the same transactions, claims and unique keys as on SQLite. What differs:
- Commits do not wait for the disk (the session's synchronous_commit is off): as with SQLite's WalSync, a thread of
  the worker (PostgresSync) makes them durable while the loop takes the next requests, and every reply and notice
  waits for it. Its own connection commits one row with synchronous_commit on: PostgreSQL's WAL is one sequence,
  so once that commit is flushed (and, with synchronous standbys, replicated) every commit before it is too.
- One client worker is active, the holder of the row `lease` (holder, epoch, expires, on the database's clock).
  Every transaction of the active one starts by renewing it, in an UPDATE that holds the lease row until the
  commit. A standby takes the lease over only once it has expired, with an UPDATE that waits for that row: a
  transaction of the old holder that renewed in time commits before the takeover, and one that did not renew
  in time fails (LeaseLost) and writes nothing. So the writes of two client workers never interleave, and one that
  was stopped (SIGSTOP) and continued finds, at its first transaction, that it is standby.
- Sessions end transactions left idle longer than the lease (idle_in_transaction_session_timeout), so a stopped
  holder in the middle of one releases the lease row and its claims.
- A dropped secret's old row version stays in PostgreSQL's files until VACUUM reuses its space (SQLite's log
  overwrites it at once: secure_delete): see the README's PostgreSQL set-up.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Iterable, Optional, Tuple

from ..daemon.postgres import PostgresConnection
from ..daemon.store import WalSync
from ..errors import MaglicaError
from ..protocol.messages import SECRET_ARGS
from .joblog import SCHEMA, JobLog

LOG = logging.getLogger('maglica.client_worker.joblog_postgres')
# The database's clock, in seconds since the epoch: leases are decided by one clock, whatever the workers' are.
NOW = 'EXTRACT(EPOCH FROM clock_timestamp())'
LEASE = 'client_worker'
# Timestamps are double precision (SQLite's REAL is 8 bytes; PostgreSQL's is 4), and rows get a sequence number
# for the order of the listing (SQLite's rowid).
POSTGRES_SCHEMA = SCHEMA.replace(' REAL', ' DOUBLE PRECISION').replace(
    'id TEXT PRIMARY KEY,', 'id TEXT PRIMARY KEY,\n    seq BIGSERIAL,', 1) + """
CREATE TABLE IF NOT EXISTS lease (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    epoch BIGINT NOT NULL,
    expires DOUBLE PRECISION NOT NULL
);
-- One row per client worker, written by its PostgresSync with a durable commit.
CREATE TABLE IF NOT EXISTS syncs (
    name TEXT PRIMARY KEY,
    count BIGINT NOT NULL
);
"""
# Two client workers starting at once create the schema one after the other (pg_advisory_xact_lock's key).
SCHEMA_LOCK = 0x6d61676c


class LeaseLost(MaglicaError):
    """This client worker does not hold the lease (any more): it must not write, and answers as a standby."""


class PostgresJobLog(JobLog):
    begin = 'BEGIN'
    ROWID = 'seq'
    cheap_savepoints = False  # each is a round trip to the server

    def __init__(self, dsn: str, holder: str, lease_s: float, synced_by_caller: bool = False) -> None:  # pylint: disable=super-init-not-called
        # Not JobLog's: that opens an SQLite file. Store's initialise() takes this connection instead.
        milliseconds = str(max(1000, int(lease_s * 1000)))
        self.dsn = dsn
        self.pg = PostgresConnection(dsn, 'maglica client worker %s' % holder,
                                     {'idle_in_transaction_session_timeout': milliseconds, 'lock_timeout': milliseconds,
                                      'synchronous_commit': 'off' if synced_by_caller else 'on'})
        self.initialise(self.pg)
        # Transactions begun: each one writes (it renews the lease).
        self.begun = 0
        self.renewal_text: Optional[Tuple[int, str]] = None
        self.name = holder
        self.lease_s = lease_s
        # The lease's epoch while this worker holds it, and until when (time.monotonic()) it surely does.
        self.epoch: Optional[int] = None
        self.held_until = 0.0
        self.db.execute('BEGIN')
        try:
            self.db.execute('SELECT pg_advisory_xact_lock(%d)' % SCHEMA_LOCK)
            self.db.executescript(POSTGRES_SCHEMA)
            self.db.execute('COMMIT')
        except BaseException:
            self.db.execute('ROLLBACK')
            raise

    def changes(self) -> int:
        return self.begun

    def commit(self) -> None:
        # PostgreSQL answers COMMIT of a transaction a failed statement spoilt with ROLLBACK, and no error.
        status = self.db.execute('COMMIT').statusmessage
        if status != 'COMMIT':
            raise RuntimeError('the job log rolled the transaction back (%s): a statement in it had failed' % status)

    def checkpoint(self) -> None:
        """Nothing to do: SQLite's copy of its WAL has no counterpart here (a dropped secret's old row version is
        VACUUM's to reuse: the module's docstring). So scrub() counts no `dropped`, and checkpoint_if_dropped() never calls this."""

    def scrub(self, job_ids: Iterable[str]) -> None:
        for job_id in job_ids:
            row = self.db.execute('SELECT args FROM jobs WHERE id = ?', (job_id,)).fetchone()
            if row is None:
                continue
            args = json.loads(row[0])
            if any(args.get(key) not in (None, '(secret)') for key in SECRET_ARGS):
                args.update((key, '(secret)') for key in SECRET_ARGS if key in args)
                self.db.execute('UPDATE jobs SET args = ? WHERE id = ?', (json.dumps(args, sort_keys=True), job_id))

    def make_syncer(self, wake_fd: int) -> WalSync:
        return PostgresSync(self, wake_fd)

    # -- the lease ------------------------------------------------------------

    @property
    def active(self) -> bool:
        return self.epoch is not None

    def take_lease(self) -> bool:
        """Take the lease when it is free (expired, never taken, or this worker's own from before a restart); whether
        this worker holds it now. Not yet (False) when the holder's transaction holds the lease row longer than
        lock_timeout; a lost connection raises (the worker stops, and its supervisor starts it again)."""
        asked = time.monotonic()
        try:
            row = self.db.execute(
                'INSERT INTO lease (name, holder, epoch, expires) VALUES (?, ?, 1, %s + ?) ON CONFLICT (name) DO UPDATE '
                'SET holder = excluded.holder, epoch = lease.epoch + 1, expires = excluded.expires '
                'WHERE lease.expires < %s OR lease.holder = excluded.holder RETURNING epoch' % (NOW, NOW),
                (LEASE, self.name, self.lease_s)).fetchone()
        except self.pg.errors as e:
            if self.pg.broken:
                raise
            LOG.info('client worker %s could not take the lease yet: %s', self.name, str(e).strip())
            return False
        if row is None:
            self.epoch = None
            return False
        self.epoch, self.held_until = int(row[0]), asked + self.lease_s
        return True

    def start(self) -> None:
        """BEGIN and renew the lease, in one round trip: its row stays locked until the transaction ends. LeaseLost
        (and no transaction) when this worker does not hold the lease, or it ran out: another may have taken it."""
        if self.epoch is None:
            raise LeaseLost('%s does not hold the lease' % self.name)
        asked = time.monotonic()
        self.begun += 1
        cursor = self.pg.execute_statements(self.renewal(self.epoch))
        cursor.nextset()
        row = cursor.fetchone()
        if row is None:
            self.db.execute('ROLLBACK')
            self.epoch = None
            raise LeaseLost('the lease of %s ran out' % self.name)
        self.held_until = asked + self.lease_s

    def renewal(self, epoch: int) -> str:
        """BEGIN and the renewal of lease `epoch`, as one text (no parameters in a query of two statements): the
        values are this worker's own, quoted by psycopg."""
        if self.renewal_text is None or self.renewal_text[0] != epoch:
            literal = self.pg.literal
            self.renewal_text = (epoch, 'BEGIN; UPDATE lease SET expires = %s + %s WHERE name = %s AND holder = %s AND epoch = %d '
                                        'AND expires >= %s RETURNING epoch'
                                 % (NOW, literal(self.lease_s), literal(LEASE), literal(self.name), epoch, NOW))
        return self.renewal_text[1]

    def release_lease(self) -> None:
        """Give the lease up (a clean stop): a standby takes over at once."""
        if self.epoch is not None and not self.db.in_transaction:
            self.db.execute('UPDATE lease SET expires = 0 WHERE name = ? AND holder = ? AND epoch = ?',
                            (LEASE, self.name, self.epoch))
            self.epoch = None

    def lease_holder(self) -> Optional[str]:
        row = self.db.execute('SELECT holder FROM lease WHERE name = ? AND expires >= %s' % NOW, (LEASE,)).fetchone()
        return str(row[0]) if row is not None else None


class PostgresSync(WalSync):
    """WalSync for a PostgreSQL job log: sync() commits one row over a connection of its own with synchronous_commit
    on, which returns once the WAL up to it - every commit of the worker before it - is durable."""

    def __init__(self, log: PostgresJobLog, wake_fd: int) -> None:
        self.connection = PostgresConnection(log.dsn, 'maglica client worker %s (sync)' % log.name)
        self.name = log.name
        super().__init__(log.dsn, wake_fd)

    def sync(self) -> None:
        try:
            self.connection.execute('INSERT INTO syncs (name, count) VALUES (?, 1) ON CONFLICT (name) '
                                    'DO UPDATE SET count = syncs.count + 1', (self.name,))
        except self.connection.errors as e:  # WalSync's contract: a failure is an OSError, kept, and nothing after it is durable
            raise OSError('the PostgreSQL job log did not confirm a durable commit: %s' % str(e).strip())

    def close(self) -> None:
        self.connection.close()
