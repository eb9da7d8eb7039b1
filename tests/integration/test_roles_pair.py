# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The roles deploy two client workers on a PostgreSQL job log (issue 21): playbooks/site.yml on one of the
testbed's hosts and two client hosts (as test_roles.py, whose Deployment this uses; test_roles.py deploys three
host workers and runs the site twice), the database a PostgreSQL server of this module's own. One client worker
is active, the other standby with the same keys; a stopped active one is replaced, and the host workers report
to the new one.
"""

from __future__ import annotations

import os

import pytest
import yaml

from maglica_testbed import maglica_config, wait_until
from maglica.errors import DispatchError
from maglica.protocol.transport import Requester
from postgres_server import PostgresServer
from test_roles import PORT, Deployment, deployed

CLIENTS = ('client', 'client2')
HOSTS = ('host0',)


@pytest.fixture(scope='module')
def pair(testbed, tmp_path_factory):
    with PostgresServer() as postgres:
        joblog = {'client_worker_joblog_backend': 'postgresql', 'client_worker_joblog_dsn': postgres.create_database('roles'),
                  'client_worker_joblog_lease_s': 3.0}
        yield from deployed(Deployment(testbed, str(tmp_path_factory.mktemp('roles-pair')), clients=CLIENTS, port=PORT + 6,
                                       host_names=HOSTS, client_vars=joblog))


def answers(deployment, name):
    """Whether client worker `name` takes requests (is the active one): asked over the library's key alone."""
    conf = maglica_config.load(deployment.host_vars(name)['client_worker_config_path'])
    endpoint = [w for w in conf.client_workers if w.name == name][0].endpoint('rep')
    requester = Requester(conf, 'library', endpoint=endpoint)
    try:
        return requester.request({'type': 'hosts'}, 2.0).get('ok')
    except DispatchError:
        return False
    finally:
        requester.close()


def active(deployment):
    found = [name for name in CLIENTS if answers(deployment, name)]
    return found[0] if len(found) == 1 else None


def test_site_deploys_two_client_workers_one_active(pair):
    run = pair.first_run
    assert run.rc == 0, run
    assert all(r['failed'] == 0 for r in run.recap.values()), run.recap
    pids = pair.pids()
    assert all(pids.values()), pids
    for name in CLIENTS:
        with open(pair.host_vars(name)['client_worker_config_path']) as handle:
            conf = yaml.safe_load(handle)
        assert [w['name'] for w in conf['client']['workers']] == list(CLIENTS)
        assert conf['joblog']['backend'] == 'postgresql'
    keys = [pair.host_vars(name)['client_worker_key_dir'] for name in CLIENTS]
    for key in ('server.key', 'server.key_secret', 'library.key', 'library.key_secret'):
        contents = [open(os.path.join(directory, key)).read() for directory in keys]
        assert contents[0] == contents[1], '%s differs between the client workers' % key
    assert oct(os.stat(os.path.join(keys[1], 'server.key_secret')).st_mode & 0o777) == '0o600'
    assert 'secret' not in run.output.lower().replace('key_secret', ''), 'a secret key in the play output'
    with open(pair.host_vars(HOSTS[0])['host_worker_config_path']) as handle:
        assert [w['name'] for w in yaml.safe_load(handle)['client']['workers']] == list(CLIENTS)
    assert wait_until(lambda: active(pair), 30, 'one active client worker') in CLIENTS
    assert all(h['alive'] for h in pair.hosts_status().values())


def test_a_stopped_active_client_worker_is_replaced_and_the_host_workers_follow(pair):
    first = wait_until(lambda: active(pair), 30, 'one active client worker')
    second = [name for name in CLIENTS if name != first][0]
    pair.supervisorctl(first, 'stop', pair.program(first))  # a clean stop gives the lease up
    wait_until(lambda: answers(pair, second), 30, '%s to take over' % second)
    wait_until(lambda: all(h['alive'] and h['last_seen_s'] is not None and h['last_seen_s'] < 2
                           for h in pair.hosts_status().values()), 30, 'the host workers to report to %s' % second)
    pair.supervisorctl(first, 'start', pair.program(first))
    wait_until(lambda: pair.pid(first), 30, '%s to run again' % first)
    assert wait_until(lambda: active(pair), 30, 'one active client worker') == second, 'the one started again is standby'
