# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Every request that names a host is refused, the same way and before it does anything, when that host is not in
the client worker's configuration: a job for it is never logged, a report or a state from it never kept."""

from __future__ import annotations

import pytest
import zmq

from maglica.protocol import messages
from unit_helpers import client_worker_in_process, plain_worker_config

HOST_STATE = {'memory_mb': 1024, 'cpus': 2, 'domains': [], 'storage': {}}
REQUESTS = {
    'submit': lambda host: {'job': messages.new_job(host, 'noop', {})},
    'maintenance': lambda host: {'host': host, 'state': 'maintenance'},
    'fetch': lambda host: {'host': host, 'ids': ['0' * 32]},
    'report': lambda host: {'host': host, 'acks': [], 'results': [], 'running': []},
    'state': lambda host: {'host': host, 'digest': 'a' * 64, 'state': HOST_STATE},
    'state_changed': lambda host: {'host': host},
}


@pytest.fixture
def worker(tmp_path):
    running = client_worker_in_process(plain_worker_config(str(tmp_path)))
    yield running
    running.close()


@pytest.mark.parametrize('kind', sorted(REQUESTS))
def test_a_request_naming_a_host_not_configured_is_refused(worker, kind):
    message = dict(REQUESTS[kind]('kvm9'), type=kind)
    reply = worker.handle(zmq.Frame(messages.encode(message)))
    assert reply == {'ok': False, 'code': 'not_found', 'error': 'host kvm9 is not in the client worker configuration'}
    assert worker.log.recent(10, None, None) == []
    assert 'kvm9' not in worker.heartbeats and 'kvm9' not in worker.pushed and 'kvm9' not in worker.changed
    assert worker.log.maintenance() == {}


@pytest.mark.parametrize('kind', sorted(REQUESTS))
def test_the_same_request_for_a_configured_host_is_answered(worker, kind):
    message = dict(REQUESTS[kind]('kvm1'), type=kind)
    reply = worker.handle(zmq.Frame(messages.encode(message)))
    assert reply['ok'], reply
