# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Listing and cloning through ansible-playbook on the testbed, with real libvirtd, virt-clone and libguestfs."""

from __future__ import annotations

import os
import re
import subprocess

import pytest

from maglica_testbed import read_guest_files, run_playbook, wait_until
from maglica.controller import vm as maglica_vm

PLAYBOOKS = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'playbooks')
SSH_KEY = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMaglicaTestKeyOnlyForTests maglica@test'
PASSWORD_HASH = '$6$saltsalt$Zm9vYmFyZm9vYmFyZm9vYmFyZm9vYmFyZm9vYmFyZm9vYmFyZm9vYmFy'


def clone(cloud, check=False, diff=False, **variables):
    variables['maglica_config'] = cloud.path
    run = run_playbook(os.path.join(PLAYBOOKS, 'vm_clone.yml'), variables, check=check, diff=diff)
    # The module passed its result's warnings to exit_json, which ansible-core deprecates (gone in 2.23).
    assert 'DEPRECATION WARNING' not in run.output, run
    return run


@pytest.fixture(scope='module', autouse=True)
def leaves_no_vms(cloud, testbed):
    """The clones these tests make, and the `load0` domain, go at the end: the worker's next test files share this
    testbed, and an inactive domain left there is an image to them."""
    yield
    for name in ('web1.test', 'db1.test', 'loose1.test'):
        maglica_vm.ensure(cloud.config, name, state='absent', force=True)
    testbed.virsh('host0', 'undefine', 'load0', check=False)  # its disk is the debian image's: only the domain goes


def test_image_info_lists_every_host(cloud):
    run = run_playbook(os.path.join(PLAYBOOKS, 'image_info.yml'), {'maglica_config': cloud.path})
    assert run.rc == 0, run
    images = {(i['name'], i['host']) for i in run.last['images']}
    # The session's images on every host; test files run before this one on the same testbed may have added more.
    assert images >= {('debian.original', 'host0'), ('debian.original', 'host1'),
                      ('rhel.original', 'host2'), ('broken.original', 'host2')}, images
    assert {host for _name, host in images} == {'host0', 'host1', 'host2'}
    debian = [i for i in run.last['images'] if i['host'] == 'host0'][0]
    assert debian['vcpus'] == 1 and debian['memory_mb'] == 256
    assert debian['disks'][0]['format'] == 'qcow2' and debian['disks'][0]['capacity'] > debian['disks'][0]['allocation'] > 0
    assert run.changed == 0


def test_image_info_filters_by_pattern_and_host(cloud):
    run = run_playbook(os.path.join(PLAYBOOKS, 'image_info.yml'),
                       {'maglica_config': cloud.path, 'image_names': ['*.original'], 'image_hosts': ['host2']})
    assert run.rc == 0, run
    assert sorted(i['name'] for i in run.last['images']) == ['broken.original', 'rhel.original']
    assert [h['host'] for h in run.last['hosts']] == ['host2']


def test_image_info_reports_a_dead_host_and_lists_the_others(cloud, tmp_path):
    data = dict(cloud.data, hosts=cloud.data['hosts'] + [{'name': 'dead', 'address': '127.0.0.254', 'weight': 10}])
    path = cloud.write_config('with-dead-host.conf', data)
    run = run_playbook(os.path.join(PLAYBOOKS, 'image_info.yml'), {'maglica_config': path})
    assert run.rc == 0, run
    assert {i['host'] for i in run.last['images']} == {'host0', 'host1', 'host2'}
    dead = [h for h in run.last['hosts'] if h['host'] == 'dead'][0]
    assert dead['reachable'] is False and '127.0.0.254' in dead['error']
    assert 'host not reachable' in run.output


def test_clone_goes_to_the_least_loaded_host_and_rewrites_the_guest(cloud, testbed):
    # host0 runs one domain, host1 none: the clone belongs on host1.
    testbed.define_image('host0', 'load0', testbed.image('debian'))
    testbed.virsh('host0', 'start', 'load0')
    try:
        run = clone(cloud, image='debian.original', hostname='web1.test', ssh_authorized_keys=[SSH_KEY],
                    root_password_hash=PASSWORD_HASH, diff=True)
    finally:
        testbed.virsh('host0', 'destroy', 'load0')
    assert run.rc == 0, run
    result = run.last
    assert result['changed'] is True and result['host'] == 'host1'
    assert [(c['host'], c['score']) for c in result['candidates']] == [('host1', 0.0), ('host0', 1.0)]
    assert result['job']['state'] == 'succeeded'
    assert 'web1.test' in testbed.domains('host1') and 'web1.test' not in testbed.domains('host0')
    assert testbed.virsh('host1', 'domstate', 'web1.test').strip() == 'running'
    changed = result['result']['customization']['changed_files']
    assert '/etc/hostname' in changed and '/etc/network/interfaces' in changed and '/etc/shadow' in changed
    assert '(secret content, changed)' in run.output and PASSWORD_HASH not in run.output
    assert result['job']['args']['root_password_hash'] == '(secret)'

    testbed.virsh('host1', 'destroy', 'web1.test')
    disk = [d for d in result['result']['domain']['disks'] if d['device'] == 'disk'][0]['path']
    files = read_guest_files(testbed, 'host1', disk, ['/etc/hostname', '/etc/hosts', '/etc/dhcp/dhclient.conf',
                                                      '/etc/network/interfaces', '/etc/machine-id', '/etc/shadow',
                                                      '/root/.ssh/authorized_keys', '/etc/udev/rules.d/70-persistent-net.rules'])
    assert files['/etc/hostname'] == 'web1.test\n'
    assert files['__hostname__'] == 'web1.test'
    assert '127.0.1.1\tweb1.test web1' in files['/etc/hosts']
    assert 'send host-name = "web1.test";' in files['/etc/dhcp/dhclient.conf']
    assert 'iface eth0 inet dhcp' in files['/etc/network/interfaces']
    assert files['/etc/machine-id'] == ''
    assert files['/etc/udev/rules.d/70-persistent-net.rules'] == ''
    host_keys = ['/etc/ssh/ssh_host_%s_key%s' % (t, s) for t in ('rsa', 'ecdsa', 'ed25519') for s in ('', '.pub')]
    assert sorted(files['__ssh_host_keys__']) == sorted(host_keys), 'new keys of the image\'s types (test_guest.py)'
    assert len(result['ssh_host_keys']) == 3 and len(result['known_hosts']) == 3
    assert files['/etc/shadow'].startswith('root:%s:' % PASSWORD_HASH)
    assert files['/root/.ssh/authorized_keys'].strip() == SSH_KEY

    again = clone(cloud, image='debian.original', hostname='web1.test')
    assert again.rc == 0, again
    assert again.last['changed'] is False and again.last['host'] == 'host1' and again.last['job_id'] is None


def test_linked_clone_with_static_address_on_rhel(cloud, testbed):
    network = {'mode': 'static', 'address': '192.0.2.20', 'prefix': 24, 'gateway': '192.0.2.1', 'dns': ['192.0.2.53']}
    run = clone(cloud, image='rhel.original', hostname='db1.test', clone_mode='linked', start=False, network=network)
    assert run.rc == 0, run
    assert run.last['host'] == 'host2' and run.last['changed'] is True
    assert testbed.virsh('host2', 'domstate', 'db1.test').strip() == 'shut off'
    disk = [d for d in run.last['result']['domain']['disks'] if d['device'] == 'disk'][0]['path']
    info = testbed.virsh('host2', 'vol-dumpxml', disk)
    assert '<backingStore>' in info and 'rhel.original.qcow2' in info
    files = read_guest_files(testbed, 'host2', disk, ['/etc/hostname', '/etc/sysconfig/network',
                                                      '/etc/sysconfig/network-scripts/ifcfg-eth0',
                                                      '/etc/NetworkManager/system-connections/eth0.nmconnection'])
    assert files['/etc/hostname'] == 'db1.test\n'
    assert 'HOSTNAME=db1.test' in files['/etc/sysconfig/network']
    ifcfg = files['/etc/sysconfig/network-scripts/ifcfg-eth0']
    assert 'BOOTPROTO=none' in ifcfg and 'IPADDR=192.0.2.20' in ifcfg and 'PREFIX=24' in ifcfg and 'GATEWAY=192.0.2.1' in ifcfg
    assert 'HWADDR' not in ifcfg
    keyfile = files['/etc/NetworkManager/system-connections/eth0.nmconnection']
    assert 'method=manual' in keyfile and 'address1=192.0.2.20/24,192.0.2.1' in keyfile and 'dns=192.0.2.53;' in keyfile
    again = clone(cloud, image='rhel.original', hostname='db1.test', clone_mode='linked', start=False, network=network)
    assert again.rc == 0 and again.last['changed'] is False, again


def test_check_mode_reports_the_host_and_changes_nothing(cloud, testbed):
    before = {h: testbed.domains(h) for h in testbed.hosts}
    jobs_before = len(cloud.jobs())
    run = clone(cloud, check=True, image='debian.original', hostname='checkmode.test')
    assert run.rc == 0, run
    assert run.last['changed'] is True and run.last['host'] in ('host0', 'host1') and run.last['job_id'] is None
    assert {h: testbed.domains(h) for h in testbed.hosts} == before
    assert len(cloud.jobs()) == jobs_before


@pytest.mark.parametrize('variables, message', [
    ({'image': 'nosuch.original', 'hostname': 'x1.test'}, 'image nosuch.original is not on any host'),
    ({'image': 'debian.original', 'hostname': 'rhel.original'}, 'the hostname rhel.original is already used by an image on host2'),
    ({'image': 'debian.original', 'hostname': 'x2.test', 'host': 'nosuchhost'}, "host 'nosuchhost' is not in the configuration"),
    ({'image': 'debian.original', 'hostname': 'x3.test', 'host': 'host2'}, 'host host2 does not hold image debian.original'),
    ({'image': 'debian.original', 'hostname': 'x4.test', 'network': {'mode': 'static'}}, 'mode is static but all of the following are missing: address'),
])
def test_bad_input_fails_clearly_and_leaves_nothing(cloud, testbed, variables, message):
    before = {h: (testbed.domains(h), testbed.host_files(h)) for h in testbed.hosts}
    jobs_before = len(cloud.jobs())
    run = clone(cloud, **variables)
    assert run.rc != 0 and run.failed, run
    assert message in run.failed[0]['msg']
    assert {h: (testbed.domains(h), testbed.host_files(h)) for h in testbed.hosts} == before
    assert len(cloud.jobs()) == jobs_before


def test_client_worker_not_running_fails_within_timeout(cloud):
    data = dict(cloud.data, client=dict(cloud.data['client'], rep_port=cloud.data['client']['rep_port'] + 100))
    path = cloud.write_config('no-client-worker.conf', data)
    run = run_playbook(os.path.join(PLAYBOOKS, 'vm_clone.yml'),
                       {'maglica_config': path, 'image': 'debian.original', 'hostname': 'x5.test', 'timeout': 5})
    assert run.rc != 0, run
    assert 'no answer from the client worker at tcp://127.0.0.1:%d' % data['client']['rep_port'] in run.failed[0]['msg']


def test_host_worker_not_running_job_expires_and_nothing_is_made(cloud, testbed):
    cloud.stop_host_worker('host2')
    try:
        run = clone(cloud, image='rhel.original', hostname='x6.test', timeout=3)
        assert run.rc != 0, run
        # The library's deadline and the job's TTL are both 3 s: whichever ends first says the same thing.
        assert re.search(r'no host worker for host2 (has acknowledged it|acknowledged the job within its TTL)', run.failed[0]['msg'])
        job_id = run.failed[0]['job']['id']
        cloud_job = cloud.job(job_id)
        assert cloud_job['state'] in ('dispatched', 'expired')

        wait_until(lambda: cloud.job(job_id)['state'] == 'expired', 10, 'the job to expire')
        assert 'within its TTL' in cloud.job(job_id)['message']
    finally:
        cloud.start_host_worker('host2')
    assert 'x6.test' not in testbed.domains('host2')


def test_guestfs_failure_midway_removes_the_half_made_clone(cloud, testbed):
    files_before = testbed.host_files('host2')
    run = clone(cloud, image='broken.original', hostname='broken1.test')
    assert run.rc != 0, run
    assert 'libguestfs found no operating system' in run.failed[0]['msg']
    assert 'broken1.test' not in testbed.domains('host2')
    assert testbed.host_files('host2') == files_before


def test_full_clone_of_an_image_outside_any_pool_is_made_by_virt_clone(cloud, testbed, tmp_path):
    # The image's disk lies in a directory no storage pool covers: libvirt's volume API cannot copy it.
    outside = os.path.join(testbed.dir, 'hosts', 'host2', 'lib', 'outside')
    os.makedirs(outside, exist_ok=True)
    subprocess.run(['cp', '--sparse=always', testbed.image('debian'), os.path.join(outside, 'loose.qcow2')], check=True)
    xml = testbed.virsh('host2', 'dumpxml', '--inactive', 'rhel.original')
    xml = re.sub(r'<uuid>.*?</uuid>|<mac [^>]*/>', '', xml).replace('<name>rhel.original</name>', '<name>loose.original</name>')
    xml = xml.replace('/var/lib/libvirt/images/rhel.original.qcow2', '/var/lib/libvirt/outside/loose.qcow2')
    definition = tmp_path / 'loose.xml'
    definition.write_text(xml)
    testbed.virsh('host2', 'define', str(definition))
    linked = clone(cloud, image='loose.original', hostname='loose2.test', clone_mode='linked')
    assert linked.rc != 0 and 'a linked clone needs the disks of image loose.original in a libvirt storage pool' in linked.failed[0]['msg']
    assert 'loose2.test' not in testbed.domains('host2')
    # virt-clone copies the file (and, as virtinst does on a remote connection, makes a pool for its directory).
    run = clone(cloud, image='loose.original', hostname='loose1.test', start=False)
    assert run.rc == 0, run
    disk = [d for d in run.last['result']['domain']['disks'] if d['device'] == 'disk'][0]['path']
    assert disk == '/var/lib/libvirt/outside/loose1.test.qcow2'
    assert read_guest_files(testbed, 'host2', disk, ['/etc/hostname'])['/etc/hostname'] == 'loose1.test\n'
