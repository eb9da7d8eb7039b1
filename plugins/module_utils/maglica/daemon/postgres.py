# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A PostgreSQL connection (psycopg 3) that the stores call as they call sqlite3: runs in the client worker.

The job log's statements are written once, in the SQL both databases speak (ON CONFLICT, RETURNING); this
adapter turns their `?` placeholders into psycopg's `%s`. The connection is in autocommit mode: Store's
transaction() sends BEGIN, SAVEPOINT and COMMIT itself, as it does to SQLite.
"""

from __future__ import annotations

from typing import Any, Dict, Iterable, Optional, Sequence

from .. import deps
from ..errors import ConfigError

# Seconds a connection attempt may take: a DSN naming several hosts tries each (libpq's multi-host DSN).
CONNECT_TIMEOUT = 5


def psycopg() -> Any:
    """Debian's python3-psycopg (or psycopg 3 from PyPI), loaded on first use: only a PostgreSQL job log needs it."""
    return deps.load('psycopg')


class PostgresConnection:
    """The sqlite3.Connection calls Store and JobLog make, on a psycopg connection."""

    def __init__(self, dsn: str, application_name: str, settings: Optional[Dict[str, str]] = None) -> None:
        pg = psycopg()
        try:
            self.conn = pg.connect(dsn, autocommit=True, connect_timeout=CONNECT_TIMEOUT, application_name=application_name)
        except pg.Error as e:
            # libpq's message names the host and the reason, never the password.
            raise ConfigError('cannot connect to the PostgreSQL job log (joblog.dsn): %s' % str(e).strip())
        self.errors = pg.Error
        self.statements: Dict[str, str] = {}
        for name, value in (settings or {}).items():
            self.conn.execute('SELECT set_config(%s, %s, false)', (name, value))

    def _sql(self, sql: str) -> str:
        converted = self.statements.get(sql)
        if converted is None:
            # The statements are constants of this package: none holds a `%` or a `?` inside a string literal.
            converted = self.statements[sql] = sql.replace('%', '%%').replace('?', '%s')
        return converted

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self.conn.execute(self._sql(sql), params or None)

    def execute_statements(self, sql: str) -> Any:
        """Several statements without parameters in one round trip (the simple query protocol: never prepared).
        The cursor is at the first one's result; nextset() goes to the next."""
        return self.conn.execute(sql, prepare=False)

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> Any:
        cursor = self.conn.cursor()
        cursor.executemany(self._sql(sql), list(rows))
        return cursor

    def executescript(self, script: str) -> None:
        for statement in script.split(';'):
            lines = [line for line in statement.splitlines() if line.strip() and not line.strip().startswith('--')]
            if lines:
                self.conn.execute('\n'.join(lines))

    def literal(self, value: Any) -> str:
        """`value` as an SQL literal, quoted by psycopg for this connection."""
        return str(psycopg().sql.Literal(value).as_string(self.conn))

    @property
    def broken(self) -> bool:
        """Whether the connection is lost (the server went away): no statement will run on it again."""
        return bool(self.conn.closed or self.conn.broken)

    @property
    def in_transaction(self) -> bool:
        return bool(self.conn.info.transaction_status != psycopg().pq.TransactionStatus.IDLE)

    def close(self) -> None:
        self.conn.close()
