# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""client_worker and host_worker as real daemons over real ZeroMQ, in plain and CURVE mode, running noop jobs.

A noop job with a marker appends one line `ID MARKER` to {state_dir}/{host}.effects:
counting those lines tells how often a job really ran.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

import psycopg
import pytest
import zmq  # a missing pyzmq fails the suite, never skips it

from maglica.cluster import config
from maglica.host import worker as host_worker
from maglica.controller import image_import
from maglica.protocol import curve as curve_keys
from maglica.protocol import messages
from maglica.protocol import transport
from maglica.controller.client import Client
from maglica.errors import ConflictError, DispatchError, JobFailed, NotFoundError, StalePlacement
from conftest import JOBLOG_BACKENDS
from unit_helpers import Daemon, files_holding, free_ports, wait_until, worker_env, write_yaml


HOSTS = ('kvm1', 'kvm10', 'lonely')  # lonely never gets a host worker
WORKER_HOSTS = ('kvm1', 'kvm10')
START_TIMEOUT = 15
JOB_TIMEOUT = 15


class Cloud(object):
    """A client worker, host workers and their configuration, all under one directory."""

    def __init__(self, base, curve, postgres_dsn=None):
        self.base = base
        self.curve = curve
        # The job log: SQLite in `base`, or the PostgreSQL database of this DSN.
        self.postgres_dsn = postgres_dsn
        self.key_dir = os.path.join(base, 'keys')
        self.state_dir = os.path.join(base, 'state')
        self.client_worker = None
        self.host_workers = {}
        self.config = None
        self.config_path = None
        self.jobs_settings = {}
        # Keys every host entry gets (its libvirt `uri`), and host worker settings, over the defaults below.
        self.host_settings = {}
        self.host_worker_settings = {}
        self.extra_settings = {}
        if curve:
            for name in (curve_keys.SERVER, curve_keys.LIBRARY, 'stranger') + HOSTS:
                curve_keys.create(self.key_dir, name)
            for name in (curve_keys.LIBRARY,) + HOSTS:  # 'stranger' has a key pair but is not allowed
                curve_keys.allow(self.key_dir, name, curve_keys.public_path(self.key_dir, name))

    def write_config(self, pub_port, rep_port):
        self.config_path = write_yaml(os.path.join(self.base, 'maglica.conf'), dict({
            'hosts': [dict(self.host_settings, name=name) for name in HOSTS] if self.host_settings else list(HOSTS),
            'client': {'host': '127.0.0.1', 'bind': '127.0.0.1', 'pub_port': pub_port, 'rep_port': rep_port},
            'security': {'curve': self.curve, 'key_dir': self.key_dir},
            'jobs': dict({'database': os.path.join(self.base, 'jobs.sqlite'), 'ttl': 60, 'republish_interval': 0.2,
                          'request_timeout': 5.0}, **self.jobs_settings),
            'host_worker': dict({'state_dir': self.state_dir, 'heartbeat_interval': 0.5, 'concurrency': 2,
                                 'state_poll_interval': 0}, **self.host_worker_settings),
        }, **dict(self.joblog_settings(), **self.extra_settings)))
        self.config = config.load(self.config_path)

    def joblog_settings(self):
        return {'joblog': {'backend': 'postgresql', 'dsn': self.postgres_dsn}} if self.postgres_dsn else {}

    def start(self):
        for _attempt in range(3):
            self.write_config(*free_ports(2))
            self.client_worker = Daemon('maglica.client_worker.worker', ['--config', self.config_path],
                                        os.path.join(self.base, 'client_worker.log'))
            # REQ connects before the REP binds, so the first answer proves the worker is up.
            answered = wait_until(lambda: not self.client_worker.alive() or self.answers(), START_TIMEOUT, 'the client worker')
            if self.client_worker.alive() and answered:
                break
            output = self.client_worker.output()
            self.client_worker.stop()
            if 'Address already in use' not in output:
                raise AssertionError('the client worker did not start:\n%s' % output)
        for name in WORKER_HOSTS:
            self.start_host_worker(name)

    def answers(self):
        try:
            with Client(self.config, timeout=0.5) as client:
                return client.hosts()
        except DispatchError:
            return None

    def start_host_worker(self, name):
        self.host_workers[name] = Daemon('maglica.host.worker', ['--config', self.config_path, '--name', name],
                                         os.path.join(self.base, '%s.log' % name))
        wait_until(lambda: self.alive_hosts().get(name), START_TIMEOUT, 'the host worker of %s to report' % name)

    def alive_hosts(self):
        with Client(self.config) as client:
            return {h['host']: h['alive'] for h in client.hosts()}

    def effects(self, host):
        path = os.path.join(self.state_dir, '%s.effects' % host)
        if not os.path.exists(path):
            return []
        with open(path) as handle:
            return handle.read().splitlines()

    def run_noop(self, host, marker):
        job = messages.new_job(host, 'noop', {'marker': marker})
        with Client(self.config) as client:
            client.submit(job)
            return client.wait(job['id'], JOB_TIMEOUT)

    def stop(self):
        codes = {name: worker.stop() for name, worker in self.host_workers.items()}
        if self.client_worker is not None:
            codes['client_worker'] = self.client_worker.stop()
        return codes


def running_cloud(request, tmp_path_factory, curve):
    """A Cloud on the job log store of the fixture's parameter (conftest.JOBLOG_BACKENDS)."""
    name = '%s-%s' % ('curve' if curve else 'plain', request.param)
    dsn = request.getfixturevalue('postgres').create_database(name) if request.param == 'postgresql' else None
    cloud = Cloud(str(tmp_path_factory.mktemp(name)), curve=curve, postgres_dsn=dsn)
    try:
        cloud.start()
        yield cloud
    finally:
        cloud.stop()


@pytest.fixture(scope='module', params=JOBLOG_BACKENDS)
def plain_cloud(request, tmp_path_factory):
    yield from running_cloud(request, tmp_path_factory, curve=False)


@pytest.fixture(scope='module', params=JOBLOG_BACKENDS)
def curve_cloud(request, tmp_path_factory):
    yield from running_cloud(request, tmp_path_factory, curve=True)


def raw_request(cloud, frames, timeout=5.0):
    """Send frames as they are on a plain REQ socket and return the decoded reply."""
    context = zmq.Context.instance()
    sock = context.socket(zmq.REQ)
    sock.linger = 0
    try:
        sock.connect(cloud.config.endpoint('rep'))
        sock.send_multipart(frames)
        assert sock.poll(int(timeout * 1000)), 'the client worker did not answer %r' % (frames[0][:60],)
        return messages.decode(sock.recv())
    finally:
        sock.close()


# -- plain mode ----------------------------------------------------------------

def test_noop_job_runs_once(plain_cloud):
    job = messages.new_job('kvm1', 'noop', {'marker': 'once'})
    with Client(plain_cloud.config) as client:
        logged = client.submit(job)
        assert logged['id'] == job['id'] and logged['state'] in ('queued', 'dispatched')
        done = client.wait(job['id'], JOB_TIMEOUT)
        assert done['state'] == 'succeeded' and done['acked'] is not None and done['attempts'] >= 1
        resent = client.submit(job)
        assert resent['state'] == 'succeeded', 'a resubmitted id is answered from the log, not queued again'
    # A later job on the same host finishing shows the worker went past any redelivery of the first.
    plain_cloud.run_noop('kvm1', 'after')
    assert plain_cloud.effects('kvm1').count('%s once' % job['id']) == 1


def test_topics_do_not_leak_between_prefix_hosts(plain_cloud):
    for_kvm10 = plain_cloud.run_noop('kvm10', 'ten')
    for_kvm1 = plain_cloud.run_noop('kvm1', 'one')
    assert '%s ten' % for_kvm10['id'] in plain_cloud.effects('kvm10')
    assert not any(line.startswith(for_kvm10['id']) for line in plain_cloud.effects('kvm1')), 'kvm1 never runs kvm10 jobs'
    assert not any(line.startswith(for_kvm1['id']) for line in plain_cloud.effects('kvm10'))


def test_job_for_an_unknown_host_is_refused(plain_cloud):
    job = messages.new_job('kvm2', 'noop', {})
    with Client(plain_cloud.config) as client:
        with pytest.raises(NotFoundError, match='^host kvm2 is not in the client worker configuration$'):
            client.submit(job)
        with pytest.raises(NotFoundError, match='no job with id %s' % job['id']):
            client.status(job['id'])


def test_job_whose_host_has_no_worker_expires(plain_cloud):
    job = messages.new_job('lonely', 'noop', {'marker': 'never'}, ttl=1)
    with Client(plain_cloud.config) as client:
        client.submit(job)
        with pytest.raises(JobFailed) as caught:
            client.wait(job['id'], 10)
    assert caught.value.job['state'] == 'expired'
    assert 'expired: no host worker for lonely acknowledged the job within its TTL' in str(caught.value)
    assert caught.value.job['attempts'] >= 1
    assert plain_cloud.effects('lonely') == []


def test_wait_timeout_says_why(plain_cloud):
    job = messages.new_job('lonely', 'noop', {}, ttl=60)
    with Client(plain_cloud.config) as client:
        client.submit(job)
        with pytest.raises(JobFailed, match=r'did not finish within 0\.3s; it is dispatched: no host worker for lonely has acknowledged'):
            wait_until(lambda: client.status(job['id'])['state'] == 'dispatched', 5, 'the job to be published')
            client.wait(job['id'], 0.3)


def test_status_list_hosts_and_redaction(plain_cloud):
    args = {'image': 'debian.original', 'hostname': 'web9', 'clone_mode': 'full', 'start': False, 'root_password_hash': '$6$s$h'}
    job = messages.new_job('lonely', 'vm.clone', args, ttl=60)
    with Client(plain_cloud.config) as client:
        assert client.submit(job)['args']['root_password_hash'] == '(secret)'
        assert client.status(job['id'])['args']['root_password_hash'] == '(secret)'
        listed = client.recent(limit=50, host='lonely')
        assert job['id'] in [j['id'] for j in listed] and all(j['host'] == 'lonely' for j in listed)
        assert all(j['args'].get('root_password_hash') in (None, '(secret)') for j in listed)
        hosts = {h['host']: h for h in client.hosts()}
    assert hosts['kvm1']['alive'] and hosts['kvm1']['pid'] == plain_cloud.host_workers['kvm1'].pid
    assert not hosts['lonely']['alive'] and hosts['lonely']['last_seen_s'] is None


@pytest.mark.parametrize('frames, error', [
    ([b'not json'], 'frame is not JSON'),
    ([b'x' * (messages.MAX_FRAME_BYTES + 1)], 'over the limit of 262144'),
    ([messages.encode({'type': 'reboot'})], "unknown request type 'reboot'"),
    ([b'[1, 2, 3]'], 'message must be a JSON object'),
    ([json.dumps({'type': 'hosts', 'version': 99}).encode()], 'message version must be 1'),
    ([messages.encode({'type': 'status', 'id': '../../etc/passwd'})], 'is not a valid name'),
    ([messages.encode({'type': 'hosts'}), messages.encode({'type': 'hosts'})], 'a request must be one frame'),
    ([messages.encode({'type': ['hosts']})], ''),  # see test_messages: answered as an internal error today
])
def test_malformed_requests_get_an_error_and_the_worker_stays(plain_cloud, frames, error):
    pid = plain_cloud.client_worker.pid
    reply = raw_request(plain_cloud, frames)
    assert reply['ok'] is False and error in reply['error']
    assert plain_cloud.client_worker.alive() and plain_cloud.client_worker.pid == pid
    assert raw_request(plain_cloud, [messages.encode({'type': 'hosts'})])['ok'] is True


def test_expired_job_reported_late_stays_expired(plain_cloud):
    """A host worker that acknowledges and reports a job after it expired: the user was told "expired",
    so it stays expired, and the late result is kept beside it."""
    job = messages.new_job('lonely', 'noop', {'marker': 'late'}, ttl=1)
    with Client(plain_cloud.config) as client:
        client.submit(job)
        wait_until(lambda: client.status(job['id'])['state'] == 'expired', 10, 'the job to expire')
        late = {'id': job['id'], 'status': 'succeeded', 'message': 'finished after all', 'data': {'marker': 'late'}}
        reply = host_request(plain_cloud, 'lonely', {'type': 'report', 'host': 'lonely', 'acks': [job['id']], 'results': [late]})
        assert reply['ok'] is True and reply['taken'] == [job['id']]
        state = client.status(job['id'])
        assert state['state'] == 'expired' and state['data'] == {}
        assert state['late_result']['status'] == 'succeeded' and state['late_result']['message'] == 'finished after all'
        with pytest.raises(JobFailed, match='expired: no host worker for lonely .*; its host worker reported it late: succeeded'):
            client.wait(job['id'], 1)
    shown = subprocess.run([sys.executable, '-m', 'maglica.controller.cli', '--config', plain_cloud.config_path, 'log', 'status', '--id', job['id']],
                           env=worker_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True, check=False)
    assert shown.returncode == 0 and 'late_result' in shown.stdout and 'finished after all' in shown.stdout, shown.stdout


def test_one_bad_item_of_a_report_costs_that_item_only(plain_cloud):
    """A host worker's report with a bad progress entry (a server's Content-Length: -1 once made `total` -1), a bad
    ack and a result the schema refuses: the rest of the report is taken - the good result, the acks, the
    heartbeat - and the bad result ends its job failed, saying why, instead of the whole report being refused for
    ever (the host then looked dead and its jobs stayed running)."""
    jobs = [messages.new_job('lonely', 'noop', {'marker': 'bad-report-%d' % i}) for i in range(3)]
    with Client(plain_cloud.config) as client:
        for job in jobs:
            client.submit(job)
        report = {'type': 'report', 'host': 'lonely', 'acks': [j['id'] for j in jobs] + ['not a job id'],
                  'running': [jobs[2]['id']], 'pid': 4242,
                  'progress': [{'id': jobs[2]['id'], 'done': 100, 'total': -1}, {'id': jobs[1]['id'], 'done': 5, 'total': 10}],
                  'results': [{'id': jobs[0]['id'], 'status': 'succeeded', 'data': {'marker': 'ok'}},
                              {'id': jobs[1]['id'], 'status': 'finished', 'message': 'a status the schema does not know'}]}
        reply = host_request(plain_cloud, 'lonely', report)
        assert reply['ok'] is True, reply
        assert sorted(reply['taken']) == sorted([jobs[0]['id'], jobs[1]['id']])
        assert client.status(jobs[0]['id'])['state'] == 'succeeded'
        second = client.status(jobs[1]['id'])
        assert second['state'] == 'failed' and 'does not validate' in second['message'] and 'report.results[1].status' in second['message']
        assert second['progress'] == {'done': 5, 'total': 10}
        third = client.status(jobs[2]['id'])
        assert third['state'] == 'running' and third['progress'] is None  # acknowledged; its bad figures dropped
        assert next(h for h in client.hosts() if h['host'] == 'lonely')['pid'] == 4242  # the heartbeat counted
        finish = {'type': 'report', 'host': 'lonely', 'results': [{'id': jobs[2]['id'], 'status': 'succeeded'}]}
        assert host_request(plain_cloud, 'lonely', finish)['taken'] == [jobs[2]['id']]


def test_host_worker_that_starts_late_gets_the_job_once(plain_cloud):
    assert plain_cloud.host_workers['kvm10'].stop() == 0, 'SIGTERM ends the host worker cleanly'
    job = messages.new_job('kvm10', 'noop', {'marker': 'late'})
    with Client(plain_cloud.config) as client:
        client.submit(job)
        wait_until(lambda: client.status(job['id'])['attempts'] >= 2, 10, 'the job to be published again')
        assert client.status(job['id'])['state'] == 'dispatched'
        plain_cloud.start_host_worker('kvm10')
        assert client.wait(job['id'], JOB_TIMEOUT)['state'] == 'succeeded'
    plain_cloud.run_noop('kvm10', 'sync')
    assert plain_cloud.effects('kvm10').count('%s late' % job['id']) == 1


def big_diff(size):
    """A clone's customisation result whose diff of /etc/hosts is `size` bytes before and after."""
    hosts = ''.join('10.%d.%d.%d\thost%d.example.com\n' % (n >> 16 & 255, n >> 8 & 255, n & 255, n) for n in range(size // 30))
    return {'hostname': 'web1', 'customization': {'changed_files': ['/etc/hosts'], 'notes': [], 'diff': [
        {'before_header': '/etc/hosts', 'after_header': '/etc/hosts', 'before': hosts, 'after': hosts + '127.0.1.1\tweb1\n'}]}}


def test_oversized_report_does_not_crash_loop_the_host_worker(plain_cloud):
    """Results too big for one frame wait in a host worker's outbox (a clone of an image with a big /etc/hosts):
    the worker neither exits on them at each start nor stops sending heartbeats; each result is trimmed
    with a note and the reports are split to fit."""
    worker = plain_cloud.host_workers['kvm10']
    assert worker.stop() == 0
    jobs = [messages.new_job('kvm10', 'noop', {}) for _index in range(6)]
    with Client(plain_cloud.config) as client:
        for job in jobs:
            client.submit(job)
    # The results as a host worker that ran the jobs left them: recorded, not yet reported.
    from maglica.host.worker import Record  # pylint: disable=import-outside-toplevel
    record = Record(os.path.join(plain_cloud.state_dir, 'kvm10.sqlite'))
    with record.transaction():
        for index, job in enumerate(jobs):
            record.take(job)
            size = 300 * 1024 if index == 0 else 100 * 1024  # one alone over a frame; all together six times one
            record.finish(job['id'], {'id': job['id'], 'status': 'succeeded', 'message': '', 'data': big_diff(size)})
    record.close()
    plain_cloud.start_host_worker('kvm10')
    with Client(plain_cloud.config) as client:
        new_pid = plain_cloud.host_workers['kvm10'].pid
        wait_until(lambda: not plain_cloud.host_workers['kvm10'].alive() or
                   {h['host']: h['pid'] for h in client.hosts()}['kvm10'] == new_pid, 10, 'a heartbeat of the new host worker')
        assert plain_cloud.host_workers['kvm10'].alive(), 'the host worker exited:\n%s' % plain_cloud.host_workers['kvm10'].output()[-2000:]
        for job in jobs:
            done = client.wait(job['id'], JOB_TIMEOUT)
            assert done['state'] == 'succeeded'
            diff = done['data']['customization']['diff'][0]
            assert diff['before_header'] == '/etc/hosts'
            assert 'trimmed by maglica' in diff['before'] and 'trimmed by maglica' in diff['after']
            assert any('customization.diff' in note for note in done['data']['trimmed'])
            assert len(messages.encode(done)) < messages.MAX_FRAME_BYTES
        assert worker.alive() is False and plain_cloud.host_workers['kvm10'].alive()
        assert 'Traceback' not in plain_cloud.host_workers['kvm10'].output()
    # Still alive and reporting after its outbox emptied.
    assert plain_cloud.run_noop('kvm10', 'after-big')['state'] == 'succeeded'


def test_job_listing_after_clones_with_big_diffs_fits_in_replies(plain_cloud):
    """`maglica_job_info limit: 50` after some clones: every listed job comes back (paged, diffs left out),
    and the status of one job still gives its whole result."""
    jobs = [messages.new_job('lonely', 'noop', {}, ttl=60) for _index in range(50)]
    with Client(plain_cloud.config) as client:
        for job in jobs:
            client.submit(job)
        results = [{'id': job['id'], 'status': 'succeeded', 'message': '', 'data': big_diff(12 * 1024)} for job in jobs]
        for start in range(0, len(results), 5):
            reply = host_request(plain_cloud, 'lonely', {'type': 'report', 'host': 'lonely', 'results': results[start:start + 5]})
            assert reply['ok'] is True and len(reply['taken']) == 5
        listed = client.recent(limit=50, host='lonely')
        assert [j['id'] for j in listed[:50]] == [job['id'] for job in reversed(jobs)]
        assert all(j['state'] == 'succeeded' and 'diff' not in j['data']['customization'] for j in listed)
        one = client.status(jobs[0]['id'])
        assert one['data'] == results[0]['data'], 'the status of one job gives the whole result'


def test_root_password_hash_leaves_job_log_and_host_record_once_used(plain_cloud):
    """Through the real workers: a clone job (it fails here: no libvirtd for kvm1) with a root password hash.
    Once it has ended, neither the client worker's job log nor the host worker's record holds the hash."""
    secret = '$6$drop$' + 'NotOnDiskAnyMore' * 4
    args = {'image': 'debian.original', 'hostname': 'web8', 'clone_mode': 'full', 'start': False, 'root_password_hash': secret}
    job = messages.new_job('kvm1', 'vm.clone', args)
    with Client(plain_cloud.config) as client:
        client.submit(job)
        with pytest.raises(JobFailed):
            client.wait(job['id'], JOB_TIMEOUT)
        # One more job through both workers: each has committed (and checkpointed) past the clone job.
        plain_cloud.run_noop('kvm1', 'after-secret')
    assert files_holding(plain_cloud.base, secret) == [], 'the job log still holds the hash'
    assert files_holding(plain_cloud.state_dir, secret) == [], "the host worker's record still holds the hash"
    files = [os.path.join(plain_cloud.state_dir, 'kvm1.sqlite')]
    if plain_cloud.postgres_dsn:
        # PostgreSQL keeps a dead row version in its files until VACUUM reuses the space (the README says so): the
        # job log's rows no longer hold it.
        with psycopg.connect(plain_cloud.postgres_dsn) as db:
            assert db.execute('SELECT count(*) FROM jobs WHERE args LIKE %s', ('%' + secret + '%',)).fetchone()[0] == 0
    else:
        files.append(os.path.join(plain_cloud.base, 'jobs.sqlite'))
    for path in files:
        assert oct(os.stat(path).st_mode & 0o777) == oct(0o600), path
    assert oct(os.stat(plain_cloud.state_dir).st_mode & 0o777) == oct(0o700)


def test_job_log_retention_prunes_ended_jobs(tmp_path):
    cloud = Cloud(str(tmp_path), curve=False)
    cloud.jobs_settings = {'retention_days': 2.0 / 86400}  # two seconds
    try:
        cloud.start()
        with Client(cloud.config) as client:
            ended = cloud.run_noop('kvm1', 'old')
            waiting = messages.new_job('lonely', 'noop', {}, ttl=60)
            client.submit(waiting)
            wait_until(lambda: not [j for j in client.recent(50) if j['id'] == ended['id']], 15, 'the ended job to be pruned')
            with pytest.raises(NotFoundError):
                client.status(ended['id'])
            assert client.status(waiting['id'])['state'] == 'dispatched', 'a job that has not ended is kept'
    finally:
        cloud.stop()
    assert 'pruned 1 job(s) that ended more than' in cloud.client_worker.output()


def test_host_worker_with_an_unknown_name_exits(plain_cloud, tmp_path):
    daemon = Daemon('maglica.host.worker', ['--config', plain_cloud.config_path, '--name', 'kvm2'], tmp_path / 'kvm2.log')
    wait_until(lambda: not daemon.alive(), 10, 'the host worker to exit')
    assert daemon.stop() == 2
    assert "host 'kvm2' is not in the configuration" in daemon.output()


# -- CURVE mode ------------------------------------------------------------------

def test_curve_noop_job_runs_once(curve_cloud):
    done = curve_cloud.run_noop('kvm1', 'curve')
    assert done['state'] == 'succeeded'
    assert curve_cloud.effects('kvm1') == ['%s curve' % done['id']]


def test_curve_unknown_key_gets_no_answer(curve_cloud):
    requester = transport.Requester(curve_cloud.config, 'stranger')
    try:
        with pytest.raises(DispatchError, match="no answer from the client worker at .* within 1s: check that it is running "
                                                "and accepts the key 'stranger'"):
            requester.request({'type': 'hosts'}, 1.0)
    finally:
        requester.close()
    assert 'refused CURVE key' in curve_cloud.client_worker.output()


def test_curve_unknown_key_whose_handshake_was_refused_before_the_send_gets_no_answer(curve_cloud):
    """The refusal came first: the REQ socket has no connection left to send on, and its send must not wait for ever."""
    refusals = curve_cloud.client_worker.output().count('refused CURVE key')
    requester = transport.Requester(curve_cloud.config, 'stranger')
    outcome = {}

    def ask():
        try:
            requester.request({'type': 'hosts'}, 1.0)
        except DispatchError as e:
            outcome['error'] = str(e)
    try:
        requester._open()  # pylint: disable=protected-access  # connected, not sent: the handshake runs now
        wait_until(lambda: curve_cloud.client_worker.output().count('refused CURVE key') > refusals, 10, 'the refusal')
        asking = threading.Thread(target=ask, daemon=True)  # a daemon: a send that blocks must not hang the suite
        asking.start()
        asking.join(10)
        assert not asking.is_alive(), 'the request still waits, 9 s after its 1 s timeout'
        assert 'no answer from the client worker' in outcome['error']
    finally:
        if not outcome:
            requester.sock = None  # its socket is blocked in send: left to the process's end
        requester.close()


def test_curve_plain_client_gets_no_answer(curve_cloud):
    with pytest.raises(AssertionError, match='did not answer'):
        raw_request(curve_cloud, [messages.encode({'type': 'hosts'})], timeout=1.0)


def host_request(cloud, host, message):
    requester = transport.Requester(cloud.config, host)
    try:
        return requester.request(message, 5.0)
    finally:
        requester.close()


def test_curve_host_key_cannot_submit(curve_cloud):
    job = messages.new_job('kvm1', 'noop', {'marker': 'forged'})
    reply = host_request(curve_cloud, 'kvm1', {'type': 'submit', 'job': job})
    assert reply == {'ok': False, 'error': 'kvm1 may not make submit requests'}
    assert host_request(curve_cloud, 'kvm1', {'type': 'list'})['ok'] is False
    with Client(curve_cloud.config) as client:
        with pytest.raises(NotFoundError):
            client.status(job['id'])


def test_curve_only_the_library_key_may_set_maintenance(curve_cloud):
    """A host's key cannot take its own host (or another) out of maintenance, nor put it in."""
    with Client(curve_cloud.config) as client:
        client.maintenance('kvm1', 'maintenance')
        try:
            for sender in ('kvm1', 'kvm10'):
                reply = host_request(curve_cloud, sender, {'type': 'maintenance', 'host': 'kvm1', 'state': 'active'})
                assert reply == {'ok': False, 'error': '%s may not make maintenance requests' % sender}
            assert client.maintenance('kvm1')['maintenance'] is True
        finally:
            client.maintenance('kvm1', 'active')


def test_curve_host_key_cannot_report_for_another_host(curve_cloud):
    job = messages.new_job('lonely', 'noop', {}, ttl=60)
    with Client(curve_cloud.config) as client:
        client.submit(job)
        forged = {'id': job['id'], 'status': 'succeeded', 'message': 'forged'}
        reply = host_request(curve_cloud, 'kvm1', {'type': 'report', 'host': 'lonely', 'results': [forged], 'acks': [job['id']]})
        assert reply == {'ok': False, 'error': 'the key of kvm1 may not report for lonely'}
        # Under its own name, kvm1 may report, but a job of another host is refused.
        reply = host_request(curve_cloud, 'kvm1', {'type': 'report', 'host': 'kvm1', 'results': [forged], 'acks': [job['id']]})
        assert reply['ok'] is True and reply['refused'] == [job['id']] and reply['taken'] == []
        state = client.status(job['id'])
        assert state['state'] in ('queued', 'dispatched') and state['message'] == '' and state['acked'] is None
        # The real owner's key may report it.
        reply = host_request(curve_cloud, 'lonely', {'type': 'report', 'host': 'lonely', 'results': [dict(forged, message='real')]})
        assert reply['taken'] == [job['id']]
        assert client.status(job['id'])['message'] == 'real'


def test_curve_only_host_keys_may_subscribe(curve_cloud):
    context = zmq.Context.instance()
    subs = {}
    try:
        for name in ('lonely', curve_keys.LIBRARY):
            sock = context.socket(zmq.SUB)
            sock.linger = 0
            transport.secure_client(sock, curve_cloud.config, name)
            sock.setsockopt(zmq.SUBSCRIBE, messages.topic('lonely'))
            sock.connect(curve_cloud.config.endpoint('pub'))
            subs[name] = sock
        job = messages.new_job('lonely', 'noop', {}, ttl=30)
        with Client(curve_cloud.config) as client:
            client.submit(job)
        received = []

        def got_job_twice():
            while subs['lonely'].poll(0):
                topic, frame = subs['lonely'].recv_multipart()
                if messages.decode(frame)['id'] == job['id']:
                    received.append(topic)
            return len(received) >= 2
        # Two publications reached the host key; the library key was offered the same ones.
        wait_until(got_job_twice, 10, 'the lonely key to receive the job twice')
        assert received[0] == messages.topic('lonely')
        assert not subs[curve_keys.LIBRARY].poll(0), 'the library key must not read jobs on PUB'
    finally:
        for sock in subs.values():
            sock.close()


def test_curve_host_key_cannot_read_another_hosts_jobs(curve_cloud):
    """PUB carries notices only (any key may subscribe to any topic); the job itself is fetched over REP,
    where a host's key gets only its own host's jobs."""
    context = zmq.Context.instance()
    sock = context.socket(zmq.SUB)
    sock.linger = 0
    try:
        transport.secure_client(sock, curve_cloud.config, 'kvm1')
        sock.setsockopt(zmq.SUBSCRIBE, messages.topic('lonely'))
        sock.connect(curve_cloud.config.endpoint('pub'))
        args = {'image': 'debian.original', 'hostname': 'web7', 'clone_mode': 'full', 'start': False, 'root_password_hash': '$6$s$h'}
        job = messages.new_job('lonely', 'vm.clone', args, ttl=30)
        with Client(curve_cloud.config) as client:
            client.submit(job)
            wait_until(lambda: client.status(job['id'])['attempts'] >= 3, 10, 'three publications of the job')
        seen = []
        while sock.poll(0):
            seen.append(messages.decode(sock.recv_multipart()[1]))
        assert seen and all(set(notice) == {'id', 'host', 'action'} for notice in seen), seen
        stealer = transport.Requester(curve_cloud.config, 'kvm1')
        for host in ('lonely', 'kvm1'):
            reply = stealer.request({'type': 'fetch', 'host': host, 'ids': [job['id']]}, 5)
            assert not reply.get('jobs'), 'kvm1 fetched the job of lonely: %r' % reply
        stealer.close()
    finally:
        sock.close()


def test_client_worker_refuses_an_empty_allow_list(tmp_path):
    key_dir = str(tmp_path / 'keys')
    curve_keys.create(key_dir, curve_keys.SERVER)
    pub, rep = free_ports(2)
    path = write_yaml(tmp_path / 'maglica.conf', {
        'hosts': ['kvm1'], 'client': {'host': '127.0.0.1', 'bind': '127.0.0.1', 'pub_port': pub, 'rep_port': rep},
        'security': {'curve': True, 'key_dir': key_dir}, 'jobs': {'database': str(tmp_path / 'jobs.sqlite')}})
    daemon = Daemon('maglica.client_worker.worker', ['--config', path], tmp_path / 'cw.log')
    wait_until(lambda: not daemon.alive(), 10, 'the client worker to exit')
    assert daemon.stop() == 2
    assert 'the CURVE allow-list %s/allowed is empty or missing' % key_dir in daemon.output()
    os.makedirs(os.path.join(key_dir, 'allowed'))
    daemon = Daemon('maglica.client_worker.worker', ['--config', path], tmp_path / 'cw2.log')
    wait_until(lambda: not daemon.alive(), 10, 'the client worker to exit')
    assert daemon.stop() == 2 and 'is empty or missing' in daemon.output(), 'an allowed/ directory without keys is empty too'


def test_client_worker_without_its_server_key(tmp_path):
    key_dir = str(tmp_path / 'keys')
    curve_keys.create(key_dir, curve_keys.LIBRARY)
    curve_keys.allow(key_dir, curve_keys.LIBRARY, curve_keys.public_path(key_dir, curve_keys.LIBRARY))
    pub, rep = free_ports(2)
    path = write_yaml(tmp_path / 'maglica.conf', {
        'hosts': ['kvm1'], 'client': {'host': '127.0.0.1', 'bind': '127.0.0.1', 'pub_port': pub, 'rep_port': rep},
        'security': {'curve': True, 'key_dir': key_dir}, 'jobs': {'database': str(tmp_path / 'jobs.sqlite')}})
    daemon = Daemon('maglica.client_worker.worker', ['--config', path], tmp_path / 'cw.log')
    wait_until(lambda: not daemon.alive(), 10, 'the client worker to exit')
    assert daemon.stop() == 2
    assert 'CURVE key %s is missing' % curve_keys.secret_path(key_dir, curve_keys.SERVER) in daemon.output()


def test_production_workers_refuse_the_test_action_noop(tmp_path):
    """`noop` is the test suite's (tests/noop_action.py): `python -m maglica.X`, as the roles run them, refuse it,
    the client worker on submit, the host worker when a client worker that knows it hands one over."""
    listed = subprocess.run([sys.executable, '-c', 'from maglica.host import actions\nfrom maglica.protocol import messages\n'
                             'print(" ".join(sorted(set(actions.ACTIONS) | set(messages.ACTIONS))))'],
                            env=worker_env(), stdout=subprocess.PIPE, check=True).stdout.decode().split()
    assert 'noop' not in listed and 'vm.clone' in listed
    pub, rep = free_ports(2)
    state_dir = str(tmp_path / 'state')
    path = write_yaml(tmp_path / 'maglica.conf', {
        'hosts': ['kvm1'], 'client': {'host': '127.0.0.1', 'bind': '127.0.0.1', 'pub_port': pub, 'rep_port': rep},
        'security': {'curve': False}, 'jobs': {'database': str(tmp_path / 'jobs.sqlite'), 'republish_interval': 0.2},
        'host_worker': {'state_dir': state_dir, 'heartbeat_interval': 0.5}})
    cfg = config.load(path)

    def answers():
        try:
            with Client(cfg, timeout=0.5) as client:
                return client.hosts()
        except DispatchError:
            return None
    job = messages.new_job('kvm1', 'noop', {'marker': 'must-not-run'})
    production = Daemon('maglica.client_worker.worker', ['--config', path], tmp_path / 'cw.log', production=True)
    try:
        wait_until(answers, START_TIMEOUT, 'the production client worker')
        requester = transport.Requester(cfg, curve_keys.LIBRARY)
        reply = requester.request({'type': 'submit', 'job': job}, 5)
        requester.close()
        assert reply['ok'] is False and 'job.action must be one of vm.clone' in reply['error'] and 'noop' not in reply['error']
    finally:
        production.stop()
    test_client = Daemon('maglica.client_worker.worker', ['--config', path], tmp_path / 'cw-test.log')
    host = Daemon('maglica.host.worker', ['--config', path, '--name', 'kvm1'], tmp_path / 'kvm1.log', production=True)
    try:
        wait_until(answers, START_TIMEOUT, 'the test client worker')
        with Client(cfg) as client:
            client.submit(job)
        # Its notice already names an action it does not know: dropped before the job is fetched.
        wait_until(lambda: 'dropped a message: notice.action must be one of vm.clone' in host.output(), JOB_TIMEOUT,
                   'the production host worker to drop the noop job')
        assert host.alive() and not os.path.exists(os.path.join(state_dir, 'kvm1.effects'))
    finally:
        host.stop()
        test_client.stop()


def clone_job(host, hostname, ttl=60):
    return messages.new_job(host, 'vm.clone', {'image': 'debian.original', 'hostname': hostname, 'clone_mode': 'linked',
                                               'start': False}, ttl=ttl)


def test_two_clones_of_one_hostname_get_one_job(plain_cloud):
    """A second clone of a hostname whose clone is in flight, wherever placement put it, gets the first job back."""
    first, second, elsewhere = clone_job('lonely', 'twice1'), clone_job('lonely', 'twice1'), clone_job('kvm10', 'twice1')
    with Client(plain_cloud.config) as client:
        assert client.submit(first)['id'] == first['id']
        assert client.submit(second)['id'] == first['id']
        assert client.submit(elsewhere)['id'] == first['id']
        assert client.submit(first)['id'] == first['id']  # the first job's own resend is still itself
        ids = [j['id'] for j in client.recent(100)]
    assert first['id'] in ids and second['id'] not in ids and elsewhere['id'] not in ids


def test_an_image_from_a_vm_claims_its_name_as_a_clone_does(plain_cloud):
    """image.from_vm makes a domain name too: one job at a time makes it, whether an image or a clone."""
    def image_job(vm):
        return messages.new_job('lonely', 'image.from_vm', {'image': 'twice3', 'vm': vm}, ttl=60)
    first = image_job('web.test')
    with Client(plain_cloud.config) as client:
        assert client.submit(first)['id'] == first['id']
        assert client.submit(image_job('other.test'))['id'] == first['id']
        assert client.submit(clone_job('kvm10', 'twice3'))['id'] == first['id']


def test_hostname_claim_is_released_when_the_job_ends(plain_cloud):
    first = clone_job('lonely', 'twice2', ttl=1)
    with Client(plain_cloud.config) as client:
        client.submit(first)
        with pytest.raises(JobFailed):
            client.wait(first['id'], 10)
        later = clone_job('lonely', 'twice2')
        assert client.submit(later)['id'] == later['id']


# -- slot reservations (placement, issue 13) -------------------------------------------------------

def open_slots_on(client, host):
    return [slot['job_id'] for slot in client.slots() if slot['host'] == host]


def test_clone_job_holds_a_slot_until_it_ends(plain_cloud):
    job = messages.new_job('lonely', 'vm.clone', {'image': 'debian.original', 'hostname': 'slot1', 'clone_mode': 'full',
                                                  'start': False, 'spread_group': 'web'}, ttl=1)
    with Client(plain_cloud.config) as client:
        client.submit(job, seen=open_slots_on(client, 'lonely'))
        mine = [slot for slot in client.slots() if slot['job_id'] == job['id']]
        assert mine == [{'host': 'lonely', 'job_id': job['id'], 'hostname': 'slot1', 'image': 'debian.original',
                         'start': False, 'clone_mode': 'full', 'spread_group': 'web'}]
        with pytest.raises(JobFailed, match='expired'):
            client.wait(job['id'], 10)
        assert job['id'] not in open_slots_on(client, 'lonely'), 'an ended job holds no slot'


def test_a_placement_that_missed_a_reservation_is_refused_as_stale(plain_cloud):
    with Client(plain_cloud.config) as client:
        seen = open_slots_on(client, 'lonely')
        first, second = clone_job('lonely', 'stale1', ttl=2), clone_job('lonely', 'stale2', ttl=2)
        client.submit(first, seen=seen)
        with pytest.raises(StalePlacement, match='the placement on lonely is stale: 1 other clone'):
            client.submit(second, seen=seen)
        assert client.submit(first, seen=seen)['id'] == first['id'], 'a resent job is answered as the first time'
        assert second['id'] not in [j['id'] for j in client.recent(50)], 'a refused job is not logged'
        assert client.submit(second, seen=seen + [first['id']])['id'] == second['id'], 'planned with it counted: taken'


def test_simultaneous_placements_on_one_host_get_one_slot(plain_cloud):
    """Many libraries that planned from the same reservations submit at once: exactly one gets the host."""
    with Client(plain_cloud.config) as client:
        seen = open_slots_on(client, 'lonely')
    outcomes = []
    barrier = threading.Barrier(6)

    def submit(n):
        job = clone_job('lonely', 'race%d' % n, ttl=2)
        with Client(plain_cloud.config) as own:
            barrier.wait()
            try:
                own.submit(job, seen=seen)
                outcomes.append('taken')
            except StalePlacement:
                outcomes.append('stale')

    threads = [threading.Thread(target=submit, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(outcomes) == ['stale'] * 5 + ['taken']


# -- fetch replies bounded by the frame (issue 18 item 9) ------------------------------------------

def big_clone_job(host, hostname, ttl=60):
    """A clone whose cloud-init user-data is as big as a job may carry (64 KiB)."""
    header = '#cloud-config\nwrite_files:\n  - path: /etc/big\n    content: '
    user_data = header + 'x' * (65536 - len(header) - 1) + '\n'
    return messages.new_job(host, 'vm.clone', {'image': 'debian.original', 'hostname': hostname, 'clone_mode': 'linked',
                                               'start': False, 'cloud_init_user_data': user_data}, ttl=ttl)


def test_a_fetch_of_five_big_jobs_is_answered_in_replies_that_fit(plain_cloud):
    """Five jobs of 64 KiB of user-data each are more than one frame: the reply holds those that fit, and says
    nothing of the others, which the host worker asks for again."""
    jobs = [big_clone_job('lonely', 'bigfetch%d' % n) for n in range(5)]
    with Client(plain_cloud.config) as client:
        for job in jobs:
            client.submit(job)
    wanted = sorted(job['id'] for job in jobs)
    got = {}
    for _round in range(5):
        reply = host_request(plain_cloud, 'lonely', {'type': 'fetch', 'host': 'lonely', 'ids': sorted(set(wanted) - set(got))})
        assert reply['ok'], reply
        assert reply['jobs'] and not reply['gone'], 'each reply carries at least one job, and none is gone'
        got.update((job['id'], job) for job in reply['jobs'])
        if len(got) == len(wanted):
            break
    assert sorted(got) == wanted
    assert all(len(got[job['id']]['args']['cloud_init_user_data']) == 65536 for job in jobs)


def test_a_host_worker_gets_five_big_jobs_fetched_together(plain_cloud):
    """A host worker with notices of the five asks for them in one fetch: it records and starts each (the rest of a
    reply that could not hold them all are asked for at once), instead of being refused until they expire."""
    jobs = [big_clone_job('lonely', 'bigrun%d' % n) for n in range(5)]
    with Client(plain_cloud.config) as client:
        for job in jobs:
            client.submit(job)
    worker = host_worker.HostWorker(plain_cloud.config, 'lonely')
    started = []
    # Running the clones is not what is tested (there is no libvirtd for `lonely`): the started jobs are collected.
    worker.start = lambda job, reconcile=False: started.append(job['id'])
    try:
        worker.to_fetch.update(job['id'] for job in jobs)
        for _round in range(5):
            worker.fetch()
            if not worker.to_fetch:
                break
        assert not worker.to_fetch, 'still to fetch: %s' % sorted(worker.to_fetch)
        assert sorted(started) == sorted(job['id'] for job in jobs)
        assert all(worker.record.get(job['id']) is not None for job in jobs)
    finally:
        worker.pool.shutdown(wait=True)
        worker.requester.close()
        worker.intents.close()
        worker.record.close()
        worker.sub.close()
        worker.context.term()


# -- an import claims its name as a clone does (issue 18 item 7) -------------------------------------

def import_job(host, name, ttl=60):
    return messages.new_job(host, 'image.import', {'name': name, 'checksum': 'sha256:' + '0' * 64,
                                                   'url': 'http://127.0.0.1:9/%s.qcow2' % name}, ttl=ttl)


def test_two_imports_of_one_name_on_one_host_get_one_job(plain_cloud):
    """A re-run of an import (after a wait timeout) while the first job still runs gets the first job back: never a
    second job that would make the same disk. The same name on another host is another job."""
    first, again, other_host = import_job('lonely', 'imp1'), import_job('lonely', 'imp1'), import_job('kvm10', 'imp1')
    with Client(plain_cloud.config) as client:
        assert client.submit(first)['id'] == first['id']
        assert client.submit(again)['id'] == first['id']
        assert client.submit(other_host)['id'] == other_host['id'], 'an image is imported on several hosts at once'
        ids = [j['id'] for j in client.recent(100)]
    assert first['id'] in ids and again['id'] not in ids


def test_an_import_and_a_clone_of_one_name_get_one_job(plain_cloud):
    """An image import and a clone make a domain and a disk of the same name: whichever came first holds it."""
    imported, cloned = import_job('lonely', 'imp2'), clone_job('kvm10', 'imp2')
    clone_first, import_later = clone_job('kvm10', 'imp3'), import_job('lonely', 'imp3')
    with Client(plain_cloud.config) as client:
        assert client.submit(imported)['id'] == imported['id']
        assert client.submit(cloned)['id'] == imported['id']
        assert client.submit(clone_first)['id'] == clone_first['id']
        assert client.submit(import_later)['id'] == clone_first['id']
        ids = [j['id'] for j in client.recent(100)]
    assert cloned['id'] not in ids and import_later['id'] not in ids


def test_an_import_claim_is_released_when_the_job_ends(plain_cloud):
    first = import_job('lonely', 'imp4', ttl=1)
    with Client(plain_cloud.config) as client:
        client.submit(first)
        with pytest.raises(JobFailed):
            client.wait(first['id'], 10)
        later = clone_job('lonely', 'imp4')
        assert client.submit(later)['id'] == later['id']


def import_config(cloud):
    """The cloud's configuration with `lonely` on libvirt's test driver, where no domain is called imp*."""
    return config.load(cloud.config_path, {'hosts': [{'name': name, 'uri': 'test:///default'} if name == 'lonely'
                                                     else {'name': name} for name in HOSTS]})


def test_import_image_waits_for_the_import_of_its_name_under_way(plain_cloud):
    """A re-run of maglica_image while its first job runs waits for that job, not a second one."""
    first = import_job('lonely', 'imp5', ttl=2)
    with Client(plain_cloud.config) as client:
        client.submit(first)
    with pytest.raises(JobFailed) as failed:
        image_import.import_image(import_config(plain_cloud), 'imp5', first['args']['url'], first['args']['checksum'],
                                  targets=['lonely'], timeout=10)
    assert failed.value.job['jobs']['lonely']['id'] == first['id'], 'the first job expires: no host worker for lonely'


def test_import_image_of_a_name_a_clone_holds_is_refused(plain_cloud):
    # On lonely, which has no host worker: the clone stays in flight (kvm10's worker would end it at once, failed,
    # and free the name before the import is submitted).
    held = clone_job('lonely', 'imp6')
    with Client(plain_cloud.config) as client:
        client.submit(held)
    with pytest.raises(ConflictError, match='imp6 is being made on lonely by job %s \\(vm.clone\\): wait for it' % held['id']):
        image_import.import_image(import_config(plain_cloud), 'imp6', 'http://127.0.0.1:9/imp6.qcow2', 'sha256:' + '0' * 64,
                                  targets=['lonely'], timeout=2)


# -- maintenance (issue 19) ------------------------------------------------------------------------

def test_a_host_in_maintenance_refuses_clones_and_says_so_in_slots_and_hosts(plain_cloud):
    with Client(plain_cloud.config) as client:
        assert client.maintenance('kvm10') == {'host': 'kvm10', 'maintenance': False, 'since': None, 'changed': False}
        flag = client.maintenance('kvm10', 'maintenance')
        try:
            assert flag['maintenance'] is True and flag['changed'] is True and flag['since'] > 0
            assert client.maintenance('kvm10', 'maintenance')['changed'] is False, 'set twice: changed once'
            refused = clone_job('kvm10', 'maint1')
            with pytest.raises(ConflictError, match=r'^host kvm10 is in maintenance: it takes no new VMs \(maglica host '
                                                    r'activate kvm10 brings it back\)$'):
                client.submit(refused, seen=[])
            assert refused['id'] not in [j['id'] for j in client.recent(100)], 'a refused clone is not logged'
            reservations = client.slots()
            assert reservations.maintenance == ['kvm10'] and refused['id'] not in [s['job_id'] for s in reservations]
            assert {h['host']: h['maintenance'] for h in client.hosts()} == {'kvm1': False, 'kvm10': True, 'lonely': False}
            # A migration to it is refused too; one from it (the drain's) is taken.
            inbound = messages.new_job('kvm1', 'vm.migrate', {'name': 'maint2', 'destination': 'kvm10', 'live': True}, ttl=1)
            with pytest.raises(ConflictError, match=r'^host kvm10 is in maintenance'):
                client.submit(inbound)
            # (From lonely, which has no host worker to run it, put in maintenance for this.)
            client.maintenance('lonely', 'maintenance')
            outbound = messages.new_job('lonely', 'vm.migrate', {'name': 'maint2', 'destination': 'kvm1', 'live': False}, ttl=1)
            try:
                assert client.submit(outbound)['id'] == outbound['id']
            finally:
                client.maintenance('lonely', 'active')
            # Other work on the host goes on (a drain needs its jobs), and other hosts take clones.
            assert client.wait(client.submit(messages.new_job('kvm10', 'noop', {'marker': 'maint'}))['id'], JOB_TIMEOUT)
            elsewhere = clone_job('lonely', 'maint1', ttl=1)
            assert client.submit(elsewhere, seen=open_slots_on(client, 'lonely'))['id'] == elsewhere['id']
        finally:
            assert client.maintenance('kvm10', 'active')['changed'] is True
        assert client.maintenance('kvm10', 'active') == {'host': 'kvm10', 'maintenance': False, 'since': None, 'changed': False}
        assert client.slots().maintenance == []
        with pytest.raises(NotFoundError, match='host nowhere is not in the client worker configuration'):
            client.maintenance('nowhere', 'maintenance')


def test_a_clone_racing_a_maintenance_request_is_refused_or_logged_before_it(plain_cloud):
    """Clones to one host and the request that puts it in maintenance, all at once, several rounds: a clone is either
    refused or logged before the flag was set - never logged after it (the check and the slot are one transaction)."""
    outcomes = []
    for round_ in range(4):
        barrier = threading.Barrier(7)
        accepted, refused = [], []

        def submit(n):
            job = clone_job('lonely', 'race-m%d-%d' % (round_, n), ttl=1)
            with Client(plain_cloud.config) as own:
                barrier.wait()
                try:
                    accepted.append(own.submit(job)['id'])
                except ConflictError as e:
                    assert 'lonely is in maintenance' in str(e)
                    refused.append(job['id'])

        def maintain():
            with Client(plain_cloud.config) as own:
                barrier.wait()
                own.maintenance('lonely', 'maintenance')

        threads = [threading.Thread(target=submit, args=(n,)) for n in range(6)] + [threading.Thread(target=maintain)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        with Client(plain_cloud.config) as client:
            since = client.maintenance('lonely')['since']
            logged = {j['id']: j for j in client.recent(200)}
            client.maintenance('lonely', 'active')
        assert len(accepted) + len(refused) == 6
        assert all(logged[i]['created'] <= since for i in accepted), 'a clone was logged after the host went into maintenance'
        assert not any(i in logged for i in refused)
        outcomes.append((len(accepted), len(refused)))
    assert sum(r for _a, r in outcomes) > 0, outcomes
