# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Placement on the testbed (issue 13): real libvirtds surveyed over TLS, a real client worker holding the slot
reservations in its job log.

No host worker runs here: every clone job stays queued at the client worker, holding its slot, until its TTL
ends it. That is exactly a clone "on its way" (copied, customised, started later), and it keeps these tests free
of disk copies and guest boots. Each test starts the client worker on a fresh job log, so no test sees another's
reservations.
"""

from __future__ import annotations

import collections
import os
import subprocess
import threading

import pytest

from maglica_testbed import Cloud
from maglica.controller import cloud as maglica_cloud
from maglica.cluster import config as maglica_config
from maglica.controller import placement
from maglica.controller.client import Client

IMAGE = 'pl.original'
# Held by host0 in its default pool and by host1 in the pool `small`, a tmpfs of its own with less room than a copy.
TINY = 'tiny.original'
HOSTS = ('host0', 'host1', 'host2')
TTL = 60


@pytest.fixture(scope='module')
def images(testbed):
    disk = testbed.image('debian')
    for host in HOSTS:
        testbed.define_image(host, IMAGE, disk)
    testbed.define_image('host0', TINY, disk)
    allocation = int(subprocess.run(['du', '-B1', disk], stdout=subprocess.PIPE, check=True, universal_newlines=True).stdout.split()[0])
    # Room for the image and half of it again: a full clone (a copy of its allocation) does not fit.
    size_kib = (allocation * 3 // 2) // 1024 + 1024
    inside = ('mkdir -p /var/lib/libvirt/small && mount -t tmpfs -o size=%dk tmpfs /var/lib/libvirt/small '
              '&& cp --sparse=always %s /var/lib/libvirt/small/%s.qcow2' % (size_kib, disk, TINY))
    testbed.script('testbed.sh', 'exec', 'host1', 'sh', '-c', inside)
    testbed.virsh('host1', 'pool-create-as', 'small', 'dir', '--target', '/var/lib/libvirt/small')
    xml = os.path.join(testbed.dir, 'tiny-host1.xml')
    with open(xml, 'w') as handle:
        handle.write("<domain type='qemu'><name>%s</name><memory unit='MiB'>256</memory><vcpu>1</vcpu>"
                     "<os><type arch='x86_64' machine='pc'>hvm</type></os><devices><disk type='file' device='disk'>"
                     "<driver name='qemu' type='qcow2'/><source file='/var/lib/libvirt/small/%s.qcow2'/>"
                     "<target dev='vda' bus='virtio'/></disk></devices></domain>" % (TINY, TINY))
    testbed.virsh('host1', 'define', xml)
    try:
        yield {'allocation': allocation}
    finally:
        for host in HOSTS:
            for name in (IMAGE, TINY):
                if name in testbed.domains(host):
                    testbed.virsh(host, 'undefine', name, '--remove-all-storage', check=False)
        testbed.virsh('host1', 'pool-destroy', 'small', check=False)
        testbed.script('testbed.sh', 'exec', 'host1', 'umount', '/var/lib/libvirt/small')


@pytest.fixture(scope='module')
def client_worker(testbed, images, tmp_path_factory):
    port = int(os.environ.get('MAGLICA_TEST_PORT_BASE', '15555')) + 40
    maglica = Cloud(testbed, str(tmp_path_factory.mktemp('placement')), port=port)
    try:
        yield maglica
    finally:
        maglica.stop()


@pytest.fixture
def bed(client_worker, tmp_path):
    """The client worker on a fresh job log: no reservation of an earlier test."""
    client_worker.stop()
    client_worker.reconfigure(jobs={'database': str(tmp_path / 'jobs.sqlite')})
    client_worker.start(host_workers=False)
    return client_worker


def settings(bed, policy='seed', weights=None, memory=None, hosts=HOSTS):
    """The library's configuration: the testbed's hosts with these weights and configured memory totals."""
    entries = []
    for n, name in enumerate(hosts):
        entry = dict(next(h for h in bed.data['hosts'] if h['name'] == name))
        entry['weight'] = (weights or [10] * len(hosts))[n]
        if memory and memory[n] is not None:
            entry['memory_mb'] = memory[n]
        entries.append(entry)
    return maglica_config.validate(dict(bed.data, hosts=entries, placement={'policy': policy}))


def clone(cfg, hostname, image=IMAGE, **kwargs):
    return maglica_cloud.clone(cfg, image, hostname, wait=False, timeout=TTL, clone_mode='linked', **kwargs)


def slots(bed):
    with Client(bed.config) as client:
        return client.slots()


def test_clones_on_their_way_count_two_and_two(bed):
    """Four clones with wait: false, one after another, onto two hosts of equal weight: two and two."""
    cfg = settings(bed, hosts=('host0', 'host1'))
    placed = [clone(cfg, 'pl-a%d' % n) for n in range(4)]
    assert collections.Counter(r['host'] for r in placed) == {'host0': 2, 'host1': 2}
    assert [r['changed'] for r in placed] == [True] * 4
    last = {c['host']: c['reserved'] for c in placed[-1]['candidates']}
    assert last == {'host0': 2, 'host1': 1}, 'the fourth saw the three before it as reserved'
    assert collections.Counter(s['host'] for s in slots(bed)) == {'host0': 2, 'host1': 2}


def test_weights_1_1_2_over_8_clones_give_2_2_4(bed):
    cfg = settings(bed, weights=[10, 10, 20])
    placed = [clone(cfg, 'pl-w%d' % n) for n in range(8)]
    assert collections.Counter(r['host'] for r in placed) == {'host0': 2, 'host1': 2, 'host2': 4}


def test_a_host_without_the_memory_is_skipped_with_its_reason(bed):
    cfg = settings(bed, policy='resources', memory=[200, None, None], hosts=('host0', 'host1'))
    result = clone(cfg, 'pl-m1')
    assert result['host'] == 'host1' and result['job_id']
    assert result['filtered'] == [{'host': 'host0', 'reason': 'host0: 200 MiB uncommitted, clone needs 256 MiB'}]
    assert result['policy'] == 'resources' and [c['host'] for c in result['candidates']] == ['host1']
    assert result['candidates'][0]['free_memory_mb'] > 0 and result['candidates'][0]['free_disk_bytes'] > 0


def test_a_pool_without_the_room_is_skipped_with_its_reason(bed, images):
    cfg = settings(bed, policy='resources', hosts=('host0', 'host1'), weights=[10, 1000])
    result = maglica_cloud.clone(cfg, TINY, 'pl-d1', wait=False, timeout=TTL, clone_mode='full')
    assert result['host'] == 'host0', 'host1 weighs far more, but its pool cannot hold a full copy'
    (reason,) = [f['reason'] for f in result['filtered']]
    assert reason.startswith('host1: ') and ' free in pool small, clone needs ' in reason, reason
    # A linked clone copies nothing: host1 (weight 1000) takes it.
    linked = clone(cfg, 'pl-d2', image=TINY)
    assert linked['host'] == 'host1' and linked['filtered'] == []


def test_when_no_host_fits_the_clone_fails_naming_each_reason_and_nothing_is_left(bed, testbed):
    cfg = settings(bed, policy='resources', memory=[100, 128, 64])
    with pytest.raises(placement.NoHostFits) as caught:
        clone(cfg, 'pl-none')
    assert str(caught.value) == ('no host fits a clone of pl.original as pl-none: host0: 100 MiB uncommitted, clone needs 256 MiB; '
                                 'host1: 128 MiB uncommitted, clone needs 256 MiB; host2: 64 MiB uncommitted, clone needs 256 MiB')
    with Client(bed.config) as client:
        assert [j for j in client.recent(100) if j['args'].get('hostname') == 'pl-none'] == []
    assert slots(bed) == []
    assert all('pl-none' not in testbed.domains(host) for host in HOSTS)


def test_two_submissions_at_once_for_the_last_slot_one_succeeds(bed):
    """host0 has room for one clone, the others for none. Two submissions at the same moment: one gets host0,
    the other is told no host fits, with host0's reason counting the first clone."""
    cfg = settings(bed, policy='resources', memory=[300, 100, 100])
    outcomes = {}
    barrier = threading.Barrier(2)

    def submit(name):
        barrier.wait()
        try:
            outcomes[name] = clone(cfg, name)
        except placement.NoHostFits as e:
            outcomes[name] = e

    threads = [threading.Thread(target=submit, args=('pl-race%d' % n,)) for n in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    won = [r for r in outcomes.values() if isinstance(r, dict)]
    lost = [r for r in outcomes.values() if isinstance(r, placement.NoHostFits)]
    assert len(won) == 1 and len(lost) == 1, outcomes
    assert won[0]['host'] == 'host0'
    assert 'host0: 44 MiB uncommitted, clone needs 256 MiB' in str(lost[0])
    assert 'host1: 100 MiB uncommitted' in str(lost[0]) and 'host2: 100 MiB uncommitted' in str(lost[0])
    assert [s['host'] for s in slots(bed)] == ['host0'], 'never two clones on a host that can hold one'


def test_spread_group_reservations_outlive_a_client_worker_restart(bed):
    cfg = settings(bed)
    # host2 is the least loaded by far for the seed's score once host0 and host1 hold reservations of others.
    for n in range(2):
        clone(cfg, 'pl-other%d' % n, host='host0')
    placed = [clone(cfg, 'pl-web%d' % n, spread_group='web') for n in range(3)]
    assert sorted(r['host'] for r in placed) == list(HOSTS), 'one member on each host'
    bed.stop()
    bed.start(host_workers=False)  # the same job log
    plan = maglica_cloud.plan_clone(cfg, IMAGE, 'pl-web3', spread_group='web')
    assert {c['host']: c['group_members'] for c in plan['candidates']} == {'host0': 1, 'host1': 1, 'host2': 1}
    assert {c['host']: c['reserved'] for c in plan['candidates']} == {'host0': 3, 'host1': 1, 'host2': 1}
    assert plan['host'] == 'host1', 'members equal everywhere: the least loaded'


def test_a_batch_is_placed_as_its_check_mode_plan(bed):
    """Six VMs in one call: the check-mode plan, then the real submission, place them alike (a spread group
    of 6 over 3 hosts: two each), reserving as they go; one job each."""
    cfg = settings(bed, policy='resources', memory=[1024, 1024, 2048])
    vms = [{'image': IMAGE, 'hostname': 'pl-b%d' % n, 'clone_mode': 'linked', 'spread_group': 'b'} for n in range(6)]
    planned = maglica_cloud.clone_batch(cfg, vms, check_mode=True)
    assert planned['changed'] and [r['job_id'] for r in planned['results']] == [None] * 6
    assert slots(bed) == [], 'check mode submits nothing'
    done = maglica_cloud.clone_batch(cfg, vms, wait=False, timeout=TTL)
    assert [p['host'] for p in done['plan']] == [p['host'] for p in planned['plan']]
    assert collections.Counter(p['host'] for p in done['plan']) == {'host0': 2, 'host1': 2, 'host2': 2}
    assert sorted(s['job_id'] for s in slots(bed)) == sorted(r['job_id'] for r in done['results'])
    again = maglica_cloud.clone_batch(cfg, vms, wait=False, timeout=TTL)
    assert not again['changed'] and [r['job_id'] for r in again['results']] == [r['job_id'] for r in done['results']], \
        'a second run finds every clone on its way'
