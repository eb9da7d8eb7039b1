#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
module: maglica_vm_info
short_description: List the VMs on every Maglica host
version_added: 1.0.0
description:
  - Lists every libvirt domain of a Maglica cloud, asking every configured host's libvirtd at once -
    clones, other VMs and the original images (flagged with RV(vms[].image)).
  - A host whose libvirtd cannot be reached is reported in RV(hosts) and does not stop the listing of the others.
author: Maglica contributors (@maglica)
options:
  name:
    description: Only VMs whose name matches one of these shell patterns.
    type: list
    elements: str
    aliases: [names]
  host:
    description: Only ask these hosts.
    type: list
    elements: str
  state:
    description:
      - Only VMs in one of these states. V(stopped) matches every inactive VM; libvirt's own words
        (V(running), V(paused), V(shutoff), V(crashed)...) match too.
    type: list
    elements: str
  snapshots:
    description:
      - Also list each VM's snapshots (RV(vms[].snapshots)), read by its host worker (a read-only job per VM, so the
        client worker must answer). Original images have none listed.
    type: bool
    default: false
    version_added: 1.1.0
extends_documentation_fragment:
  - maglica.cloud.maglica
  - maglica.cloud.attributes.info_module
'''

EXAMPLES = r'''
- name: Every VM of the cloud
  maglica.cloud.maglica_vm_info:
    config: /etc/maglica.conf
  register: vms

- name: Running web servers on one host
  maglica.cloud.maglica_vm_info:
    name: ['web*']
    host: [kvm1.example.com]
    state: [running]
'''

RETURN = r'''
vms:
  description: One entry per domain, sorted by name and host.
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: Domain name.
      type: str
    host:
      description: Host it is defined on.
      type: str
    state:
      description: libvirt's state word (V(running), V(shutoff), V(paused)...).
      type: str
    active:
      description: Whether it runs.
      type: bool
    image:
      description: Whether it is an original image (an inactive domain that is not a Maglica clone).
      type: bool
    clone_of:
      description: The image it was cloned from, for Maglica clones.
      type: str
    spread_group:
      description:
        - The spread group the clone was placed in (O(maglica.cloud.maglica_vm_clone#module:spread_group)), read from
          its libvirt metadata; null for VMs cloned without one and for images.
      type: str
    vcpus:
      description: Virtual CPUs.
      type: int
    memory_mb:
      description: Memory in MiB.
      type: int
    disks:
      description: Disks with C(target), C(path), C(format), C(device), C(capacity) and C(allocation) in bytes.
      type: list
      elements: dict
    iso:
      description: The ISO in its CD-ROM drive, if any.
      type: str
    interfaces:
      description: Network interfaces with C(type) and C(mac).
      type: list
      elements: dict
    vnc_port:
      description: VNC TCP port while it runs.
      type: int
    vnc_display:
      description: VNC display number (port - 5900) while it runs.
      type: int
    snapshots:
      description:
        - With O(snapshots=true), the VM's snapshots, oldest first, each with C(name), C(creation_time) (seconds since
          the epoch), C(state) (the VM's state when taken), C(memory) (whether its RAM is in it), C(external),
          C(description), C(parent), C(current) and C(size) (bytes of guest memory it holds; an internal snapshot's
          disk clusters are shared with the live disk and have no size of their own).
      type: list
      elements: dict
      returned: with O(snapshots=true), for VMs that are not original images
      version_added: 1.1.0
  sample:
    - {name: web1, host: kvm1.example.com, state: running, active: true, image: false, clone_of: debian.original, spread_group: web,
       vcpus: 1, memory_mb: 512, iso: null, vnc_port: 5901, vnc_display: 1, interfaces: [{type: network, mac: '52:54:00:12:34:56'}],
       disks: [{target: vda, path: /var/lib/libvirt/images/web1.qcow2, format: qcow2, device: disk,
                capacity: 2147483648, allocation: 321912832}]}
hosts:
  description: Every host asked, whether it answered, and how many VMs it listed.
  returned: always
  type: list
  elements: dict
  sample: [{host: kvm1.example.com, reachable: true, error: null, vms: 3}]
unreachable_hosts:
  description: Errors of the hosts that could not be asked.
  returned: always
  type: list
  elements: str
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.maglica.cloud.plugins.module_utils import common
from ansible_collections.maglica.cloud.plugins.module_utils.maglica.controller import cloud


def main() -> None:
    module = AnsibleModule(
        argument_spec=common.argument_spec(
            name=dict(type='list', elements='str', aliases=['names']),
            host=dict(type='list', elements='str'),
            state=dict(type='list', elements='str'),
            snapshots=dict(type='bool', default=False),
        ),
        supports_check_mode=True,
    )
    p = module.params
    if p['snapshots']:
        listing = common.run(module, lambda config: cloud.vm_list_with_snapshots(config, p['name'], p['host'], p['state']),
                             'libvirt', 'zmq')
    else:
        listing = common.run(module, lambda config: dict(cloud.vm_list(config, p['name'], p['host'], p['state'])), 'libvirt')
    unreachable = [h['error'] for h in listing['hosts'] if not h['reachable']]
    for error in unreachable:
        module.warn('host not reachable: %s' % error)
    module.exit_json(changed=False, vms=listing['vms'], hosts=listing['hosts'], unreachable_hosts=unreachable)


if __name__ == '__main__':
    main()
