# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The maglica.cloud.maglica inventory plugin through ansible-inventory, listing a VM made by a clone."""

from __future__ import annotations

import json
import os
import subprocess

import yaml

from maglica_testbed import PYTHON, ROOT, ansible_env, run_playbook

PLAYBOOKS = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'playbooks')
VM = 'inv1.test'


def inventory(path, *args):
    proc = subprocess.run([os.path.join(os.path.dirname(PYTHON), 'ansible-inventory'), '-i', path, '--list'] + list(args),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, env=ansible_env(),
                          cwd=ROOT, check=False)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout, object_hook=trusted), proc.stderr


def trusted(value):
    # Inventory values from a collection's plugin are untrusted (never templated): the listing marks them so.
    return value['__ansible_unsafe'] if list(value) == ['__ansible_unsafe'] else value


def members(listing, group):
    return set(listing.get(group, {}).get('hosts', []))


def test_inventory_lists_a_clone_grouped_by_host_and_state(cloud, testbed, tmp_path):
    clone = run_playbook(os.path.join(PLAYBOOKS, 'vm_clone.yml'), {'maglica_config': cloud.path, 'image': 'debian.original',
                                                                   'hostname': VM, 'host': 'host0', 'clone_mode': 'linked'})
    assert clone.rc == 0, clone
    source = str(tmp_path / 'cloud.maglica.yml')
    with open(source, 'w') as handle:
        yaml.safe_dump({
            'plugin': 'maglica.cloud.maglica',
            'config': cloud.path,
            'keyed_groups': [{'key': 'maglica_clone_of', 'prefix': 'image'}],
            'groups': {'small': 'maglica_memory_mb <= 256'},
            'compose': {'vnc': "'127.0.0.1:%d' % maglica_vnc_port"},
            'cache': True,
            'cache_plugin': 'ansible.builtin.jsonfile',
            'cache_connection': str(tmp_path / 'cache'),
        }, handle)
    try:
        listing, _stderr = inventory(source)
        hostvars = listing['_meta']['hostvars']
        assert VM in hostvars and 'debian.original' not in hostvars and 'rhel.original' not in hostvars
        facts = hostvars[VM]
        port = int(testbed.virsh('host0', 'vncdisplay', VM).strip().rsplit(':', 1)[1]) + 5900
        assert facts['maglica_host'] == 'host0' and facts['maglica_state'] == 'running' and facts['maglica_clone_of'] == 'debian.original'
        assert facts['maglica_vnc_port'] == port and facts['vnc'] == '127.0.0.1:%d' % port
        assert facts['maglica_disks'][0]['path'] == '/var/lib/libvirt/images/%s.qcow2' % VM
        # The testbed's guests use user-mode networking without a guest agent: libvirt knows no address, so none is made up.
        assert facts['maglica_addresses'] == [] and 'ansible_host' not in facts
        assert VM in members(listing, 'maglica_host_host0') and VM in members(listing, 'maglica_state_running')
        assert VM in members(listing, 'image_debian_original') and VM in members(listing, 'small')
        assert VM not in members(listing, 'maglica_host_host1')

        # Cached: the listing does not ask libvirt again until the cache is flushed.
        testbed.virsh('host0', 'destroy', VM)
        cached, _stderr = inventory(source)
        assert VM in members(cached, 'maglica_state_running')
        fresh, _stderr = inventory(source, '--flush-cache')
        assert VM in members(fresh, 'maglica_state_stopped') and VM not in members(fresh, 'maglica_state_running')

        with open(source, 'w') as handle:
            yaml.safe_dump({'plugin': 'maglica.cloud.maglica', 'config': cloud.path, 'include_images': True}, handle)
        everything, _stderr = inventory(source)
        assert {'debian.original', 'rhel.original', VM} <= set(everything['_meta']['hostvars'])
        assert everything['_meta']['hostvars']['rhel.original']['maglica_image'] is True
    finally:
        testbed.virsh('host0', 'destroy', VM, check=False)
        testbed.virsh('host0', 'undefine', VM, '--remove-all-storage', check=False)


def test_inventory_reports_an_unreachable_host_and_lists_the_others(cloud, tmp_path):
    data = dict(cloud.data, hosts=cloud.data['hosts'] + [{'name': 'dead', 'address': '127.0.0.254', 'weight': 10}])
    path = cloud.write_config('inventory-with-dead-host.conf', data)
    source = str(tmp_path / 'dead.maglica.yml')
    with open(source, 'w') as handle:
        yaml.safe_dump({'plugin': 'maglica.cloud.maglica', 'config': path, 'include_images': True}, handle)
    listing, stderr = inventory(source)
    assert 'rhel.original' in listing['_meta']['hostvars']
    assert 'host not reachable: dead' in stderr


def test_ansible_host_comes_from_the_addresses_libvirt_knows(tmp_path):
    # The testbed's guests have no address libvirt could know; libvirt's test driver reports one for its running
    # domain `test` through the same interfaceAddresses call. Hosts given inline, without a configuration file.
    source = str(tmp_path / 'inline.maglica.yml')
    with open(source, 'w') as handle:
        yaml.safe_dump({'plugin': 'maglica.cloud.maglica', 'hosts': [{'name': 'fake', 'uri': 'test:///default'}]}, handle)
    listing, _stderr = inventory(source)
    facts = listing['_meta']['hostvars']['test']
    assert facts['ansible_host'] == '192.168.122.3' and facts['maglica_host'] == 'fake'
    assert facts['maglica_addresses'][0]['interface'] == 'testnet0'
    assert 'test' in members(listing, 'maglica_host_fake') and 'test' in members(listing, 'maglica_state_running')
