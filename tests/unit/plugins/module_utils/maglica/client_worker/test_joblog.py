# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""joblog.py and joblog_postgres.py: the client worker's durable job log and its state machine, on both stores
(the `log` fixture); tests of what only one store has open their own."""

from __future__ import annotations

import sqlite3

import pytest

from maglica.protocol import messages
from maglica.client_worker.joblog import JobLog
from maglica.client_worker.joblog_postgres import PostgresJobLog

T0 = 1700000000.0


@pytest.fixture
def log(tmp_path, joblog_backend, request):
    if joblog_backend == 'postgresql':
        job_log = PostgresJobLog(request.getfixturevalue('postgres_dsn'), 'cw1', 60.0)
        assert job_log.take_lease()
    else:
        job_log = JobLog(str(tmp_path / 'sub' / 'jobs.sqlite'))
    yield job_log
    job_log.close()


@pytest.fixture
def sqlite_log(tmp_path):
    job_log = JobLog(str(tmp_path / 'sub' / 'jobs.sqlite'))
    yield job_log
    job_log.close()


def job(host='kvm1', ttl=None, marker='m'):
    return messages.new_job(host, 'noop', {'marker': marker}, ttl=ttl)


def test_add_is_idempotent_on_the_id(log):
    j = job()
    row, created = log.add(j, 60, now=T0)
    assert created
    assert row['state'] == 'queued' and row['host'] == 'kvm1' and row['action'] == 'noop'
    assert row['args'] == {'marker': 'm'} and row['data'] == {} and row['attempts'] == 0
    assert row['expires'] == T0 + 60
    again, created_again = log.add(dict(j, args={'marker': 'other'}), 60, now=T0 + 5)
    assert not created_again
    assert again == row, 'a resubmitted id changes nothing'
    assert len(log.recent()) == 1


def test_job_ttl_wins_over_the_default(log):
    row, _created = log.add(job(ttl=7), 300, now=T0)
    assert row['expires'] == T0 + 7


def test_states_queued_dispatched_running_succeeded(log):
    j = job()
    log.add(j, 60, now=T0)
    log.mark_published([j['id']], now=T0 + 1)
    row = log.get(j['id'])
    assert (row['state'], row['attempts'], row['published']) == ('dispatched', 1, T0 + 1)
    log.mark_published([j['id']], now=T0 + 3)
    assert (log.get(j['id'])['state'], log.get(j['id'])['attempts']) == ('dispatched', 2)
    log.acknowledge('kvm1', [j['id']], now=T0 + 4)
    row = log.get(j['id'])
    assert (row['state'], row['acked']) == ('running', T0 + 4)
    log.mark_published([j['id']], now=T0 + 5)
    assert log.get(j['id'])['state'] == 'running', 'publishing again never moves a job back'
    assert log.finish('kvm1', {'id': j['id'], 'status': 'succeeded', 'message': 'ok', 'data': {'disks': ['a']}}, now=T0 + 6)
    row = log.get(j['id'])
    assert (row['state'], row['message'], row['data'], row['finished']) == ('succeeded', 'ok', {'disks': ['a']}, T0 + 6)


def test_failed_result(log):
    j = job()
    log.add(j, 60, now=T0)
    assert log.finish('kvm1', {'id': j['id'], 'status': 'failed', 'message': 'boom'}, now=T0 + 1)
    row = log.get(j['id'])
    assert (row['state'], row['message'], row['acked']) == ('failed', 'boom', T0 + 1), 'a result implies the ack'


def test_acknowledge_counts_only_for_the_jobs_host(log):
    j = job(host='kvm1')
    log.add(j, 60, now=T0)
    log.mark_published([j['id']], now=T0)
    log.acknowledge('kvm10', [j['id']], now=T0 + 1)
    assert log.get(j['id'])['state'] == 'dispatched'
    assert log.get(j['id'])['acked'] is None
    log.acknowledge('kvm1', [j['id'], messages.new_job_id()], now=T0 + 1)
    assert log.get(j['id'])['state'] == 'running'


def test_finish_is_refused_for_another_hosts_job(log):
    j = job(host='kvm1')
    log.add(j, 60, now=T0)
    assert not log.finish('kvm2', {'id': j['id'], 'status': 'succeeded'}, now=T0 + 1)
    assert log.get(j['id'])['state'] == 'queued'
    assert not log.finish('kvm1', {'id': messages.new_job_id(), 'status': 'succeeded'}), 'an unknown id is refused'


def test_expire_after_the_ttl_with_a_message(log):
    late, fresh, acked = job(ttl=10), job(ttl=100), job(ttl=10)
    for j in (late, fresh, acked):
        log.add(j, 60, now=T0)
    log.mark_published([late['id'], fresh['id'], acked['id']], now=T0 + 1)
    log.mark_published([late['id']], now=T0 + 5)
    log.acknowledge('kvm1', [acked['id']], now=T0 + 2)
    assert log.expire(now=T0 + 9.9) == 0
    assert log.expire(now=T0 + 10) == 1
    row = log.get(late['id'])
    assert row['state'] == 'expired' and row['finished'] == T0 + 10
    assert row['message'] == 'no host worker for kvm1 acknowledged the job within its TTL (2 publications)'
    assert log.get(fresh['id'])['state'] == 'dispatched'
    assert log.get(acked['id'])['state'] == 'running', 'an acknowledged job never expires'
    assert log.expire(now=T0 + 11) == 0, 'expiring twice changes nothing'


def test_due_for_publish_respects_the_interval(log):
    first, second = job(), job()
    log.add(first, 60, now=T0)
    log.add(second, 60, now=T0 + 1)
    assert [r['id'] for r in log.due_for_publish(2.0, now=T0 + 1)] == [first['id'], second['id']], 'never published: due, oldest first'
    log.mark_published([first['id'], second['id']], now=T0 + 2)
    assert log.due_for_publish(2.0, now=T0 + 3.9) == []
    assert [r['id'] for r in log.due_for_publish(2.0, now=T0 + 4)] == [first['id'], second['id']]
    log.acknowledge('kvm1', [first['id']], now=T0 + 4)
    assert [r['id'] for r in log.due_for_publish(2.0, now=T0 + 5)] == [second['id']], 'acknowledged jobs are not published again'
    assert log.due_for_publish(2.0, now=T0 + 61) == [], 'jobs past their TTL are not published again'


def test_recent_is_newest_first_with_a_host_filter(log):
    jobs = [job(host='kvm1'), job(host='kvm2'), job(host='kvm1'), job(host='kvm1')]
    for index, j in enumerate(jobs[:3]):
        log.add(j, 60, now=T0 + index)
    log.add(jobs[3], 60, now=T0 + 2)  # same second as jobs[2]: insertion order breaks the tie
    assert [r['id'] for r in log.recent()] == [jobs[3]['id'], jobs[2]['id'], jobs[1]['id'], jobs[0]['id']]
    assert [r['id'] for r in log.recent(limit=2)] == [jobs[3]['id'], jobs[2]['id']]
    assert [r['id'] for r in log.recent(host='kvm1')] == [jobs[3]['id'], jobs[2]['id'], jobs[0]['id']]
    assert log.recent(host='nohost') == []
    assert log.get(messages.new_job_id()) is None


def test_a_second_log_on_the_same_file_sees_the_jobs(tmp_path):
    path = str(tmp_path / 'jobs.sqlite')
    writer = JobLog(path)
    j = job()
    writer.add(j, 60, now=T0)
    writer.mark_published([j['id']], now=T0 + 1)
    reader = JobLog(path)
    try:
        assert reader.get(j['id'])['state'] == 'dispatched'
        writer.acknowledge('kvm1', [j['id']])
        assert reader.get(j['id'])['state'] == 'running'
    finally:
        writer.close()
        reader.close()
    reopened = JobLog(path)
    try:
        assert reopened.get(j['id'])['state'] == 'running', 'the job survives closing every handle'
    finally:
        reopened.close()


def test_wal_mode_is_on(tmp_path, sqlite_log):
    log = sqlite_log
    assert log.db.execute('PRAGMA journal_mode').fetchone()[0] == 'wal'
    assert log.db.execute('PRAGMA synchronous').fetchone()[0] == 2, 'FULL'
    path = str(tmp_path / 'jobs.sqlite')
    JobLog(path).close()
    other = sqlite3.connect(path)
    try:
        assert other.execute('PRAGMA journal_mode').fetchone()[0] == 'wal', 'WAL is stored in the file'
    finally:
        other.close()


def test_a_claim_is_held_by_one_open_job_and_released_when_it_ends(log):
    first, second, third = job(marker='a'), job(marker='b', ttl=5), job(marker='c')
    log.add(first, 60, now=T0)
    assert log.claim('hostname', 'web1', 'kvm1', first['id'], now=T0) == first['id']
    assert log.claim('hostname', 'web1', 'kvm2', second['id'], now=T0) == first['id']
    assert log.claims('hostname') == [('hostname', 'web1', 'kvm1', first['id'])]
    log.finish('kvm1', {'id': first['id'], 'status': 'failed', 'message': 'x'}, now=T0 + 1)
    assert log.claims() == []
    log.add(second, 60, now=T0 + 2)
    assert log.claim('hostname', 'web1', 'kvm2', second['id'], now=T0 + 2) == second['id']
    # Slots (for placement) live in the same table: several per host, keyed by their job.
    log.add(third, 60, now=T0 + 2)
    assert log.claim('slot', third['id'], 'kvm2', third['id'], now=T0 + 2) == third['id']
    assert log.claim('slot', second['id'], 'kvm2', second['id'], now=T0 + 2) == second['id']
    assert len(log.claims('slot', 'kvm2')) == 2
    assert log.expire(now=T0 + 10) == 1  # second's TTL of 5 s: its hostname claim and slot go with it
    assert log.claims() == [('slot', third['id'], 'kvm2', third['id'])]


def expired_job(log):
    j = job(ttl=10)
    log.add(j, 60, now=T0)
    log.mark_published([j['id']], now=T0 + 1)
    assert log.expire(now=T0 + 10) == 1
    return j


def test_expired_job_stays_expired_when_acknowledged_late(log):
    j = expired_job(log)
    log.acknowledge('kvm1', [j['id']], now=T0 + 11)
    row = log.get(j['id'])
    assert (row['state'], row['acked']) == ('expired', None), 'the user was told "expired": an ack does not revive it'
    assert log.due_for_publish(2.0, now=T0 + 12) == []


def test_expired_job_late_result_is_recorded_as_late_not_as_success(log):
    j = expired_job(log)
    result = {'id': j['id'], 'status': 'succeeded', 'message': 'done after all', 'data': {'hostname': 'web1'}}
    assert log.finish('kvm1', result, now=T0 + 20), 'the result is taken (the host worker stops sending it)'
    row = log.get(j['id'])
    assert row['state'] == 'expired' and row['finished'] == T0 + 10
    assert row['message'].startswith('no host worker for kvm1 acknowledged the job within its TTL')
    assert row['data'] == {}
    assert row['late_result'] == {'status': 'succeeded', 'message': 'done after all', 'data': {'hostname': 'web1'},
                                  'received': T0 + 20}
    assert log.finish('kvm1', dict(result, status='failed'), now=T0 + 21), 'a repeated late report is taken too'
    assert log.get(j['id'])['state'] == 'expired'


def test_finished_job_is_not_overwritten_by_another_report(log):
    j = job()
    log.add(j, 60, now=T0)
    assert log.finish('kvm1', {'id': j['id'], 'status': 'failed', 'message': 'boom'}, now=T0 + 1)
    assert log.finish('kvm1', {'id': j['id'], 'status': 'succeeded', 'message': 'again', 'data': {'x': 1}}, now=T0 + 2), \
        'a result sent again (its first reply was lost) is taken, so the host worker stops sending it'
    row = log.get(j['id'])
    assert (row['state'], row['message'], row['data'], row['finished']) == ('failed', 'boom', {}, T0 + 1)
    assert row['late_result'] is None
    assert not log.finish('kvm2', {'id': j['id'], 'status': 'succeeded'}, now=T0 + 3), "still refused for another host's key"


def test_job_log_adds_the_late_result_column_to_an_old_database(tmp_path):
    path = str(tmp_path / 'old.sqlite')
    old = sqlite3.connect(path)
    old.executescript("CREATE TABLE jobs (id TEXT PRIMARY KEY, host TEXT NOT NULL, action TEXT NOT NULL, args TEXT NOT NULL, "
                      "state TEXT NOT NULL, message TEXT NOT NULL DEFAULT '', data TEXT, attempts INTEGER NOT NULL DEFAULT 0, "
                      "created REAL NOT NULL, updated REAL NOT NULL, expires REAL NOT NULL, published REAL, acked REAL, "
                      "finished REAL);")
    old.execute("INSERT INTO jobs (id, host, action, args, state, created, updated, expires) "
                "VALUES ('%s', 'kvm1', 'noop', '{}', 'succeeded', 1, 1, 2)" % ('a' * 32))
    old.commit()
    old.close()
    upgraded = JobLog(path)
    try:
        assert upgraded.get('a' * 32)['late_result'] is None
    finally:
        upgraded.close()


def test_a_job_logged_before_the_cleanup_columns_is_scrubbed_and_released_at_its_end(tmp_path):
    # A job logged by a version without the `secrets` and `claims` columns (each job's end scrubbed and released
    # then): it must still lose its secret and its claim when it ends, though no column says it has them.
    path = str(tmp_path / 'old.sqlite')
    old = sqlite3.connect(path)
    old.executescript("CREATE TABLE jobs (id TEXT PRIMARY KEY, host TEXT NOT NULL, action TEXT NOT NULL, args TEXT NOT NULL, "
                      "state TEXT NOT NULL, message TEXT NOT NULL DEFAULT '', data TEXT, attempts INTEGER NOT NULL DEFAULT 0, "
                      "created REAL NOT NULL, updated REAL NOT NULL, expires REAL NOT NULL, published REAL, acked REAL, "
                      "finished REAL, late_result TEXT, progress TEXT);")
    old.execute("INSERT INTO jobs (id, host, action, args, state, created, updated, expires) "
                "VALUES (?, 'kvm1', 'vm.clone', ?, 'dispatched', 1, 1, 1e12)",
                ('b' * 32, '{"hostname": "web1", "image": "debian", "root_password_hash": "$6$s$secret"}'))
    old.commit()
    old.close()
    upgraded = JobLog(path)
    try:
        upgraded.claim('hostname', 'web1', 'kvm1', 'b' * 32)
        assert upgraded.finish('kvm1', {'id': 'b' * 32, 'status': 'succeeded'})
        assert upgraded.get('b' * 32)['args']['root_password_hash'] == '(secret)'
        assert upgraded.claims() == []
    finally:
        upgraded.close()


def test_only_a_job_with_secrets_or_claims_pays_for_their_cleanup(sqlite_log):
    log = sqlite_log
    # The cleanup is known from the job at submission (its args, its action's claims): a job with a secret
    # is scrubbed when acknowledged, one with claims releases them when it ends, whatever else it is.
    secret = messages.new_job('kvm1', 'noop', {'marker': 'm'})
    secret['args']['root_password_hash'] = '$6$s$secret'  # noop takes no such argument: set past validation
    claiming = job()
    log.add(secret, 60, now=T0, claims=False)
    log.add(claiming, 60, now=T0, claims=True)
    log.claim('slot', claiming['id'], 'kvm1', claiming['id'], now=T0)
    statements = []
    log.db.set_trace_callback(statements.append)
    log.acknowledge('kvm1', [secret['id'], claiming['id']], now=T0 + 1)
    assert log.get(secret['id'])['args']['root_password_hash'] == '(secret)'
    assert sum('json_replace' in s for s in statements) == 1, 'only the job with a secret is scrubbed'
    del statements[:]
    for j in (secret, claiming):
        assert log.finish('kvm1', {'id': j['id'], 'status': 'succeeded'}, now=T0 + 2)
    assert log.claims() == []
    assert sum(s.startswith('DELETE FROM claims') for s in statements) == 1, 'only the job with claims releases them'
    assert sum('json_replace' in s for s in statements) == 1, 'only the job with a secret is scrubbed again at its end'


# -- maintenance (issue 19) -------------------------------------------------------------------

def test_maintenance_flag_is_set_once_cleared_once_and_lasts(tmp_path):
    path = str(tmp_path / 'jobs.sqlite')
    first = JobLog(path)
    assert first.maintenance() == {} and not first.in_maintenance('kvm1')
    assert first.set_maintenance('kvm1', True, now=T0) is True
    assert first.set_maintenance('kvm1', True, now=T0 + 5) is False, 'set again: nothing changes, `since` stays'
    first.close()
    again = JobLog(path)  # a restarted client worker
    try:
        assert again.maintenance() == {'kvm1': T0} and again.in_maintenance('kvm1') and not again.in_maintenance('kvm10')
        assert again.set_maintenance('kvm1', False) is True
        assert again.set_maintenance('kvm1', False) is False
        assert again.maintenance() == {}
    finally:
        again.close()
