# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A PostgreSQL server of the tests' own: Debian's postgresql package, its own data directory and process,
reached over a Unix socket in that directory only (no TCP port). Runs on the test machine, as root, starting the
server as the `postgres` user (PostgreSQL refuses to run as root).

    with PostgresServer('/var/tmp/x') as server:
        dsn = server.create_database('test1')
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile

from polling import wait_until

USER = 'maglica'
PORT = 5432
START_TIMEOUT = 60


def binaries():
    """The bin directory of the newest PostgreSQL installed (Debian: /usr/lib/postgresql/VERSION/bin)."""
    found = sorted(glob.glob('/usr/lib/postgresql/*/bin/postgres'), key=lambda p: int(p.split('/')[4]))
    if not found:
        raise RuntimeError('no PostgreSQL server is installed (Debian: apt-get install postgresql; make deps does it)')
    return os.path.dirname(found[-1])


# The server's processes run as this user (PostgreSQL refuses root), started directly so that signals reach them.
AS_POSTGRES = {'user': 'postgres', 'group': 'postgres', 'extra_groups': []}


class PostgresServer:
    def __init__(self, base=None, settings=None):
        self.owned = base is None
        self.base = base or tempfile.mkdtemp(prefix='maglica-pg-', dir='/var/tmp')
        self.data = os.path.join(self.base, 'data')
        self.socket_dir = os.path.join(self.base, 'run')
        self.settings = dict(settings or {})
        self.proc = None
        self.bin = binaries()

    def psql(self, sql, database='postgres'):
        return subprocess.run([os.path.join(self.bin, 'psql'), '-X', '-q', '-v', 'ON_ERROR_STOP=1', '-At', '-h', self.socket_dir,
                               '-p', str(PORT), '-U', USER, '-d', database, '-c', sql],
                              check=True, capture_output=True, text=True).stdout.strip()

    def dsn(self, database):
        return 'host=%s port=%d user=%s dbname=%s' % (self.socket_dir, PORT, USER, database)

    def create_database(self, name):
        self.psql('CREATE DATABASE "%s"' % name)
        return self.dsn(name)

    def start(self):
        os.makedirs(self.socket_dir, exist_ok=True)
        shutil.chown(self.base, 'postgres')
        shutil.chown(self.socket_dir, 'postgres')
        if not os.path.exists(os.path.join(self.data, 'PG_VERSION')):
            subprocess.run([os.path.join(self.bin, 'initdb'), '-D', self.data, '-U', USER, '--auth=trust', '-E', 'UTF8', '--locale=C.UTF-8'],
                           check=True, capture_output=True, text=True, cwd=self.base, **AS_POSTGRES)
        options = ['-c', 'listen_addresses=', '-c', 'unix_socket_directories=%s' % self.socket_dir, '-p', str(PORT)]
        for name, value in self.settings.items():
            options += ['-c', '%s=%s' % (name, value)]
        log = open(os.path.join(self.base, 'server.log'), 'ab')
        self.proc = subprocess.Popen([os.path.join(self.bin, 'postgres'), '-D', self.data] + options, stdout=log, stderr=subprocess.STDOUT,
                                     cwd=self.base, **AS_POSTGRES)
        log.close()
        wait_until(self.ready, START_TIMEOUT, 'the PostgreSQL server in %s to accept connections' % self.base)
        return self

    def ready(self):
        if self.proc.poll() is not None:
            with open(os.path.join(self.base, 'server.log')) as handle:
                raise RuntimeError('the PostgreSQL server exited:\n%s' % handle.read()[-2000:])
        return subprocess.run([os.path.join(self.bin, 'pg_isready'), '-q', '-h', self.socket_dir, '-p', str(PORT)], check=False).returncode == 0

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(2)  # fast shutdown: SIGTERM's smart one would wait for the clients to leave
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.owned:
            shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
