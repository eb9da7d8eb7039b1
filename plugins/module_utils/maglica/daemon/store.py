# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The SQLite store both worker daemons keep their state in: WAL mode, 0600, secrets dropped from what is kept."""

from __future__ import annotations

import contextlib
import os
import sqlite3
from typing import Iterable, Iterator, List

from .. import private
from ..protocol.messages import SECRET_ARGS


def open_database(path: str) -> sqlite3.Connection:
    """Open (creating) an SQLite database in WAL mode with durable commits, readable by its owner only."""
    # The directory 0700 and the file 0600 before SQLite opens it: its -wal and -shm get the file's mode.
    private.make_dir(os.path.dirname(os.path.abspath(path)))
    private.make_file(path)
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    db.execute('PRAGMA journal_mode=WAL')
    # FULL: a commit survives a power cut, not only a process kill.
    db.execute('PRAGMA synchronous=FULL')
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


class Store(object):
    """An SQLite database from open_database, with `schema` applied, whose writes can share one commit."""

    def __init__(self, path: str, schema: str) -> None:
        self.db = open_database(path)
        self.db.executescript(schema)
        self.depth = 0
        # Secrets dropped since the last checkpoint: their old pages may still be in the WAL.
        self.dropped = 0

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
