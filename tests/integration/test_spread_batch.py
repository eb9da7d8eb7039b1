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

import pytest

from maglica import cloud as maglica_cloud, messages, vm as maglica_vm
from maglica_testbed import run_playbook, wait_until

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
    for host in testbed.hosts:
        testbed.define_image(host, IMAGE, testbed.image('debian'))
    cloud.reconfigure(host_worker={'concurrency': 2})
    restart_workers(cloud)
    before = {host: testbed.domains(host) for host in testbed.hosts}
    try:
        yield cloud
    finally:
        for host in testbed.hosts:
            for name in sorted(testbed.domains(host) - before[host]):
                maglica_vm.ensure(cloud.config, name, state='absent', force=True)
            assert testbed.domains(host) == before[host]


def where(testbed, names):
    """{name: host} of the domains called `names`."""
    found = {}
    for host in testbed.hosts:
        for name in testbed.domains(host) & set(names):
            found[name] = host
    return found


def test_a_submitted_batch_of_six_on_one_host_customises_in_one_launch(spread_cloud, testbed):
    """Six clone jobs of one batch on one host, under concurrency 2, share ONE appliance launch (before, the
    concurrency let 2 at a time reach customisation: three launches)."""
    cloud = spread_cloud
    # The first clone of an image learns its layout alone (a launch with inspection); the batch comes after.
    first = maglica_cloud.clone(cloud.config, IMAGE, 'first.launch', host='host0', start=False, timeout=JOB_TIMEOUT)
    assert first['job']['state'] == 'succeeded'
    seen = len(launches(cloud, 'host0'))
    batch = {'id': messages.new_job_id(), 'size': 6}
    jobs = [cloud.submit('host0', 'vm.clone', {'image': IMAGE, 'hostname': 'b%d.launch' % i, 'clone_mode': 'full',
                                               'start': False, 'batch': batch}, ttl=JOB_TIMEOUT) for i in range(6)]
    for job in jobs:
        cloud.wait_job(job['id'], 'succeeded', timeout=JOB_TIMEOUT)
    assert launches(cloud, 'host0')[seen:] == ['customising 6 clone(s) in one appliance']
    assert {'b%d.launch' % i for i in range(6)} <= testbed.domains('host0')
