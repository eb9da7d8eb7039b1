# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The SQLite store both worker daemons keep their state in: WAL mode, 0600, secrets dropped from what is kept.
Runs in the client worker and as root on a hypervisor (the host worker's record); the client worker's job log may
be in PostgreSQL instead (postgres.py, the same transactions)."""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
from typing import Any, Iterable, Iterator, List, Optional, Protocol

from .. import private
from ..protocol.messages import SECRET_ARGS

LOG = logging.getLogger('maglica.daemon.store')


def open_database(path: str, synced_by_caller: bool = False) -> sqlite3.Connection:
    """Open (creating) an SQLite database in WAL mode with durable commits, readable by its owner only.

    `synced_by_caller`: a commit does not wait for the disk (synchronous=NORMAL); the caller makes it durable with
    WalSync before it tells anyone of it - the fsync of the WAL that synchronous=FULL does inside COMMIT, moved off
    the caller's thread."""
    # The directory 0700 and the file 0600 before SQLite opens it: its -wal and -shm get the file's mode.
    private.make_dir(os.path.dirname(os.path.abspath(path)))
    private.make_file(path)
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    db.execute('PRAGMA journal_mode=WAL')
    # FULL: a commit survives a power cut, not only a process kill. NORMAL writes the WAL without an fsync at
    # commit (it still syncs the WAL's header and at checkpoints): that part is WalSync's, before anyone is told.
    db.execute('PRAGMA synchronous=NORMAL' if synced_by_caller else 'PRAGMA synchronous=FULL')
    db.execute('PRAGMA busy_timeout=5000')
    # A dropped secret is overwritten with zeros in the file, not only unlinked from its page.
    db.execute('PRAGMA secure_delete=ON')
    for suffix in ('-wal', '-shm'):  # made by an older version, or by SQLite under another umask
        private.restrict(path + suffix)
    return db


def secret_paths(prefix: str = '') -> List[str]:
    """JSON paths of the secret arguments in a job's args (prefix '.args' in a whole job)."""
    return ['$%s."%s"' % (prefix, key) for key in SECRET_ARGS]


def drop_secrets_sql(table: str, column: str, prefix: str = '') -> str:
    """An UPDATE that replaces the secret arguments in `column` by '(secret)' for one id, where any is still there.
    Built from constants only (SECRET_ARGS, table and column names of this module)."""
    paths = secret_paths(prefix)
    replace = 'json_replace(%s, %s)' % (column, ', '.join("'%s', '(secret)'" % p for p in paths))
    present = ' OR '.join("COALESCE(json_extract(%s, '%s'), '(secret)') != '(secret)'" % (column, p) for p in paths)
    return 'UPDATE %s SET %s = %s WHERE id = ? AND (%s)' % (table, column, replace, present)


def wal_sync(path: str) -> None:
    """fdatasync the WAL of the database at `path`: every commit so far is on disk after it. When there is no WAL
    (every connection closed meanwhile), its frames were checkpointed into the database: that file is synced."""
    try:
        fd = os.open(path + '-wal', os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fdatasync(fd)
    finally:
        os.close(fd)


class WalSync(object):
    """Makes the commits of a connection opened with synced_by_caller durable, on a thread of its own: what
    synchronous=FULL does inside COMMIT (one fdatasync of the WAL, after the commit's frames are written), while
    the caller goes on with its next requests. want(n) asks for everything committed up to the caller's n-th
    commit; `synced` is the last n on disk. Each time it grows, one byte is written to `wake_fd` (a pipe the
    caller polls). A failed fsync is kept in `error`: nothing after it may be called durable."""

    def __init__(self, path: str, wake_fd: int) -> None:
        self.path = path
        self.wake_fd = wake_fd
        self.cond = threading.Condition()
        self.wanted = 0
        self.synced = 0
        self.error: Optional[OSError] = None
        self.stopping = False
        self.thread = threading.Thread(target=self._run, name='wal-sync', daemon=True)
        self.thread.start()

    def want(self, commit: int) -> None:
        with self.cond:
            if commit > self.wanted:
                self.wanted = commit
                self.cond.notify()

    def sync(self) -> None:
        wal_sync(self.path)

    def _run(self) -> None:
        while True:
            with self.cond:
                while self.wanted <= self.synced and not self.stopping and self.error is None:
                    self.cond.wait()
                if self.stopping or self.error is not None:
                    return
                target = self.wanted
            try:
                self.sync()
            except OSError as e:
                LOG.critical('cannot make the database %s durable: %s', self.path, e)
                with self.cond:
                    self.error = e
            else:
                with self.cond:
                    self.synced = target
            try:
                os.write(self.wake_fd, b'.')
            except BlockingIOError:  # the pipe is full: the caller is woken already
                pass

    def stop(self) -> None:
        with self.cond:
            self.stopping = True
            self.cond.notify()
        self.thread.join()

    def close(self) -> None:
        """Release what sync() uses, after stop() and a last sync()."""


class Connection(Protocol):
    """What the stores call on a database connection: sqlite3.Connection, or postgres.PostgresConnection."""

    def execute(self, __sql: str, __params: Any = ...) -> Any: ...

    def executemany(self, __sql: str, __rows: Any) -> Any: ...

    def executescript(self, __script: str) -> Any: ...

    @property
    def in_transaction(self) -> bool: ...

    def close(self) -> None: ...


class Store(object):
    """A database whose writes can share one commit: an SQLite file from open_database with `schema` applied, or a
    connection a subclass opens itself (the client worker's PostgreSQL job log)."""

    # What opens a transaction: IMMEDIATE takes SQLite's write lock at once, so what a transaction reads before it
    # writes no other writer changes meanwhile.
    begin = 'BEGIN IMMEDIATE'
    # Whether a savepoint costs next to nothing (SQLite: no round trip to a server).
    cheap_savepoints = True

    def __init__(self, path: str, schema: str, synced_by_caller: bool = False) -> None:
        self.initialise(open_database(path, synced_by_caller))
        self.db.executescript(schema)

    def initialise(self, db: Connection) -> None:
        """Start the store on its opened connection: __init__ calls this with the SQLite file it opens, a store in
        another database with the connection it opened."""
        self.db: Connection = db
        self.depth = 0
        # Secrets dropped since the last checkpoint: their old pages may still be in the WAL.
        self.dropped = 0

    def changes(self) -> int:
        """Rows changed since the database was opened: grows with each write."""
        return int(getattr(self.db, 'total_changes'))

    def start(self) -> None:
        """Open the outermost transaction (a store may do more first: what it raises leaves no transaction open)."""
        self.db.execute(self.begin)

    def close(self) -> None:
        self.db.close()

    def drop_secrets(self, sql: str, job_ids: Iterable[str]) -> None:
        """Run a drop_secrets_sql UPDATE for each id; counts the jobs that had secrets."""
        for job_id in job_ids:
            self.dropped += self.db.execute(sql, (job_id,)).rowcount

    def checkpoint(self) -> None:
        """Copy the WAL into the database and truncate it, so that dropped secrets leave no copy on disk.
        Called outside transactions, after a commit that dropped secrets."""
        self.db.execute('PRAGMA wal_checkpoint(TRUNCATE)')
        self.dropped = 0

    def checkpoint_if_dropped(self) -> None:
        if self.dropped:
            self.checkpoint()

    def commit(self) -> None:
        self.db.execute('COMMIT')

    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        """Writes that belong together: inside the caller's transaction when there is one - its savepoint or
        rollback undoes them when they raise, without a savepoint of their own (two statements fewer) - else in a
        transaction of their own."""
        if self.depth:
            yield
            return
        with self.transaction():
            yield

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """Everything inside is committed at once when the outermost block ends. A nested block is a
        savepoint: when it raises, only its own writes are undone and the error goes on."""
        savepoint = 's%d' % self.depth
        if self.depth == 0:
            self.start()
        else:
            self.db.execute('SAVEPOINT %s' % savepoint)
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
            self.commit()
        except BaseException:
            if self.db.in_transaction:
                self.db.execute('ROLLBACK')
            raise
