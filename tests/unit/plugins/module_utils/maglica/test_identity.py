# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Role checks fail closed (issue 10, item 11).

An identity that does not resolve gets nothing, a host cannot be named after a
key role (`library`, `server`), and replies are validated like requests.
"""

from __future__ import annotations

import threading

import pytest
import zmq

from maglica.client_worker import worker as client_worker
from maglica.cluster import config
from maglica.protocol import curve
from maglica.protocol import messages
from maglica.controller.client import Client
from maglica.errors import ConfigError, DispatchError
from unit_helpers import free_ports, write_yaml

JOB_ID = '0123456789abcdef0123456789abcdef'


@pytest.mark.parametrize('name', [curve.LIBRARY, curve.SERVER])
def test_host_named_after_a_key_role_is_refused(name):
    """A host called `library` would get the library's rights under CURVE; one called `server`, the client worker's key."""
    with pytest.raises(ConfigError, match="host name %r is reserved" % name):
        config.validate({'hosts': ['kvm1', {'name': name}]})


class UnknownSender:
    """A request frame whose CURVE User-Id is not in the allow-list.

    A stand-in, not a socket: ZAP refuses such a key at the handshake, so a real peer cannot
    provoke this; the check is the last guard when the two disagree (an allow-list changed on disk).
    """

    def __init__(self, message):
        self.bytes = messages.encode(message)

    def get(self, prop):
        assert prop == 'User-Id'
        return 'Q&Ws^zW7!Ud6(dS*Qr4?k:8]A@>/8u)TaT5J)P8X'


@pytest.fixture
def curve_worker(tmp_path):
    key_dir = str(tmp_path / 'keys')
    for name in (curve.SERVER, curve.LIBRARY, 'kvm1'):
        curve.create(key_dir, name)
    for name in (curve.LIBRARY, 'kvm1'):
        curve.allow(key_dir, name, curve.public_path(key_dir, name))
    pub, rep = free_ports(2)
    cfg = config.load(write_yaml(tmp_path / 'maglica.conf', {
        'hosts': ['kvm1'], 'client': {'host': '127.0.0.1', 'bind': '127.0.0.1', 'pub_port': pub, 'rep_port': rep},
        'security': {'curve': True, 'key_dir': key_dir}, 'jobs': {'database': str(tmp_path / 'jobs.sqlite')}}))
    worker = client_worker.ClientWorker(cfg)
    try:
        yield worker
    finally:
        worker.close()


@pytest.mark.parametrize('request_', [
    {'type': 'submit', 'job': messages.new_job('kvm1', 'vm.remove', {'name': 'web1'})},
    {'type': 'list'},
    {'type': 'hosts'},
    {'type': 'status', 'id': JOB_ID},
    {'type': 'report', 'host': 'kvm1', 'acks': [JOB_ID]},
    {'type': 'fetch', 'host': 'kvm1', 'ids': [JOB_ID]},
])
def test_unresolved_identity_fails_closed(curve_worker, request_):
    with curve_worker.log.transaction():
        reply = curve_worker.handle(UnknownSender(request_))
    assert reply['ok'] is False and 'not in the allow-list' in reply['error']
    assert curve_worker.log.recent(10) == [], 'nothing was logged for it'


class RogueServer:
    """A real REP socket that answers every request with the next of `replies`: a client worker gone wrong."""

    def __init__(self, replies):
        self.port = free_ports(1)[0]
        self.replies = list(replies)
        self.context = zmq.Context()
        self.sock = self.context.socket(zmq.REP)
        self.sock.linger = 0
        self.sock.bind('tcp://127.0.0.1:%d' % self.port)
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        for reply in self.replies:
            if not self.sock.poll(10000):
                return
            self.sock.recv()
            self.sock.send(messages.encode(reply))

    def close(self):
        self.thread.join(15)
        self.sock.close()
        self.context.term()


@pytest.mark.parametrize('call, reply, problem', [
    (lambda c: c.status(JOB_ID), {'ok': True, 'job': 'not a job'}, r'job must be dict'),
    (lambda c: c.status(JOB_ID), {'ok': True, 'job': {'id': JOB_ID}}, r"job needs the field 'host'"),
    (lambda c: c.status(JOB_ID), {'ok': 'yes'}, r'ok must be bool'),
    (lambda c: c.hosts(), {'ok': True, 'hosts': [{'host': 'kvm1', 'alive': 'very'}]}, r'hosts\[0\]\.alive must be bool'),
    (lambda c: c.hosts(), {'ok': True, 'hosts': [], 'run': 'rm -rf /'}, r'unknown field\(s\) run'),
    (lambda c: c.recent(), {'ok': True, 'jobs': {}}, r'jobs must be list'),
    (lambda c: c.recent(), {'ok': False, 'error': {'nested': 1}}, r'error must be str'),
])
def test_malformed_reply_is_refused(call, reply, problem):
    server = RogueServer([reply])
    cfg = config.validate({'hosts': ['kvm1'], 'security': {'curve': False},
                           'client': {'host': '127.0.0.1', 'rep_port': server.port, 'pub_port': server.port + 1}})
    try:
        with Client(cfg, timeout=5) as client, pytest.raises(DispatchError, match='malformed.*' + problem):
            call(client)
    finally:
        server.close()


def test_every_request_has_a_reply_schema_and_job_rows_cover_the_job_log():
    """A new request type or job log column needs its reply schema too, or its replies are refused."""
    from maglica.client_worker import joblog
    assert set(messages.REPLIES) == set(messages.REQUESTS)
    assert set(messages.JOB_ROW) == set(joblog.COLUMNS)
