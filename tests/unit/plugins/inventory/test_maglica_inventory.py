# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The inventory plugin, run by ansible-inventory, never trusts what a guest reported (issue 18, item 10).

The plugin's guest data reaches it two ways: from libvirt (the library parses it, see test_guest_addresses.py)
and from the inventory cache, which holds what an earlier run (perhaps of an older version) read from the
guests. The cache is a real, writable input: a run against libvirt's test driver fills it, then the test puts
a lying agent's addresses into it, and the plugin must still only trust parsed IP addresses.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import yaml

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..', '..', '..'))
INVENTORY = os.path.join(os.path.dirname(sys.executable), 'ansible-inventory')
KEY = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHk6r9gRqgK0i2m3CJ6Bd3vq3ZyLkA7o2Yx0Hc1Zb9mX'
HOSTILE = ['10.0.0.9,*', '10.0.0.8\n* ssh-rsa AAAAB3NzaC1yc2E', '*', '-oProxyCommand=touch /tmp/pwned']


def ansible_inventory(source):
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=os.path.join(ROOT, 'build', 'collections'), ANSIBLE_NOCOLOR='1',
               ANSIBLE_INVENTORY_UNPARSED_WARNING='false', ANSIBLE_LOCALHOST_WARNING='false', PYTHONPATH='')
    proc = subprocess.run([INVENTORY, '-i', source, '--list'], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, env=env, cwd=ROOT, check=False)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout, object_hook=lambda v: v['__ansible_unsafe'] if list(v) == ['__ansible_unsafe'] else v), proc.stderr


def write_cache(path, stored, vms):
    with open(path, 'w') as handle:
        json.dump(dict(stored, __payload__=json.dumps(vms)), handle)


def address(text, kind='ipv4'):
    return {'interface': 'eth0', 'mac': '52:54:00:12:34:56', 'address': text, 'prefix': 24, 'family': kind}


def test_hostile_cached_addresses_never_reach_ansible_host_or_known_hosts(tmp_path):
    cache, known_hosts = tmp_path / 'cache', tmp_path / 'known_hosts'
    source = str(tmp_path / 'sim.maglica.yml')
    with open(source, 'w') as handle:
        yaml.safe_dump({'plugin': 'maglica.cloud.maglica', 'hosts': [{'name': 'sim', 'uri': 'test:///default'}],
                        'cache': True, 'cache_plugin': 'ansible.builtin.jsonfile', 'cache_connection': str(cache),
                        'known_hosts_file': str(known_hosts)}, handle)
    listing, _stderr = ansible_inventory(source)
    assert listing['_meta']['hostvars']['test']['ansible_host'] == '192.168.122.3'
    [cache_file] = [str(cache / name) for name in os.listdir(str(cache))]
    with open(cache_file) as handle:
        stored = json.load(handle)  # ansible's jsonfile cache: the value as JSON text in __payload__
    vms = json.loads(stored['__payload__'])
    [entry] = [vm for vm in vms if vm['name'] == 'test']
    entry['ssh_host_keys'] = [KEY]

    # Only hostile addresses: no ansible_host, and known_hosts names the VM by its name alone.
    entry['addresses'] = [address(text) for text in HOSTILE]
    write_cache(cache_file, stored, vms)
    listing, stderr = ansible_inventory(source)
    facts = listing['_meta']['hostvars']['test']
    assert 'ansible_host' not in facts and facts['maglica_addresses'] == []
    assert known_hosts.read_text() == 'test %s\n' % KEY
    assert facts['maglica_known_hosts'] == ['test %s' % KEY]
    assert stderr.count('not an IP address') == len(HOSTILE), stderr

    # Hostile addresses first, a real one after them: that one is ansible_host, and the only address named.
    entry['addresses'] = [address(text) for text in HOSTILE] + [address('2001:DB8::7', 'ipv6'), address('10.0.0.7')]
    write_cache(cache_file, stored, vms)
    listing, stderr = ansible_inventory(source)
    facts = listing['_meta']['hostvars']['test']
    assert facts['ansible_host'] == '10.0.0.7'
    assert [a['address'] for a in facts['maglica_addresses']] == ['10.0.0.7', '2001:db8::7']
    assert known_hosts.read_text() == 'test,10.0.0.7 %s\n' % KEY


def test_agent_connection_goes_through_libvirt_qemu_with_the_host_uri(tmp_path):
    source = str(tmp_path / 'agent.maglica.yml')
    with open(source, 'w') as handle:
        yaml.safe_dump({'plugin': 'maglica.cloud.maglica', 'hosts': [{'name': 'sim', 'uri': 'test:///default'}]}, handle)
    facts = ansible_inventory(source)[0]['_meta']['hostvars']['test']
    assert facts['maglica_libvirt_uri'] == 'test:///default' and 'ansible_connection' not in facts
    with open(source, 'w') as handle:
        yaml.safe_dump({'plugin': 'maglica.cloud.maglica', 'hosts': [{'name': 'sim', 'uri': 'test:///default'}],
                        'agent_connection': True}, handle)
    facts = ansible_inventory(source)[0]['_meta']['hostvars']['test']
    assert facts['ansible_connection'] == 'community.libvirt.libvirt_qemu'
    assert facts['ansible_libvirt_uri'] == 'test:///default' and facts['ansible_host'] == 'test'
