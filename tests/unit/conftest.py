# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Unit tests import the library as `maglica` (plugins/module_utils on sys.path), as the daemons do.

build/collections (made by `make collection-link`) is added too, so that common.py's
ansible_collections imports resolve without PYTHONPATH.
"""

from __future__ import annotations

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, '..', '..'))
for path in (os.path.join(ROOT, 'build', 'collections'), os.path.join(ROOT, 'plugins', 'module_utils'), os.path.join(ROOT, 'tests'), HERE):
    if os.path.isdir(path) and path not in sys.path:
        sys.path.insert(0, path)

import noop_action  # noqa: E402  pylint: disable=wrong-import-position

# Jobs of the test action `noop` validate in this process (workers get it from tests/noop_action.py).
noop_action.register()


import hashlib  # noqa: E402  pylint: disable=wrong-import-position

import pytest  # noqa: E402  pylint: disable=wrong-import-position

from postgres_server import PostgresServer  # noqa: E402  pylint: disable=wrong-import-position

# The job log's stores: every test that takes the `joblog_backend` fixture runs on each.
JOBLOG_BACKENDS = ('sqlite', 'postgresql')


@pytest.fixture(scope='session')
def postgres():
    """A PostgreSQL server of this test session's own (tests/postgres_server.py)."""
    with PostgresServer() as server:
        yield server


@pytest.fixture
def postgres_dsn(postgres, request):
    """The DSN of a new, empty database for this test."""
    return postgres.create_database('t_' + hashlib.sha256(request.node.nodeid.encode()).hexdigest()[:20])


@pytest.fixture(params=JOBLOG_BACKENDS)
def joblog_backend(request):
    return request.param
