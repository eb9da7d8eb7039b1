# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""maintenance.py: the drain's plan (placement's real code on hosts of libvirt's test driver, read through the real
survey), the flag through a real client worker over real ZeroMQ, parallelism and the report of a drain that cannot
finish.

Migration itself is not here: libvirt's test driver cannot migrate, so the drain is given a migrate_to that
records its calls and fails for the VMs a test names (a stand-in for a failure a unit test cannot provoke for
real). The integration test test_maintenance.py drains with real migrations.
"""

from __future__ import annotations

import threading
import time
import uuid

import pytest

from maglica.cluster import config, virt
import functools
import json
import re

from maglica.controller import cli, cloud, maintenance, placement
from maglica.controller.client import Client
from maglica.errors import DispatchError, JobFailed, MaglicaError
from unit_helpers import Daemon, free_ports, wait_until, write_yaml

TEST_NS = "xmlns:test='http://libvirt.org/schemas/domain/test/1.0'"
GIB_KIB = 1024 * 1024


def domain_xml(name, running=False, clone_of='debian.original', group=None, memory_kib=262144, mode='full'):
    """A domain of the test driver: a Maglica clone (clone_of, its mode and spread group) or, clone_of None, an image."""
    metadata = ''
    if clone_of:
        metadata = ("<metadata><maglica:clone xmlns:maglica='%s' image='%s' job='%s' mode='%s' complete='yes'%s/></metadata>"
                    % (virt.METADATA_NS, clone_of, uuid.uuid4().hex, mode, " spread-group='%s'" % group if group else ''))
    return ("<domain type='test' %s><name>%s</name><memory>%d</memory><vcpu>1</vcpu><os><type>hvm</type></os>%s%s"
            "<devices/></domain>" % (TEST_NS, name, memory_kib, metadata, '' if running else '<test:runstate>5</test:runstate>'))


def node(tmp_path, name, domains, memory_kib=8 * GIB_KIB):
    """A host of the test driver: its own file, so hosts never share domains."""
    path = tmp_path / ('%s.xml' % name)
    path.write_text("<node><cpu><nodes>1</nodes><sockets>1</sockets><cores>4</cores><threads>1</threads></cpu>"
                    "<memory>%d</memory>%s</node>" % (memory_kib, ''.join(domains)))
    return 'test://%s' % path


class Cloud(object):
    """Hosts on the test driver and a real client worker (no host workers: the drain's jobs are migrate_to's)."""

    def __init__(self, tmp_path, hosts, policy='seed'):
        self.tmp_path = tmp_path
        self.hosts = hosts
        self.policy = policy
        self.worker = None
        self.config = None

    def start(self):
        for _attempt in range(3):
            pub, rep = free_ports(2)
            path = write_yaml(self.tmp_path / 'maglica.conf', {
                'hosts': self.hosts,
                'placement': {'policy': self.policy},
                'client': {'host': '127.0.0.1', 'bind': '127.0.0.1', 'pub_port': pub, 'rep_port': rep},
                'security': {'curve': False},
                'jobs': {'database': str(self.tmp_path / 'jobs.sqlite'), 'request_timeout': 5.0}})
            self.config = config.load(path)
            self.worker = Daemon('maglica.client_worker.worker', ['--config', path], self.tmp_path / 'client_worker.log')
            if wait_until(lambda: not self.worker.alive() or self.answers(), 15, 'the client worker') and self.worker.alive():
                return self
            output = self.worker.output()
            self.worker.stop()
            if 'Address already in use' not in output:
                raise AssertionError(output)
        raise AssertionError('the client worker did not start')

    def answers(self):
        try:
            with Client(self.config, timeout=0.5) as client:
                return client.hosts()
        except DispatchError:
            return None

    def stop(self):
        if self.worker is not None:
            self.worker.stop()


class Migrations(object):
    """migrate_to for the drain: records each call and how many ran at once; fails those in `fail`."""

    def __init__(self, fail=(), pause=0.0):
        self.fail = set(fail)
        self.pause = pause
        self.calls = []
        self.running = 0
        self.most = 0
        self.lock = threading.Lock()

    def __call__(self, cfg, name, source, destination, live, timeout):
        with self.lock:
            self.calls.append((name, source, destination, live))
            self.running += 1
            self.most = max(self.most, self.running)
        try:
            time.sleep(self.pause)  # a migration's duration, so that parallel ones overlap; not a synchronisation
            if name in self.fail:
                raise JobFailed('job 0123 (vm.migrate on %s) failed: the pool of %s is full' % (source, destination), {'id': '0123'})
            return {'changed': True, 'name': name, 'source': source, 'destination': destination, 'live': live,
                    'job_id': 'job-%s' % name, 'result': {'seconds': 1.0}}
        finally:
            with self.lock:
                self.running -= 1


def drain(running, migrations=None, state='maintenance', **kwargs):
    return maintenance.host_state(running.config, 'h0', state, functools.partial(cloud.host_states, running.config),
                                  migrate_to=migrations, **kwargs)


@pytest.fixture
def spread(tmp_path):
    """h0 (to drain): web1 running and web2 stopped (group web), db1 running, app1 stopped, the image debian.original.
    h1 holds web3 (group web) already; h2 and h3 are empty."""
    hosts = [
        {'name': 'h0', 'uri': node(tmp_path, 'h0', [
            domain_xml('debian.original', clone_of=None), domain_xml('web1', running=True, group='web'),
            domain_xml('web2', group='web'), domain_xml('db1', running=True), domain_xml('app1')])},
        {'name': 'h1', 'uri': node(tmp_path, 'h1', [domain_xml('web3', running=True, group='web')])},
        {'name': 'h2', 'uri': node(tmp_path, 'h2', [])},
        {'name': 'h3', 'uri': node(tmp_path, 'h3', [])},
    ]
    running = Cloud(tmp_path, hosts).start()
    yield running
    running.stop()


def where(result):
    return {m['name']: m['destination'] for m in result['vms']}


def test_the_plan_keeps_the_spread_group_spread_and_leaves_the_image(spread):
    plan = drain(spread, check_mode=True)
    assert plan['changed'] is True and plan['maintenance'] is False, 'check mode sets nothing'
    assert plan['images'] == ['debian.original']
    dest = where(plan)
    assert set(dest) == {'web1', 'web2', 'db1', 'app1'} and 'h0' not in dest.values()
    # web3 is on h1: the two members that move take h2 and h3, one each.
    assert sorted([dest['web1'], dest['web2']]) == ['h2', 'h3']
    assert {m['name']: m['live'] for m in plan['vms']} == {'web1': True, 'web2': False, 'db1': True, 'app1': False}
    assert all(m['status'] == 'planned' and m['reason'] is None for m in plan['vms'])
    assert all(m['filtered'] == [] for m in plan['vms']), 'the host drained is no candidate, and not repeated as one'
    with Client(spread.config) as client:
        assert client.maintenance('h0')['maintenance'] is False


def test_a_host_in_maintenance_is_no_destination_and_the_group_stays_as_spread_as_hosts_allow(spread):
    with Client(spread.config) as client:
        client.maintenance('h3', 'maintenance')
    dest = where(drain(spread, check_mode=True))
    assert 'h3' not in dest.values() and 'h0' not in dest.values()
    members = {'h1': 1, 'h2': 0}
    for name in ('web1', 'web2'):
        members[dest[name]] += 1
    assert sorted(members.values()) == [1, 2], 'three members on two hosts: 2 and 1, never 3 and 0'


def test_drain_moves_every_vm_at_most_max_parallel_at_once_and_lasts(spread):
    migrations = Migrations(pause=0.3)
    result = drain(spread, migrations, max_parallel=2)
    assert result['changed'] is True and result['maintenance'] is True and result['since'] is not None
    assert {m['name']: m['status'] for m in result['vms']} == dict.fromkeys(('web1', 'web2', 'db1', 'app1'), 'migrated')
    assert sorted(c[0] for c in migrations.calls) == ['app1', 'db1', 'web1', 'web2']
    assert all(c[1] == 'h0' and c[2] == where(result)[c[0]] for c in migrations.calls)
    assert migrations.most == 2, 'max_parallel 2: two at once, never more'
    assert result['vms'][0]['job_id'] == 'job-%s' % result['vms'][0]['name'] and result['vms'][0]['result'] == {'seconds': 1.0}
    with Client(spread.config) as client:
        assert client.maintenance('h0')['maintenance'] is True
        assert client.slots().maintenance == ['h0']
    # Placement leaves h0 out now, with the reason (only h0 holds the image here: no host fits a clone of it).
    with pytest.raises(placement.NoHostFits, match=r'no host fits a clone of debian.original as new1: h0: in maintenance'):
        cloud.plan_clone(spread.config, 'debian.original', 'new1')


def test_a_drain_that_cannot_finish_names_each_vm_that_stayed_and_keeps_the_host_in_maintenance(tmp_path):
    """db1 needs 6 GiB running: no other host has it (resources policy). lnk1, a stopped linked clone, goes only where
    its image is, and h1 has not got it. web1's migration fails. app1 moves."""
    hosts = [
        {'name': 'h0', 'uri': node(tmp_path, 'h0', [
            domain_xml('debian.original', clone_of=None), domain_xml('lnk1', mode='linked'),
            domain_xml('db1', running=True, memory_kib=6 * GIB_KIB), domain_xml('web1', running=True), domain_xml('app1')])},
        {'name': 'h1', 'uri': node(tmp_path, 'h1', [], memory_kib=4 * GIB_KIB)},
    ]
    running = Cloud(tmp_path, hosts, policy='resources').start()
    try:
        migrations = Migrations(fail=['web1'])
        with pytest.raises(maintenance.DrainIncomplete) as raised:
            drain(running, migrations)
        message = str(raised.value)
        assert message.startswith('the drain of h0 did not finish; h0 stays in maintenance, and 3 VM(s) stayed on it: ')
        assert 'db1 (no host fits it: h1: 4 GiB uncommitted, clone needs 6 GiB)' in message
        assert ('lnk1 (no host fits it (a stopped linked clone goes only where its image debian.original is): '
                'h1: does not hold its image debian.original)') in message
        assert 'web1 (its migration to h1 failed: job 0123 (vm.migrate on h0) failed: the pool of h1 is full)' in message
        assert message.endswith('. Moved: app1 -> h1')
        result = raised.value.result
        assert {m['name']: (m['status'], m['destination']) for m in result['vms']} == {
            'db1': ('stayed', None), 'lnk1': ('stayed', None), 'web1': ('stayed', 'h1'), 'app1': ('migrated', 'h1')}
        assert [m['job_id'] for m in result['vms'] if m['name'] == 'web1'] == ['0123'], 'the failed job is named'
        assert result['images'] == ['debian.original']
        assert sorted(c[0] for c in migrations.calls) == ['app1', 'web1'], 'db1, which fits nowhere, is not tried'
        with Client(running.config) as client:
            assert client.maintenance('h0')['maintenance'] is True
        # Again: what stays is reported again (nothing is lost), and the flag is not set twice.
        with pytest.raises(maintenance.DrainIncomplete):
            drain(running, Migrations(fail=['web1']))
        active = drain(running, state='active')
        assert (active['changed'], active['maintenance'], active['was_maintenance']) == (True, False, True)
        assert drain(running, state='active')['changed'] is False
    finally:
        running.stop()


def test_a_host_in_maintenance_with_nothing_left_is_unchanged(tmp_path):
    hosts = [{'name': 'h0', 'uri': node(tmp_path, 'h0', [domain_xml('debian.original', clone_of=None)])},
             {'name': 'h1', 'uri': node(tmp_path, 'h1', [])}]
    running = Cloud(tmp_path, hosts).start()
    try:
        first = drain(running, Migrations())
        assert (first['changed'], first['vms'], first['images']) == (True, [], ['debian.original'])
        again = drain(running, Migrations())
        assert (again['changed'], again['was_maintenance']) == (False, True)
        assert drain(running, Migrations(), check_mode=True)['changed'] is False
    finally:
        running.stop()


def test_max_parallel_and_state_are_checked_before_anything_is_asked(tmp_path):
    cfg = config.validate({'hosts': [{'name': 'h0', 'uri': 'test:///default'}], 'security': {'curve': False},
                           'client': {'host': '127.0.0.254', 'rep_port': 1}})
    with pytest.raises(MaglicaError, match='max_parallel must be at least 1, not 0'):
        maintenance.host_state(cfg, 'h0', 'maintenance', lambda *a: [], max_parallel=0)
    with pytest.raises(MaglicaError, match="state must be one of maintenance, active, not 'gone'"):
        maintenance.host_state(cfg, 'h0', 'gone', lambda *a: [])


def test_cli_host_drain_dry_run_shows_the_plan_and_activate_brings_the_host_back(spread, capsys):
    path = str(spread.tmp_path / 'maglica.conf')
    assert cli.main(['host', 'drain', 'h0', '--dry-run', '--max-parallel', '3', '--config', path]) == cli.EXIT_OK
    text = capsys.readouterr().out
    assert text.startswith('h0 would be put in maintenance; the drain would move 4 VM(s); images that stay: debian.original\n')
    assert re.search(r'^VM +RUNS +FROM +TO +STATUS +WHY$', text, re.M)
    assert re.search(r'^web1 +live +h0 +h[23] +planned +-$', text, re.M) and re.search(r'^app1 +cold +h0 +h[123] +planned +-$', text, re.M)
    assert cli.main(['host', 'drain', 'h0', '--dry-run', '--json', '--config', path]) == cli.EXIT_OK
    plan = json.loads(capsys.readouterr().out)
    assert sorted(m['name'] for m in plan['vms']) == ['app1', 'db1', 'web1', 'web2'] and plan['maintenance'] is False
    with Client(spread.config) as client:
        client.maintenance('h0', 'maintenance')
    assert cli.main(['vm', 'list', '--config', path]) == cli.EXIT_OK
    captured = capsys.readouterr()
    assert 'host in maintenance: h0 (it takes no new VM; maglica host activate h0 brings it back)' in captured.err
    assert re.search(r'^web1 +h0 \(maintenance\) +running', captured.out, re.M)
    assert re.search(r'^web3 +h1 +running', captured.out, re.M)
    assert cli.main(['host', 'list', '--json', '--config', path]) == cli.EXIT_OK
    assert {h['name']: h['maintenance'] for h in json.loads(capsys.readouterr().out)['hosts']} == {
        'h0': True, 'h1': False, 'h2': False, 'h3': False}
    assert cli.main(['host', 'activate', 'h0', '--config', path]) == cli.EXIT_OK
    assert capsys.readouterr().out == 'h0 is active: placement gives it VMs again\n'
    assert cli.main(['host', 'activate', 'h0', '--json', '--config', path]) == cli.EXIT_OK
    assert json.loads(capsys.readouterr().out)['changed'] is False


def test_a_stopped_linked_clone_is_placed_first_so_that_its_group_stays_spread(tmp_path):
    """web-b is stopped and linked: only h1 holds its image. Placed after web-a, it would find h1 taken by web-a
    (both h1 and h2 are empty, h1 comes first) and stack the group there."""
    hosts = [
        {'name': 'h0', 'uri': node(tmp_path, 'h0', [
            domain_xml('debian.original', clone_of=None), domain_xml('web-a', running=True, group='web', mode='linked'),
            domain_xml('web-b', group='web', mode='linked')])},
        {'name': 'h1', 'uri': node(tmp_path, 'h1', [domain_xml('debian.original', clone_of=None)])},
        {'name': 'h2', 'uri': node(tmp_path, 'h2', [])},
    ]
    running = Cloud(tmp_path, hosts).start()
    try:
        assert where(drain(running, check_mode=True)) == {'web-b': 'h1', 'web-a': 'h2'}
    finally:
        running.stop()
