# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Host maintenance (issue 19) on the testbed: maglica_host, `maglica host drain|activate`, the lasting flag.

debian.original is on host0 and host1 (conftest). With both active and equally loaded, placement takes host0 (the
configuration's order breaks the tie): a clone that goes to host1 while host0 is in maintenance went there because
of the flag. Clones here are linked, not customised and not started: the flag is what is tested, not the guest.
"""

from __future__ import annotations

import json
import os
import re
import subprocess

import pytest

from maglica.controller import cloud as maglica_cloud
from maglica.controller import placement
from maglica.controller import vm as maglica_vm
from maglica.controller.client import Client
from maglica.errors import ConflictError
from maglica.protocol import messages
from maglica_testbed import MODULE_UTILS, PYTHON, run_playbook

PLAYBOOKS = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'playbooks')
IMAGE = 'debian.original'


def playbook(cloud, name, check=False, **variables):
    variables['maglica_config'] = cloud.path
    return run_playbook(os.path.join(PLAYBOOKS, '%s.yml' % name), variables, check=check)


def maglica(cloud, *args):
    env = dict(cloud.env, PYTHONPATH=MODULE_UTILS)
    return subprocess.run([PYTHON, '-m', 'maglica.controller.cli', '--config', cloud.path] + list(args),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, env=env,
                          stdin=subprocess.DEVNULL, timeout=900, check=False)


def flag(cloud, host):
    with Client(cloud.config) as client:
        return client.maintenance(host)['maintenance']


@pytest.fixture
def made(cloud, testbed):
    """Names of VMs a test makes: removed at its end, and every host active again."""
    names = []
    yield names
    for name in names:
        maglica_vm.ensure(cloud.config, name, state='absent', force=True)
    with Client(cloud.config) as client:
        for host in testbed.hosts:
            client.maintenance(host, 'active')


@pytest.fixture(scope='module', autouse=True)
def no_vms_of_earlier_files(cloud, testbed):
    """The tests below list every VM of a host, and a drain moves every VM of its host: the VMs other test files of
    this testbed left behind (a worker runs its files one after another, so none is in use) are removed first."""
    for host in testbed.hosts:
        dry = maglica(cloud, '--json', 'host', 'drain', host, '--dry-run')
        assert dry.returncode == 0, dry.stderr
        for vm in json.loads(dry.stdout)['vms']:
            maglica_vm.ensure(cloud.config, vm['name'], state='absent', force=True)


def test_maintenance_lasts_shows_and_steers_clones(cloud, testbed, made):
    assert maglica_cloud.plan_clone(cloud.config, IMAGE, 'maint-free', clone_mode='linked', start=False)['host'] == 'host0'

    checked = playbook(cloud, 'host', check=True, host_name='host0')
    assert checked.rc == 0, checked
    assert checked.last['changed'] is True and checked.last['maintenance'] is False and not flag(cloud, 'host0')
    # Other test files of this testbed may have left images of their own on host0.
    assert IMAGE in checked.last['images'] and checked.last['vms'] == []

    run = playbook(cloud, 'host', host_name='host0')
    assert run.rc == 0, run
    assert run.last['changed'] is True and run.last['maintenance'] is True and run.last['was_maintenance'] is False
    assert run.last['images'] == checked.last['images'], 'the original images stay'
    again = playbook(cloud, 'host', host_name='host0')
    assert again.rc == 0 and again.last['changed'] is False, 'in maintenance with nothing to drain: no change'

    # It lasts: the client worker is killed and started again, the host workers too.
    cloud.kill_client_worker()
    cloud.start_client_worker()
    cloud.stop_host_worker('host0')
    cloud.start_host_worker('host0')
    assert flag(cloud, 'host0') is True

    # It shows: maglica_host_info, `maglica host list`, `maglica vm list`.
    info = playbook(cloud, 'host_info')
    assert info.rc == 0, info
    assert {h['name']: h['maintenance'] for h in info.last['hosts']} == {'host0': True, 'host1': False, 'host2': False}
    listed = maglica(cloud, '--json', 'host', 'list')
    assert {h['name']: h['maintenance'] for h in json.loads(listed.stdout)['hosts']}['host0'] is True
    table = maglica(cloud, 'host', 'list').stdout
    assert re.search(r'^host0 .* maintenance$', table, re.M) and re.search(r'^host1 .* active$', table, re.M)
    vms = maglica(cloud, 'vm', 'list', '--name', IMAGE)
    assert re.search(r'^debian.original +host0 \(maintenance\) ', vms.stdout, re.M), vms.stdout
    assert 'host in maintenance: host0' in vms.stderr

    # A clone with no host given avoids host0.
    made.append('maint-free')
    result = maglica_cloud.clone(cloud.config, IMAGE, 'maint-free', clone_mode='linked', start=False, customize=False)
    assert result['host'] == 'host1'
    assert {f['host']: f['reason'] for f in result['filtered']}['host0'].startswith('host0: in maintenance')

    # A clone pinned to it is refused with a clear message, by placement and by the client worker itself.
    with pytest.raises(placement.NoHostFits, match=r'^host host0 fits a clone of debian.original as maint-pinned: '
                                                   r'host0: in maintenance \(maglica host activate host0 brings it back\)$'):
        maglica_cloud.clone(cloud.config, IMAGE, 'maint-pinned', host='host0', clone_mode='linked', start=False, customize=False)
    refused = maglica(cloud, 'vm', 'clone', '--image', IMAGE, '--hostname', 'maint-pinned', '--on', 'host0', '--mode', 'linked',
                      '--start', 'false')
    assert refused.returncode == 4 and 'host0: in maintenance' in refused.stderr, refused.stderr
    job = messages.new_job('host0', 'vm.clone', {'image': IMAGE, 'hostname': 'maint-pinned', 'clone_mode': 'linked',
                                                 'start': False, 'customize': False}, ttl=60)
    with Client(cloud.config) as client:
        with pytest.raises(ConflictError, match=r'^host host0 is in maintenance: it takes no new VMs'):
            client.submit(job)
    assert 'maint-pinned' not in testbed.domains('host0')

    # `state: active` brings it back: placement sees it again.
    back = maglica(cloud, 'host', 'activate', 'host0')
    assert back.returncode == 0 and back.stdout == 'host0 is active: placement gives it VMs again\n', back.stderr
    assert flag(cloud, 'host0') is False
    assert maglica_cloud.plan_clone(cloud.config, IMAGE, 'maint-later', clone_mode='linked', start=False)['host'] == 'host0'
    active = playbook(cloud, 'host', host_name='host0', host_state='active')
    assert active.rc == 0 and active.last['changed'] is False


# -- the drain (the proof) ------------------------------------------------------------------------------

def on_host(testbed, names):
    """{name: (host, running)} of the VMs `names`, as each host's libvirtd has them."""
    found = {}
    for host in testbed.hosts:
        running = set(testbed.virsh(host, 'list', '--name').split())
        for name in testbed.domains(host) & set(names):
            assert name not in found, '%s is defined on %s and %s' % (name, found[name][0], host)
            found[name] = (host, name in running)
    return found


def test_drain_moves_every_vm_elsewhere_keeps_the_group_spread_and_activate_brings_the_host_back(cloud, testbed, made):
    """host2 holds three clones of rhel.original: drain-a and drain-b running (linked), in the spread group `dg`, and
    drain-c stopped (a full clone: a stopped linked clone could only go where its image is, and rhel.original is on
    host2 alone). host2 is the host drained because the testbed's libvirtds let host2's worker reach the other two
    (the migration peers of tests/testbed/testbed.sh). The running VMs need not be booted guests: the testbed's small
    images have no kernel, so they start and sit in the firmware, which is a running QEMU to migrate live, and cheap."""
    image = 'rhel.original'
    names = ['drain-a', 'drain-b', 'drain-c']
    made.extend(names)
    for name in names:
        maglica_cloud.clone(cloud.config, image, name, host='host2', clone_mode='full' if name == 'drain-c' else 'linked',
                            start=name != 'drain-c', customize=False, spread_group='dg' if name != 'drain-c' else None)
    assert on_host(testbed, names) == {'drain-a': ('host2', True), 'drain-b': ('host2', True), 'drain-c': ('host2', False)}

    dry = maglica(cloud, '--json', 'host', 'drain', 'host2', '--dry-run')
    assert dry.returncode == 0, dry.stderr
    plan = json.loads(dry.stdout)
    assert plan['maintenance'] is False and not flag(cloud, 'host2'), 'a dry run sets nothing'
    planned = {m['name']: (m['destination'], m['live'], m['status']) for m in plan['vms']}
    assert set(planned) == set(names) and planned['drain-c'][1:] == (False, 'planned')
    assert sorted([planned['drain-a'][0], planned['drain-b'][0]]) == ['host0', 'host1'], 'the group spread over the others'
    assert planned['drain-a'][1:] == planned['drain-b'][1:] == (True, 'planned')
    # The host's images stay (other test files of this testbed may have left more of them there).
    assert {'broken.original', image} <= set(plan['images']) and not set(names) & set(plan['images'])

    run = playbook(cloud, 'host', host_name='host2', max_parallel=2)
    assert run.rc == 0, run.last.get('msg') if run.results else run
    result = run.last
    assert result['changed'] is True and result['maintenance'] is True
    moved = {m['name']: (m['destination'], m['status']) for m in result['vms']}
    assert moved == {name: (planned[name][0], 'migrated') for name in names}, result['vms']
    assert all(m['job_id'] for m in result['vms'])

    after = on_host(testbed, names)
    assert after == {name: (planned[name][0], name != 'drain-c') for name in names}, 'each VM where the plan said, as it was'
    assert after['drain-a'][0] != after['drain-b'][0], 'the group is still spread'
    assert testbed.domains('host2') & set(names) == set() and image in testbed.domains('host2'), 'the image stays'
    assert flag(cloud, 'host2') is True
    with pytest.raises(placement.NoHostFits, match='host2: in maintenance'):
        maglica_cloud.plan_clone(cloud.config, image, 'drain-later', clone_mode='linked', start=False)

    again = playbook(cloud, 'host', host_name='host2')
    assert again.rc == 0 and again.last['changed'] is False and again.last['vms'] == [], 'drained: nothing left, no change'

    back = playbook(cloud, 'host', host_name='host2', host_state='active')
    assert back.rc == 0 and back.last['changed'] is True and flag(cloud, 'host2') is False
    assert maglica_cloud.plan_clone(cloud.config, image, 'drain-later', clone_mode='linked', start=False)['host'] == 'host2'
