# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
name: maglica
short_description: Every VM of a Maglica cloud as an inventory host
version_added: 1.0.0
description:
  - Asks every host of a Maglica cloud's libvirtd at once for its domains and makes each VM an inventory host,
    named after its domain.
  - Groups each VM by hypervisor (C(maglica_host_<host>)) and by state (C(maglica_state_running),
    C(maglica_state_stopped)...), and sets C(ansible_host) to the guest's address where libvirt knows it,
    from the DHCP leases of its libvirt network or from the QEMU guest agent.
  - What the guest agent reports is the guest's choice, so only values that parse as IP addresses become C(ansible_host),
    C(maglica_addresses) or names in known_hosts lines; anything else is dropped with a warning.
  - Sets C(maglica_host), C(maglica_state), C(maglica_vcpus), C(maglica_memory_mb), C(maglica_disks),
    C(maglica_vnc_port), C(maglica_clone_of), C(maglica_spread_group), C(maglica_uuid) and C(maglica_addresses) on each VM.
  - Sets C(maglica_ssh_host_keys) (the public SSH host keys written into a clone, from its libvirt metadata) and
    C(maglica_known_hosts) (known_hosts lines naming it by its name, short name and address).
  - With O(known_hosts_file), writes every clone's C(maglica_known_hosts) lines into that file and points the
    SSH connection at it with strict host key checking, so that Ansible's first connection to a new clone
    checks the key the clone was given, not whatever answers (no trust on first use).
  - The inventory file's name must end in C(maglica.yml) or C(maglica.yaml).
  - A host whose libvirtd cannot be reached is skipped with a warning.
author: Maglica contributors (@maglica)
extends_documentation_fragment:
  - maglica.cloud.maglica
  - constructed
  - inventory_cache
options:
  plugin:
    description: The name of this plugin; it marks a file as this plugin's.
    required: true
    type: str
    choices: [maglica.cloud.maglica]
  include_images:
    description: Also list the original images (inactive domains that are not Maglica clones).
    type: bool
    default: false
  agent_connection:
    description:
      - Reach the VMs through their QEMU guest agent instead of SSH, with community.libvirt's C(libvirt_qemu) connection
        (install the community.libvirt collection). Each running VM gets C(ansible_connection) set to
        C(community.libvirt.libvirt_qemu), C(ansible_libvirt_uri) set to its hypervisor's libvirt URI (with the
        TLS certificates of the configuration's C(libvirt.pki_path)), and C(ansible_host) set to its domain name.
      - The guest needs C(qemu-guest-agent) running and allowing C(guest-exec) and C(guest-file-*) (Debian's does), and no
        SSH at all. Every command and file of a task goes through the agent, whose calls are slower than SSH.
      - C(maglica_libvirt_uri) is set on every VM either way.
    type: bool
    default: false
    version_added: 1.1.0
  known_hosts_file:
    description:
      - A file this plugin (re)writes with the known_hosts lines of every clone that has recorded host keys.
      - Clones with host keys then get C(ansible_ssh_common_args) with C(UserKnownHostsFile) set to this file and
        C(StrictHostKeyChecking=yes).
    type: path
'''

EXAMPLES = r'''
# cloud.maglica.yml
plugin: maglica.cloud.maglica
config: /etc/maglica.conf
keyed_groups:
  - key: maglica_clone_of
    prefix: image
compose:
  ansible_user: "'root'"
known_hosts_file: ~/.cache/maglica/known_hosts
cache: true
cache_plugin: ansible.builtin.jsonfile
cache_connection: /var/cache/ansible/maglica
'''

import os
import re
import tempfile
from typing import Any, Dict, List, Optional

from ansible.errors import AnsibleError
from ansible.plugins.inventory import BaseInventoryPlugin, Cacheable, Constructable

from ansible_collections.maglica.cloud.plugins.module_utils.maglica.controller import cloud
from ansible_collections.maglica.cloud.plugins.module_utils.maglica.errors import MaglicaError

CONNECTION_OPTIONS = ('client', 'libvirt', 'security', 'placement')
# The configuration the facade loads (its type is not exported) and a VM of its inventory listing.
Config = Any
VM = Dict[str, Any]


def group_name(prefix: str, value: Any) -> str:
    return '%s_%s' % (prefix, re.sub(r'[^A-Za-z0-9_]', '_', str(value)))


def write_known_hosts(path: str, lines: List[str]) -> None:
    """Replace `path` with `lines` at once (a reader never sees half a file)."""
    directory = os.path.dirname(path) or '.'
    os.makedirs(directory, mode=0o700, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=directory, prefix='.known_hosts.')
    try:
        with os.fdopen(handle, 'w') as out:
            out.write(''.join('%s\n' % line for line in lines))
        os.chmod(temporary, 0o600)
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise


class InventoryModule(BaseInventoryPlugin, Constructable, Cacheable):

    NAME = 'maglica.cloud.maglica'

    def verify_file(self, path: str) -> bool:
        return super(InventoryModule, self).verify_file(path) and path.endswith(('maglica.yml', 'maglica.yaml'))

    def load_config(self) -> Config:
        inline: Dict[str, Any] = {}
        if self.get_option('hosts'):
            inline['hosts'] = [{k: v for k, v in h.items() if v is not None} for h in self.get_option('hosts')]
        for section in CONNECTION_OPTIONS:
            if self.get_option(section):
                inline[section] = {k: v for k, v in self.get_option(section).items() if v is not None}
        return cloud.load_config(self.get_option('config'), inline or None)

    def fetch(self) -> List[VM]:
        try:
            listing = cloud.inventory(self.load_config(), include_images=self.get_option('include_images'))
        except MaglicaError as e:
            raise AnsibleError('maglica inventory: %s' % e)
        for entry in listing['hosts']:
            if not entry['reachable']:
                self.display.warning('maglica inventory: host not reachable: %s' % entry['error'])
        return listing['vms']

    def parse(self, inventory: Any, loader: Any, path: str, cache: bool = True) -> None:
        super(InventoryModule, self).parse(inventory, loader, path, cache)
        self._read_config_data(path)
        cache_key = self.get_cache_key(path)
        use_cache = self.get_option('cache') and cache
        update_cache = self.get_option('cache') and not cache
        vms = None
        if use_cache:
            try:
                vms = self._cache[cache_key]
            except KeyError:
                update_cache = True
        if vms is None:
            vms = self.fetch()
        if update_cache:
            self._cache[cache_key] = vms
        try:
            config = self.load_config()
        except MaglicaError as e:
            raise AnsibleError('maglica inventory: %s' % e)
        # Each hypervisor's libvirt URI, from the configuration (never from the cache, which is only data).
        self.populate(vms, {host.name: config.uri(host) for host in config.hosts})

    def addresses(self, name: str, reported: Any) -> List[Dict[str, Any]]:
        """The guest's addresses, parsed again: they may come from the cache, written by an older version.

        Whatever a guest reports is its choice; only IP addresses (ipaddress) become ansible_host or a known_hosts name.
        """
        interfaces: Dict[Optional[str], Dict[str, Any]] = {}
        for address in reported if isinstance(reported, list) else []:
            if not isinstance(address, dict):
                continue
            iface = interfaces.setdefault(address.get('interface'), {'hwaddr': address.get('mac'), 'addrs': []})
            iface['addrs'].append({'addr': address.get('address'), 'prefix': address.get('prefix')})
        warnings: List[str] = []
        parsed = cloud.interface_addresses(interfaces, warnings)
        for line in warnings:
            self.display.warning('maglica inventory: %s: %s' % (name, line))
        return [dict(address) for address in parsed]

    def populate(self, vms: List[VM], uris: Dict[str, str]) -> None:
        strict = self.get_option('strict')
        known_hosts_file = self.get_option('known_hosts_file')
        known_hosts: List[str] = []
        seen: Dict[str, str] = {}
        for entry in vms:
            name = entry['name']
            if name in seen:
                self.display.warning('maglica inventory: %s is defined on %s and %s; the inventory keeps the one on %s'
                                     % (name, seen[name], entry['host'], entry['host']))
            seen[name] = entry['host']
            for warning in entry.get('address_warnings') or []:
                self.display.warning('maglica inventory: %s' % warning)
            self.inventory.add_host(name)
            variables = {
                'maglica_host': entry['host'],
                'maglica_state': cloud.state_word(entry),
                'maglica_vcpus': entry['vcpus'],
                'maglica_memory_mb': entry['memory_mb'],
                'maglica_disks': entry['disks'],
                'maglica_vnc_port': entry['vnc_port'],
                'maglica_clone_of': entry['clone_of'],
                'maglica_spread_group': entry.get('spread_group'),
                'maglica_image': entry['image'],
                'maglica_uuid': entry['uuid'],
                'maglica_addresses': self.addresses(name, entry.get('addresses')),
                'maglica_libvirt_uri': uris.get(entry['host']),
            }
            if variables['maglica_addresses']:
                variables['ansible_host'] = variables['maglica_addresses'][0]['address']
            variables['maglica_ssh_host_keys'] = entry.get('ssh_host_keys') or []
            names = cloud.clone_names(name, variables.get('ansible_host'))
            try:
                variables['maglica_known_hosts'] = cloud.known_hosts_lines(names, variables['maglica_ssh_host_keys'])
            except MaglicaError as e:
                self.display.warning('maglica inventory: %s: no known_hosts lines: %s' % (name, e))
                variables['maglica_known_hosts'] = []
            if known_hosts_file and variables['maglica_known_hosts']:
                known_hosts.extend(variables['maglica_known_hosts'])
                variables['ansible_ssh_common_args'] = '-o UserKnownHostsFile=%s -o StrictHostKeyChecking=yes' % known_hosts_file
            if self.get_option('agent_connection') and entry.get('active') and variables['maglica_libvirt_uri']:
                # libvirt_qemu takes the domain's name from ansible_host (else the inventory name).
                variables.update({'ansible_connection': 'community.libvirt.libvirt_qemu', 'ansible_host': name,
                                  'ansible_libvirt_uri': variables['maglica_libvirt_uri']})
            for key, value in variables.items():
                self.inventory.set_variable(name, key, value)
            for group in (group_name('maglica_host', entry['host']), group_name('maglica_state', variables['maglica_state'])):
                self.inventory.add_group(group)
                self.inventory.add_child(group, name)
            self._set_composite_vars(self.get_option('compose'), variables, name, strict=strict)
            self._add_host_to_composed_groups(self.get_option('groups'), variables, name, strict=strict)
            self._add_host_to_keyed_groups(self.get_option('keyed_groups'), variables, name, strict=strict)
        if known_hosts_file:
            write_known_hosts(known_hosts_file, known_hosts)
