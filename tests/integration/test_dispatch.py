# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Reliable and secure dispatch, with real workers and real ZeroMQ sockets.

Most tests use noop jobs (no libvirt needed) whose marker leaves one line per
run in the host's effects file: a job run twice shows as two lines.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3

import pytest

from maglica_testbed import Cloud, run_playbook, wait_until
from maglica.controller import vm as maglica_vm
from maglica.protocol import messages
from maglica.protocol import transport
from maglica.errors import DispatchError

PLAYBOOKS = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'playbooks')
HOSTS = {'kvm1': '127.0.0.1', 'kvm10': '127.0.0.1', 'kvm2': '127.0.0.1'}


@pytest.fixture(scope='module', autouse=True)
def leaves_no_vms(cloud):
    """The clones the tests on the shared cloud make go at the end: the worker's next test files share its testbed."""
    yield
    for name in ('async1.test', 'killed1.test'):
        maglica_vm.ensure(cloud.config, name, state='absent', force=True)


@pytest.fixture
def dispatch(tmp_path):
    port = int(os.environ.get('MAGLICA_TEST_PORT_BASE', '15555')) + 10
    cloud = Cloud(None, str(tmp_path), hosts=HOSTS, port=port)
    try:
        yield cloud
    finally:
        cloud.stop()


def effect_ids(cloud, host):
    return [line.split()[0] for line in cloud.effects(host)]


def test_late_joining_host_worker_still_runs_its_job(dispatch):
    dispatch.start(host_workers=False)
    job = dispatch.submit('kvm2', 'noop', {'marker': 'late'})
    wait_until(lambda: dispatch.job(job['id'])['attempts'] >= 2, 10, 'the job to be published twice')
    assert dispatch.job(job['id'])['state'] == 'dispatched'
    dispatch.start_host_worker('kvm2')
    dispatch.wait_job(job['id'], 'succeeded', 30)
    assert effect_ids(dispatch, 'kvm2') == [job['id']]


def test_job_for_a_host_that_never_shows_up_expires(dispatch):
    dispatch.start(host_workers=False)
    job = dispatch.submit('kvm2', 'noop', {'marker': 'never'}, ttl=2)
    expired = dispatch.wait_job(job['id'], 'expired', 20)
    assert 'no host worker for kvm2 acknowledged the job within its TTL' in expired['message']
    assert expired['attempts'] >= 2


def test_host_worker_killed_mid_job_runs_it_exactly_once(dispatch):
    dispatch.start()
    job = dispatch.submit('kvm1', 'noop', {'marker': 'mid', 'delay': 3})
    dispatch.wait_job(job['id'], 'running', 20)
    dispatch.stop_host_worker('kvm1', signal.SIGKILL)
    assert effect_ids(dispatch, 'kvm1') == []
    dispatch.start_host_worker('kvm1')
    dispatch.wait_job(job['id'], 'succeeded', 30)
    assert effect_ids(dispatch, 'kvm1') == [job['id']]


def test_host_worker_killed_after_the_effect_does_not_repeat_it(dispatch):
    """Killed between the side effect and its record: reconciliation finds the effect and does not repeat it."""
    dispatch.start()
    dispatch.stop_host_worker('kvm1', signal.SIGKILL)
    job = dispatch.submit('kvm1', 'noop', {'marker': 'after'})
    # Simulate the crash window for real: the host worker's record says running, the effect is written.
    state_dir = dispatch.data['host_worker']['state_dir']
    with open(os.path.join(state_dir, 'kvm1.effects'), 'a') as handle:
        handle.write('%s after\n' % job['id'])
    record = sqlite3.connect(os.path.join(state_dir, 'kvm1.sqlite'))
    with record:
        record.execute("INSERT INTO jobs (id, job, state, received) VALUES (?, ?, 'running', 0)",
                       (job['id'], messages.encode({'id': job['id'], 'host': 'kvm1', 'action': 'noop',
                                                    'args': {'marker': 'after'}}).decode()))
    record.close()
    dispatch.start_host_worker('kvm1')
    done = dispatch.wait_job(job['id'], 'succeeded', 30)
    assert done['data'] == {'reconciled': True}
    assert effect_ids(dispatch, 'kvm1') == [job['id']]


def test_client_worker_restarted_with_jobs_in_flight_loses_nothing(dispatch):
    dispatch.start()
    jobs = [dispatch.submit(host, 'noop', {'marker': 'inflight', 'delay': 2}) for host in ('kvm1', 'kvm2') for _i in range(5)]
    # Killed once the host workers have taken (recorded and acknowledged) every job.
    wait_until(lambda: all(dispatch.job(j['id'])['state'] in ('running', 'succeeded') for j in jobs), 20, 'the jobs to be taken')
    dispatch.kill_client_worker()
    # While it is down, the host workers finish and keep their results in the outbox.
    wait_until(lambda: len(dispatch.effects('kvm1')) == 5 and len(dispatch.effects('kvm2')) == 5, 30, 'the jobs to run')
    dispatch.start_client_worker()
    for job in jobs:
        dispatch.wait_job(job['id'], 'succeeded', 30)
    assert sorted(effect_ids(dispatch, 'kvm1') + effect_ids(dispatch, 'kvm2')) == sorted(j['id'] for j in jobs)


def test_duplicate_delivery_is_answered_from_the_record(dispatch):
    dispatch.start()
    job = dispatch.submit('kvm1', 'noop', {'marker': 'dup'})
    dispatch.wait_job(job['id'], 'succeeded', 20)
    # As if the result had been lost: the client worker's log goes back to dispatched and publishes it again.
    log = sqlite3.connect(dispatch.data['jobs']['database'])
    with log:
        log.execute("UPDATE jobs SET state = 'dispatched', published = NULL, acked = NULL WHERE id = ?", (job['id'],))
    log.close()
    wait_until(lambda: dispatch.job(job['id'])['attempts'] >= 2, 10, 'the job to be published again')
    dispatch.wait_job(job['id'], 'succeeded', 20)
    assert effect_ids(dispatch, 'kvm1') == [job['id']]


def test_topics_do_not_leak_between_prefix_names(dispatch):
    dispatch.start()
    jobs = {host: [dispatch.submit(host, 'noop', {'marker': host}) for _i in range(3)] for host in ('kvm1', 'kvm10')}
    for host in jobs:
        for job in jobs[host]:
            dispatch.wait_job(job['id'], 'succeeded', 20)
    assert sorted(effect_ids(dispatch, 'kvm1')) == sorted(j['id'] for j in jobs['kvm1'])
    assert sorted(effect_ids(dispatch, 'kvm10')) == sorted(j['id'] for j in jobs['kvm10'])


def test_unauthenticated_peers_get_nothing_processed(dispatch):
    dispatch.start()
    zmq = transport.zmq()
    context = zmq.Context()
    before = len(dispatch.jobs())
    frame = messages.encode({'type': 'submit', 'job': messages.new_job('kvm1', 'noop', {'marker': 'intruder'})})
    try:
        # Plain text REQ against the CURVE server: no answer, nothing logged.
        plain = context.socket(zmq.REQ)
        plain.linger = 0
        plain.connect(dispatch.config.endpoint('rep'))
        plain.send(frame)
        assert plain.poll(1500) == 0
        # A CURVE client whose key is not on the allow-list: no answer either.
        from maglica.protocol import curve
        curve.create(dispatch.key_dir, 'stranger')
        stranger = transport.Requester(dispatch.config, 'stranger', context=context)
        with pytest.raises(DispatchError):
            stranger.request({'type': 'list'}, 1.5)
        stranger.close()
        # A plain SUB sees no job published.
        sub = context.socket(zmq.SUB)
        sub.linger = 0
        sub.setsockopt(zmq.SUBSCRIBE, b'')
        sub.connect(dispatch.config.endpoint('pub'))
        job = dispatch.submit('kvm1', 'noop', {'marker': 'watched'})
        dispatch.wait_job(job['id'], 'succeeded', 20)
        assert sub.poll(500) == 0
        # A host's key may not submit.
        host_key = transport.Requester(dispatch.config, 'kvm1', context=context)
        reply = host_key.request({'type': 'submit', 'job': messages.new_job('kvm1', 'noop', {'marker': 'host'})}, 3)
        assert reply['ok'] is False and 'kvm1 may not make submit requests' in reply['error']
        host_key.close()
        plain.close()
        sub.close()
    finally:
        context.destroy(linger=0)
    assert len(dispatch.jobs()) == before + 1
    assert [line.split()[1] for line in dispatch.effects('kvm1')] == ['watched']


def test_fuzzed_frames_get_error_replies_and_the_worker_stays_up(dispatch):
    dispatch.start()
    pid = dispatch.client_worker.pid
    valid = messages.encode({'type': 'submit', 'job': messages.new_job('kvm1', 'noop', {})})
    rng = random.Random(11)
    library = transport.Requester(dispatch.config, 'library')
    zmq = transport.zmq()
    errors = 0
    for index in range(300):
        data = bytearray(valid)
        for _flip in range(rng.randint(1, 8)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        if index % 50 == 0:
            data = bytes(messages.MAX_FRAME_BYTES + 1)
        library.sock = library.sock or library.context.socket(zmq.REQ)
        reply = _raw_request(library, bytes(data))
        errors += reply.get('ok') is False
    library.close()
    assert dispatch.client_worker.poll() is None and dispatch.client_worker.pid == pid
    assert errors > 250
    job = dispatch.submit('kvm1', 'noop', {'marker': 'after-fuzz'})
    dispatch.wait_job(job['id'], 'succeeded', 20)


def _raw_request(requester, frame):
    if requester.sock is not None:
        requester.close()
    requester._open()  # pylint: disable=protected-access
    requester.sock.send(frame)
    assert requester.sock.poll(5000), 'no reply to a fuzzed frame'
    return messages.decode(requester.sock.recv())


def test_job_info_and_wait_false_give_the_async_pattern(cloud):
    run = run_playbook(os.path.join(PLAYBOOKS, 'vm_clone.yml'),
                       {'maglica_config': cloud.path, 'image': 'rhel.original', 'hostname': 'async1.test',
                        'clone_mode': 'linked', 'start': False, 'wait': False})
    assert run.rc == 0, run
    job_id = run.last['job_id']
    assert run.last['changed'] is True and len(job_id) == 32 and run.last['job']['state'] in ('queued', 'dispatched', 'running')
    cloud.wait_job(job_id, 'succeeded', 300)
    info = run_playbook(os.path.join(PLAYBOOKS, 'job_info.yml'), {'maglica_config': cloud.path, 'job_id': job_id})
    assert info.rc == 0, info
    assert info.last['jobs'][0]['id'] == job_id and info.last['jobs'][0]['state'] == 'succeeded'
    listing = run_playbook(os.path.join(PLAYBOOKS, 'job_info.yml'), {'maglica_config': cloud.path, 'limit': 3})
    assert job_id in [j['id'] for j in listing.last['jobs']]
    unknown = run_playbook(os.path.join(PLAYBOOKS, 'job_info.yml'), {'maglica_config': cloud.path, 'job_id': 'f' * 32})
    assert unknown.rc != 0 and 'no job with id ffff' in unknown.failed[0]['msg']


def test_clone_interrupted_by_a_killed_host_worker_is_rolled_back_and_retried(cloud, testbed):
    job = cloud.submit('host2', 'vm.clone', {'image': 'rhel.original', 'hostname': 'killed1.test',
                                             'clone_mode': 'full', 'start': False})
    wait_until(lambda: 'killed1.test' in testbed.domains('host2'), 120, 'the clone domain to be defined')
    cloud.stop_host_worker('host2', signal.SIGKILL)
    cloud.start_host_worker('host2')
    done = cloud.wait_job(job['id'], 'succeeded', 300)
    assert done['data']['hostname'] == 'killed1.test'
    assert sorted(f for f in testbed.host_files('host2') if f.startswith('killed1.test')) == ['killed1.test.qcow2']
