# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Secrets of jobs (the root password hash, every messages.SECRET_ARGS entry) and the modes of the workers' state.

A secret is kept only as long as it is needed: in the client worker's job log until the host worker
has the job, in the host worker's record until the job has finished (reconcile re-runs it from there).
"Dropped" means gone from the files on disk, not only from what a query answers.
"""

from __future__ import annotations

import json
import os
import stat

import pytest

from maglica.cluster import config
from maglica.protocol import messages
from maglica.errors import ConfigError
from maglica.host.worker import Record
from maglica.client_worker.joblog import JobLog
from unit_helpers import files_holding

T0 = 1700000000.0
HASH = '$6$saltsalt$' + 'S3cr3tHashValue' * 6


def clone_job(host='kvm1', ttl=None):
    args = {'image': 'debian.original', 'hostname': 'web1', 'clone_mode': 'full', 'start': False, 'root_password_hash': HASH}
    return messages.new_job(host, 'vm.clone', args, ttl=ttl)


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def log(tmp_path):
    job_log = JobLog(str(tmp_path / 'state' / 'jobs.sqlite'))
    yield job_log
    job_log.close()


def test_secret_args_dropped_from_job_log_once_the_host_worker_has_the_job(log, tmp_path):
    j = clone_job()
    log.add(j, 60, now=T0)
    log.mark_published([j['id']], now=T0 + 1)
    assert log.get(j['id'])['args']['root_password_hash'] == HASH, 'kept until the host worker has fetched it'
    log.acknowledge('kvm1', [j['id']], now=T0 + 2)
    log.checkpoint()
    row = log.get(j['id'])
    assert row['args']['root_password_hash'] == '(secret)' and row['args']['hostname'] == 'web1'
    assert files_holding(str(tmp_path / 'state'), HASH) == [], 'the hash is gone from the database and its WAL'


def test_secret_args_dropped_when_a_job_ends_without_acknowledgement(log, tmp_path):
    expiring, reported = clone_job(ttl=5), clone_job()
    log.add(expiring, 60, now=T0)
    log.add(reported, 60, now=T0)
    log.expire(now=T0 + 5)
    log.finish('kvm1', {'id': reported['id'], 'status': 'failed', 'message': 'no image'}, now=T0 + 6)
    log.checkpoint()
    for j in (expiring, reported):
        assert log.get(j['id'])['args']['root_password_hash'] == '(secret)'
    assert files_holding(str(tmp_path / 'state'), HASH) == []


def test_every_secret_arg_is_dropped(log):
    j = clone_job()
    log.add(j, 60, now=T0)
    # Whatever SECRET_ARGS holds (other actions add theirs), each one present is dropped.
    args = dict(j['args'], **{key: 'secret value of %s' % key for key in messages.SECRET_ARGS})
    log.db.execute('UPDATE jobs SET args = ? WHERE id = ?', (json.dumps(args), j['id']))
    log.acknowledge('kvm1', [j['id']], now=T0 + 1)
    assert all(log.get(j['id'])['args'][key] == '(secret)' for key in messages.SECRET_ARGS)


def test_secret_args_stay_in_the_host_record_until_the_job_has_finished(tmp_path):
    record = Record(str(tmp_path / 'host' / 'kvm1.sqlite'))
    try:
        j = clone_job()
        with record.transaction():
            record.take(j)
        assert record.running()[0]['args']['root_password_hash'] == HASH, 'reconcile re-runs the job from the record'
        with record.transaction():
            record.finish(j['id'], {'id': j['id'], 'status': 'succeeded', 'message': '', 'data': {}})
        record.checkpoint()
        assert files_holding(str(tmp_path / 'host'), HASH) == []
    finally:
        record.close()


def test_state_directories_are_0700_and_files_0600(tmp_path):
    log = JobLog(str(tmp_path / 'client' / 'jobs.sqlite'))
    record = Record(str(tmp_path / 'host' / 'kvm1.sqlite'))
    try:
        log.add(clone_job(), 60)
        with record.transaction():
            record.take(clone_job())
        for directory, base in ((tmp_path / 'client', 'jobs.sqlite'), (tmp_path / 'host', 'kvm1.sqlite')):
            assert mode(str(directory)) == 0o700
            for suffix in ('', '-wal', '-shm'):
                assert mode(str(directory / (base + suffix))) == 0o600, base + suffix
    finally:
        log.close()
        record.close()


def test_an_existing_job_log_readable_by_others_is_made_private(tmp_path):
    path = str(tmp_path / 'jobs.sqlite')
    JobLog(path).close()
    os.chmod(path, 0o644)
    JobLog(path).close()
    assert mode(path) == 0o600


def test_job_log_retention_prunes_old_final_jobs_only(log):
    old_done, old_running, new_done = clone_job(), clone_job(), clone_job()
    for j in (old_done, old_running, new_done):
        log.add(j, 10 ** 6, now=T0)
    log.finish('kvm1', {'id': old_done['id'], 'status': 'succeeded'}, now=T0 + 10)
    log.acknowledge('kvm1', [old_running['id']], now=T0 + 10)
    log.finish('kvm1', {'id': new_done['id'], 'status': 'succeeded'}, now=T0 + 100)
    assert log.prune(older_than=50, now=T0 + 100) == 1
    assert log.get(old_done['id']) is None
    assert log.get(old_running['id'])['state'] == 'running', 'a job that has not ended is never pruned'
    assert log.get(new_done['id'])['state'] == 'succeeded'


def test_job_log_retention_is_a_setting():
    assert config.validate({'hosts': ['a']}).jobs['retention_days'] == 30
    assert config.validate({'hosts': ['a'], 'jobs': {'retention_days': 0.5}}).jobs['retention_days'] == 0.5
    with pytest.raises(ConfigError, match='jobs.retention_days must be positive'):
        config.validate({'hosts': ['a'], 'jobs': {'retention_days': 0}})
