# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Spread groups and whole batches (issue 13), on the testbed's small images (no clone is booted).

Host workers run with the role's default concurrency of 2. Every appliance launch is logged by the host worker
as "appliance launch: ..." (batching.py), which is what the launch counts below read.
"""

from __future__ import annotations

import json
import os
import re
import subprocess

import pytest

from maglica.controller import vm as maglica_vm
from maglica_testbed import MODULE_UTILS, PYTHON, run_playbook

PLAYBOOKS = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'playbooks')
IMAGE = 'spread.original'
LAUNCH_RE = re.compile(r'appliance launch: (.*)$')
JOB_TIMEOUT = 900


def launches(cloud, host):
    """What each appliance launch of `host`'s worker was, in order (its log outlives the worker's restarts)."""
    with open(os.path.join(cloud.workdir, 'host_worker-%s.log' % host)) as handle:
        return [m.group(1) for m in (LAUNCH_RE.search(line) for line in handle) if m]


def restart_workers(cloud):
    cloud.stop()
    cloud.start()


@pytest.fixture(scope='module')
def spread_cloud(cloud, testbed):
    """The session's cloud with host workers at concurrency 2, and an image on every host; every VM the tests
    make is removed at the end."""
    before = {host: testbed.domains(host) for host in testbed.hosts}
    settings = dict(cloud.data['host_worker'])
    for host in testbed.hosts:
        testbed.define_image(host, IMAGE, testbed.image('debian'))
    cloud.reconfigure(host_worker={'concurrency': 2})
    restart_workers(cloud)
    try:
        yield cloud
    finally:
        for host in testbed.hosts:
            for name in sorted(testbed.domains(host) - before[host] - {IMAGE}):
                maglica_vm.ensure(cloud.config, name, state='absent', force=True)
            if IMAGE in testbed.domains(host):  # on every host: removed by a job on each (ensure takes one VM name)
                job = cloud.submit(host, 'vm.remove', {'name': IMAGE, 'force_dependants': True}, ttl=120)
                cloud.wait_job(job['id'], 'succeeded', timeout=120)
        cloud.data['host_worker'] = settings
        cloud.reconfigure()
        restart_workers(cloud)
        for host in testbed.hosts:
            assert testbed.domains(host) == before[host]


def where(testbed, names):
    """{name: host} of the domains called `names`."""
    found = {}
    for host in testbed.hosts:
        for name in testbed.domains(host) & set(names):
            found[name] = host
    return found


def clone(cloud, check=False, **variables):
    variables['maglica_config'] = cloud.path
    return run_playbook(os.path.join(PLAYBOOKS, 'vm_clone.yml'), variables, check=check)


def clone_batch(cloud, check=False, **variables):
    variables['maglica_config'] = cloud.path
    return run_playbook(os.path.join(PLAYBOOKS, 'vm_clone_batch.yml'), variables, check=check)


def maglica_cli(cloud, *args):
    env = dict(cloud.env, PYTHONPATH=MODULE_UTILS)
    return subprocess.run([PYTHON, '-m', 'maglica.controller.cli', '--config', cloud.path] + list(args), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, universal_newlines=True, env=env, stdin=subprocess.DEVNULL, timeout=600,
                          check=False)


def test_spread_group_puts_one_clone_on_each_host_and_outlives_every_worker(spread_cloud, testbed):
    cloud = spread_cloud
    names = ['web%d.spread' % i for i in (1, 2, 3)]
    submitted = []
    for name in names:  # one after another without waiting: each counts the clones of the group still in flight
        run = clone(cloud, image=IMAGE, hostname=name, spread_group='web', start=False, wait=False)
        assert run.rc == 0, run
        submitted.append(run.last)
    assert sorted(r['host'] for r in submitted) == ['host0', 'host1', 'host2']
    for result in submitted:
        assert result['job']['args']['spread_group'] == 'web'
        cloud.wait_job(result['job_id'], 'succeeded', timeout=JOB_TIMEOUT)
    placed = where(testbed, names)
    assert sorted(placed.values()) == ['host0', 'host1', 'host2']

    # Every worker restarts; the group is read back from the clones' libvirt metadata.
    restart_workers(cloud)
    info = run_playbook(os.path.join(PLAYBOOKS, 'vm_info.yml'), {'maglica_config': cloud.path, 'vm_names': names})
    assert info.rc == 0, info
    assert {(v['name'], v['host'], v['spread_group']) for v in info.last['vms']} == {(n, placed[n], 'web') for n in names}
    listing = json.loads(maglica_cli(cloud, '--json', 'vm', 'list', '--name', 'web*.spread').stdout)
    assert {(v['name'], v['spread_group']) for v in listing['vms']} == {(n, 'web') for n in names}

    # host1 loses its member: the next member belongs there, though host0 comes first on every tie.
    gone = [n for n in names if placed[n] == 'host1'][0]
    maglica_vm.ensure(cloud.config, gone, state='absent')
    dry = maglica_cli(cloud, '--json', 'vm', 'clone', '--image', IMAGE, '--hostname', 'web4.spread', '--spread-group', 'web',
                      '--start', 'false', '--dry-run')
    assert dry.returncode == 0, dry.stderr
    plan = json.loads(dry.stdout)
    assert plan['host'] == 'host1' and plan['exists'] is False
    assert {c['host']: c['group_members'] for c in plan['candidates']} == {'host0': 1, 'host1': 0, 'host2': 1}
    for candidate in plan['candidates']:
        assert candidate['free_memory_mb'] > 0 and candidate['free_disk_bytes'] > 0 and candidate['reserved'] == 0
    text = maglica_cli(cloud, 'vm', 'clone', '--image', IMAGE, '--hostname', 'web4.spread', '--spread-group', 'web',
                       '--exclude-host', 'host2', '--dry-run')
    assert text.returncode == 0, text.stderr
    assert text.stdout.startswith('web4.spread would go to host1')
    assert 'filtered out host2: host2: excluded (exclude_hosts)' in text.stdout
    assert re.search(r'^host1 +[0-9.]+ +10 +0 +\S+ +\S+ +0 +yes$', text.stdout, re.M), text.stdout
    assert 'web4.spread' not in testbed.domains('host1'), 'a dry run makes nothing'

    run = clone(cloud, image=IMAGE, hostname='web4.spread', spread_group='web', start=False, timeout=JOB_TIMEOUT)
    assert run.rc == 0, run
    assert run.last['host'] == 'host1' and run.last['changed'] is True
    assert {c['host']: c['group_members'] for c in run.last['candidates']} == {'host0': 1, 'host1': 0, 'host2': 1}
    assert maglica_vm.vm_info(cloud.config, 'web4.spread')[1]['spread_group'] == 'web'


def test_batch_of_six_is_placed_as_its_check_mode_plan_and_reruns_unchanged(spread_cloud, testbed):
    cloud = spread_cloud
    names = ['w%d.batch' % i for i in range(1, 7)]
    variables = {'image': IMAGE, 'spread_group': 'batch', 'start': False, 'timeout': JOB_TIMEOUT,
                 'vms': [{'hostname': name} for name in names[:5]] + [{'hostname': names[5], 'clone_mode': 'linked'}]}
    jobs_before = len(cloud.jobs())
    checked = clone_batch(cloud, check=True, **variables)
    assert checked.rc == 0, checked
    plan = checked.last['plan']
    assert [p['hostname'] for p in plan] == names
    assert sorted(p['host'] for p in plan) == ['host0', 'host0', 'host1', 'host1', 'host2', 'host2'], 'two of the group per host'
    assert all(p['candidates'] for p in plan) and checked.last['changed'] is True
    assert [r['job_id'] for r in checked.last['results']] == [None] * 6
    assert where(testbed, names) == {} and len(cloud.jobs()) == jobs_before, 'check mode makes nothing, submits nothing'

    seen = {host: len(launches(cloud, host)) for host in testbed.hosts}
    run = clone_batch(cloud, **variables)
    assert run.rc == 0, run
    results = run.last['results']
    assert run.last['changed'] is True and [r['hostname'] for r in results] == names
    assert [r['host'] for r in results] == [p['host'] for p in plan], 'placed as planned'
    assert [r['job']['state'] for r in results] == ['succeeded'] * 6
    assert where(testbed, names) == {p['hostname']: p['host'] for p in plan}
    assert results[5]['job']['args']['clone_mode'] == 'linked' and results[0]['job']['args']['clone_mode'] == 'full'
    for result in results:
        assert result['job']['args']['batch']['size'] == 2 and result['job']['args']['spread_group'] == 'batch'
    assert len({r['job']['args']['batch']['id'] for r in results}) == 1
    for host in testbed.hosts:  # the two clones of the batch on each host: one launch
        assert launches(cloud, host)[seen[host]:] == ['customising 2 clone(s) in one appliance'], host

    again = clone_batch(cloud, **variables)
    assert again.rc == 0, again
    assert again.last['changed'] is False and [r['changed'] for r in again.last['results']] == [False] * 6
    assert [r['host'] for r in again.last['results']] == [p['host'] for p in plan]


def test_a_batch_of_six_on_one_host_customises_in_one_launch(spread_cloud, testbed):
    """maglica_vm_clone vms: six clones on one host, whose worker runs at concurrency 2: ONE appliance launch
    (before, the concurrency let 2 at a time reach customisation: three launches)."""
    cloud = spread_cloud
    # The first clone of an image on a host learns its layout alone; the batch comes after.
    first = clone(cloud, image=IMAGE, hostname='first.launch', host='host0', start=False, timeout=JOB_TIMEOUT)
    assert first.rc == 0, first
    seen = len(launches(cloud, 'host0'))
    names = ['b%d.launch' % i for i in range(6)]
    run = clone_batch(cloud, image=IMAGE, start=False, timeout=JOB_TIMEOUT,
                      vms=[{'hostname': name, 'host': 'host0'} for name in names])
    assert run.rc == 0, run
    assert [r['job']['state'] for r in run.last['results']] == ['succeeded'] * 6
    assert launches(cloud, 'host0')[seen:] == ['customising 6 clone(s) in one appliance']
    assert set(names) <= testbed.domains('host0')
