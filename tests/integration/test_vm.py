# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""maglica_host_info, maglica_vm_info and maglica_vm through ansible-playbook on the testbed.

The VMs here are small domains defined directly on the test image (no clone needed):
their guest has no kernel, so it never answers an ACPI shutdown, which is what the
graceful-stop timeout tests need.
"""

from __future__ import annotations

import os
import re

import pytest

from maglica_testbed import run_playbook, wait_until

PLAYBOOKS = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'playbooks')


def playbook(cloud, name, check=False, diff=False, config=None, **variables):
    variables['maglica_config'] = config or cloud.path
    return run_playbook(os.path.join(PLAYBOOKS, '%s.yml' % name), variables, check=check, diff=diff)


def vm(cloud, name, check=False, diff=False, **settings):
    variables = {'vm_%s' % key: value for key, value in settings.items()}
    return playbook(cloud, 'vm', check=check, diff=diff, vm_name=name, **variables)


def persistent_xml(testbed, host, name):
    return testbed.virsh(host, 'dumpxml', '--inactive', name)


def state(testbed, host, name):
    return testbed.virsh(host, 'domstate', name).strip()


def define(testbed, host, name, memory=128):
    testbed.define_image(host, name, testbed.image('debian'), memory)


def undefine(testbed, host, name):
    testbed.virsh(host, 'destroy', name, check=False)
    testbed.virsh(host, 'undefine', name, '--remove-all-storage', check=False)


# -- maglica_host_info -------------------------------------------------------------------

def test_host_info_reports_every_host_and_its_worker(cloud, testbed):
    run = playbook(cloud, 'host_info')
    assert run.rc == 0, run
    assert run.changed == 0
    hosts = {h['name']: h for h in run.last['hosts']}
    assert list(hosts) == list(testbed.hosts)
    for name, host in hosts.items():
        assert host['reachable'] is True and host['weight'] == 10 and host['hostname'] == name
        running = set(testbed.virsh(name, 'list', '--name').split())
        assert host['active_domains'] == len(running)
        assert host['active_domains'] + host['inactive_domains'] == len(testbed.domains(name))
        assert host['cpus'] >= 1 and 0 < host['free_memory_mb'] <= host['memory_mb']
        assert host['worker_alive'] is True and host['worker_pid'] == cloud.host_workers[name].pid
        assert host['worker_last_seen_s'] < 10
        # Over TLS, with the testbed's server certificates of 365 days (roles/maglica_pki's default).
        assert host['transport'] == 'tls' and host['uri'].startswith('qemu+tls://')
        assert 360 < host['server_cert_days'] <= 365 and host['server_cert_error'] is None


def test_host_info_require_workers_fails_on_a_certificate_within_the_renewal_window(cloud):
    """The testbed's certificates expire in 365 days: a renewal window of 400 days takes them all in."""
    run = playbook(cloud, 'host_info', require_workers=True, cert_renew_days=400)
    assert run.rc != 0 and run.failed, run
    message = run.failed[0]['msg']
    assert message.startswith('the libvirtd server certificate of host0 (') and 'host1 (' in message and 'host2 (' in message
    assert 'expires within the renewal window of 400 days' in message
    assert playbook(cloud, 'host_info', require_workers=True, cert_renew_days=30).rc == 0


def test_host_info_require_workers_names_the_dead_one_then_waits_for_it(cloud):
    cloud.stop_host_worker('host2')
    try:
        wait_until(lambda: not [h for h in cloud.hosts_status() if h['host'] == 'host2'][0]['alive'], 30,
                   'the client worker to notice that host2 is silent')
        run = playbook(cloud, 'host_info', require_workers=True)
        assert run.rc != 0 and run.failed, run
        assert run.failed[0]['msg'] == 'the host worker of host2 is not alive'
        cloud.start_host_worker('host2', wait=False)
        run = playbook(cloud, 'host_info', require_workers=True, wait_timeout=60)
        assert run.rc == 0, run
        assert all(h['worker_alive'] for h in run.last['hosts'])
        assert [h for h in run.last['hosts'] if h['name'] == 'host2'][0]['worker_pid'] == cloud.host_workers['host2'].pid
    finally:
        if 'host2' not in cloud.host_workers:
            cloud.start_host_worker('host2')
        cloud.wait_alive('host2')


def test_host_info_without_client_worker_reports_unknown_workers(cloud):
    data = dict(cloud.data, client=dict(cloud.data['client'], rep_port=cloud.data['client']['rep_port'] + 100))
    path = cloud.write_config('host-info-no-client-worker.conf', data)
    run = playbook(cloud, 'host_info', config=path)
    assert run.rc == 0, run
    assert all(h['worker_alive'] is None and h['reachable'] for h in run.last['hosts'])
    assert 'worker liveness unknown: no answer from the client worker' in run.output
    failing = playbook(cloud, 'host_info', config=path, require_workers=True)
    assert failing.rc != 0 and 'cannot tell whether the host workers are alive' in failing.failed[0]['msg'], failing


# -- maglica_vm_info -----------------------------------------------------------------------

def test_vm_info_lists_and_filters(cloud, testbed):
    define(testbed, 'host1', 'vmi-a.test')
    define(testbed, 'host2', 'vmi-b.test')
    testbed.virsh('host2', 'start', 'vmi-b.test')
    try:
        run = playbook(cloud, 'vm_info', vm_names=['vmi-*'])
        assert run.rc == 0 and run.changed == 0, run
        vms = {v['name']: v for v in run.last['vms']}
        assert sorted(vms) == ['vmi-a.test', 'vmi-b.test']
        a, b = vms['vmi-a.test'], vms['vmi-b.test']
        assert (a['host'], a['state'], a['active'], a['vcpus'], a['memory_mb']) == ('host1', 'shutoff', False, 1, 128)
        assert a['disks'][0]['path'] == '/var/lib/libvirt/images/vmi-a.test.qcow2' and a['disks'][0]['capacity'] > 0
        assert a['vnc_port'] is None
        assert (b['host'], b['state'], b['active']) == ('host2', 'running', True)
        assert b['vnc_port'] == 5900 + b['vnc_display'] and b['vnc_port'] >= 5900
        assert b['vnc_port'] == int(testbed.virsh('host2', 'vncdisplay', 'vmi-b.test').strip().split(':')[1]) + 5900

        running = playbook(cloud, 'vm_info', vm_names=['vmi-*'], vm_states=['running'])
        assert [v['name'] for v in running.last['vms']] == ['vmi-b.test'], running
        stopped = playbook(cloud, 'vm_info', vm_names=['vmi-*'], vm_states=['stopped'])
        assert [v['name'] for v in stopped.last['vms']] == ['vmi-a.test'], stopped
        on_host1 = playbook(cloud, 'vm_info', vm_hosts=['host1'])
        assert {v['host'] for v in on_host1.last['vms']} == {'host1'} and 'vmi-a.test' in [v['name'] for v in on_host1.last['vms']]
        assert [h['host'] for h in on_host1.last['hosts']] == ['host1']
    finally:
        undefine(testbed, 'host1', 'vmi-a.test')
        undefine(testbed, 'host2', 'vmi-b.test')


# -- maglica_vm ------------------------------------------------------------------------------

SETTINGS = dict(vcpus=2, memory='192M', iso='/var/lib/libvirt/images/life.iso', boot_device=['cdrom', 'hd'],
                disks=[{'size': '1G', 'name': 'data'}])


def test_vm_settings_state_and_removal(cloud, testbed):
    name = 'life1.test'
    define(testbed, 'host0', name)
    iso_outside = testbed.outside_path('host0', SETTINGS['iso'])
    with open(iso_outside, 'wb') as handle:
        handle.truncate(1 << 20)
    try:
        # Check mode: reports everything, changes nothing.
        xml_before = persistent_xml(testbed, 'host0', name)
        run = vm(cloud, name, check=True, diff=True, state='running', **SETTINGS)
        assert run.rc == 0, run
        assert run.last['changed'] is True and run.last['host'] == 'host0' and run.last['jobs'] == []
        assert 'vcpus 1 -> 2' in run.last['changes'] and 'state stopped -> running' in run.last['changes']
        assert '\n-vcpus: 1\n' in run.output and '\n+vcpus: 2\n' in run.output and '+disks: life1.test.qcow2, life1.test@data.qcow2' in run.output
        assert persistent_xml(testbed, 'host0', name) == xml_before and state(testbed, 'host0', name) == 'shut off'
        assert 'life1.test@data.qcow2' not in testbed.host_files('host0')

        # Applied to a stopped VM, then started: nothing needs a restart.
        run = vm(cloud, name, diff=True, state='running', **SETTINGS)
        assert run.rc == 0, run
        result = run.last
        assert result['changed'] is True and result['restart_required'] is False and result['state'] == 'running'
        assert [j['action'] for j in result['jobs']] == ['vm.attach_disk'] and result['jobs'][0]['state'] == 'succeeded'
        assert state(testbed, 'host0', name) == 'running'
        xml = persistent_xml(testbed, 'host0', name)
        assert re.search(r"<vcpu[^>]*>2</vcpu>", xml) and "<memory unit='KiB'>196608</memory>" in xml
        assert "<source file='/var/lib/libvirt/images/life.iso'/>" in xml
        assert re.search(r"<boot dev='cdrom'/>\s*<boot dev='hd'/>", xml)
        assert "<source file='/var/lib/libvirt/images/life1.test@data.qcow2'/>" in xml and "<target dev='vdb' bus='virtio'/>" in xml
        assert 'life1.test@data.qcow2' in testbed.host_files('host0')
        assert re.search(r'Capacity:\s+1073741824 bytes', testbed.virsh('host0', 'vol-info', '--bytes', '/var/lib/libvirt/images/life1.test@data.qcow2'))
        assert result['vm']['iso'] == SETTINGS['iso'] and result['vm']['vnc_port'] is not None

        # The same again: nothing to do.
        again = vm(cloud, name, state='running', **SETTINGS)
        assert again.rc == 0 and again.last['changed'] is False and again.last['changes'] == [], again

        # Settings on a running VM go to its persistent definition and ask for a restart.
        run = vm(cloud, name, vcpus=1, memory='256M')
        assert run.rc == 0, run
        assert run.last['changed'] is True and run.last['restart_required'] is True
        assert 'take effect at its next start' in run.output
        assert re.search(r"<vcpu[^>]*>1</vcpu>", persistent_xml(testbed, 'host0', name))
        assert re.search(r"<vcpu[^>]*>2</vcpu>", testbed.virsh('host0', 'dumpxml', name))

        # Graceful stop: this guest ignores ACPI, so it times out; with force it is destroyed after the timeout.
        run = vm(cloud, name, state='stopped', timeout=2)
        assert run.rc != 0 and 'did not shut down within 2s' in run.failed[0]['msg'], run
        assert state(testbed, 'host0', name) == 'running'
        run = vm(cloud, name, state='stopped', timeout=2, force=True)
        assert run.rc == 0 and run.last['changed'] is True and run.last['stopped_by'] == 'destroyed', run
        assert state(testbed, 'host0', name) == 'shut off'
        assert vm(cloud, name, state='stopped').last['changed'] is False

        run = vm(cloud, name, state='running')
        assert run.rc == 0 and state(testbed, 'host0', name) == 'running', run
        run = vm(cloud, name, state='destroyed')
        assert run.rc == 0 and run.last['changed'] is True and state(testbed, 'host0', name) == 'shut off', run

        # Removal: refused while it runs, then through the host worker with its disks.
        testbed.virsh('host0', 'start', name)
        run = vm(cloud, name, state='absent')
        assert run.rc != 0 and 'life1.test is running on host0' in run.failed[0]['msg'], run
        assert name in testbed.domains('host0')
        run = vm(cloud, name, check=True, state='absent', force=True)
        assert run.rc == 0 and run.last['changed'] is True and name in testbed.domains('host0'), run
        run = vm(cloud, name, state='absent', force=True)
        assert run.rc == 0 and run.last['changed'] is True, run
        assert [j['action'] for j in run.last['jobs']] == ['vm.remove']
        assert sorted(run.last['deleted_disks']) == ['/var/lib/libvirt/images/life1.test.qcow2', '/var/lib/libvirt/images/life1.test@data.qcow2']
        assert name not in testbed.domains('host0')
        files = testbed.host_files('host0')
        assert 'life1.test.qcow2' not in files and 'life1.test@data.qcow2' not in files and 'life.iso' in files
        gone = vm(cloud, name, state='absent')
        assert gone.rc == 0 and gone.last['changed'] is False and gone.last['host'] is None, gone
    finally:
        undefine(testbed, 'host0', name)
        os.unlink(iso_outside)


@pytest.fixture
def victim(testbed):
    """A stopped VM on host1 and a VM name defined on both host0 and host2."""
    define(testbed, 'host1', 'victim.test')
    define(testbed, 'host0', 'twin.test')
    define(testbed, 'host2', 'twin.test')
    yield 'victim.test'
    undefine(testbed, 'host1', 'victim.test')
    undefine(testbed, 'host0', 'twin.test')
    undefine(testbed, 'host2', 'twin.test')


@pytest.mark.parametrize('name, settings, message', [
    ('nosuch.test', {'state': 'running'}, 'no VM named nosuch.test on any reachable host'),
    ('victim.test', {'memory': '2X', 'vcpus': 3}, "bad size '2X': give a number with a unit K, M, G or T"),
    ('victim.test', {'disks': [{'size': '10Q'}], 'vcpus': 3}, "bad size '10Q'"),
    ('victim.test', {'iso': '/var/lib/libvirt/images/nosuch.iso', 'vcpus': 3},
     'the ISO /var/lib/libvirt/images/nosuch.iso does not exist on host1'),
    ('twin.test', {'state': 'running'}, 'twin.test is defined on several hosts: host0, host2'),
    ('twin.test', {'state': 'absent'}, 'twin.test is defined on several hosts: host0, host2'),
])
def test_vm_bad_input_fails_clearly_and_changes_nothing(cloud, testbed, victim, name, settings, message):
    before = {h: (testbed.domains(h), testbed.host_files(h)) for h in testbed.hosts}
    xml_before = persistent_xml(testbed, 'host1', victim)
    jobs_before = len(cloud.jobs())
    run = vm(cloud, name, **settings)
    assert run.rc != 0 and run.failed, run
    assert message in run.failed[0]['msg']
    assert {h: (testbed.domains(h), testbed.host_files(h)) for h in testbed.hosts} == before
    assert persistent_xml(testbed, 'host1', victim) == xml_before
    assert state(testbed, 'host0', 'twin.test') == state(testbed, 'host2', 'twin.test') == 'shut off'
    assert len(cloud.jobs()) == jobs_before


def test_vm_absent_refuses_an_original_image(cloud, testbed):
    run = vm(cloud, 'rhel.original', state='absent')
    assert run.rc != 0 and 'rhel.original on host2 is an original image' in run.failed[0]['msg'], run
    assert 'rhel.original' in testbed.domains('host2')
