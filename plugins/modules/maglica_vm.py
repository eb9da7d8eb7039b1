#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
module: maglica_vm
short_description: Manage the state and settings of one Maglica VM, wherever it runs
version_added: 1.0.0
description:
  - Finds the VM called O(name) on whichever configured host defines it, asking every host at once,
    and brings it to O(state) with the given settings. Only what differs is changed.
  - Settings are written to the VM's persistent definition. On a VM that runs (and stays running) they take
    effect at its next start; the module then returns RV(restart_required=true) and a warning.
  - Removing a VM (O(state=absent)) and adding disks go through the host worker of its host, which deletes or
    creates the disk volumes there.
  - A VM name defined on several hosts is refused; remove all but one first.
author: Maglica contributors (@maglica)
options:
  name:
    description: Name of the VM (its libvirt domain name).
    type: str
    required: true
  state:
    description:
      - V(running) starts (or resumes) it.
      - V(stopped) shuts it down gracefully and waits until it is off, for at most O(timeout) seconds.
      - V(destroyed) powers it off at once.
      - V(absent) undefines it and deletes its disks. A running VM is refused unless O(force); an original image, or a VM
        whose disks back linked clones, is refused unless O(force_dependants).
      - Unset, the state is left as it is and only the settings are applied.
    type: str
    choices: [running, stopped, destroyed, absent]
  force:
    description:
      - With O(state=stopped), destroy the VM when it has not shut down within O(timeout).
      - With O(state=absent), stop it first when it runs. It does not remove an image, or what other VMs depend on; that
        takes O(force_dependants).
    type: bool
    default: false
  force_dependants:
    description:
      - With O(state=absent), also remove an original image, or a VM whose disks are the backing files of linked clones.
        Those linked clones (its dependants) are removed first, with their disks; the result names them in
        RV(removed_dependants).
      - The host worker checks this again when it runs the removal.
    type: bool
    default: false
  timeout:
    description: Seconds to wait for a graceful shutdown, and for each host worker job.
    type: int
    default: 120
  vcpus:
    description: Number of virtual CPUs.
    type: int
  memory:
    description: Memory, with a unit K, M, G or T (powers of 1024), for example V(512M) or V(2G). A bare number is MiB.
    type: str
  iso:
    description:
      - Absolute path of an ISO image on the VM's host to put in its CD-ROM drive; a drive is added when it has none.
      - The ISO must be in one of the host's libvirt storage pools (for example its C(default) pool directory).
      - An empty string empties the drive.
    type: str
  boot_device:
    description: Boot from this device, or from these in this order.
    type: list
    elements: str
    choices: [hd, cdrom, network, fd]
  disks:
    description:
      - Extra disks the VM must have. Each missing one is created as a qcow2 volume beside the VM's first disk,
        called C(NAME@DISKNAME.qcow2), and attached. Disks already there are left as they are (also those called
        C(NAME-DISKNAME.qcow2), as earlier versions named them).
    type: list
    elements: dict
    suboptions:
      size:
        description: Size with a unit, for example V(10G). A bare number is GiB.
        type: str
        required: true
      name:
        description:
          - Name of the disk, part of its volume name. Defaults to C(data1), C(data2)... by position.
          - Letters, digits and C(. _ + -); C(disk1), C(disk2)... are kept for the further disks of clones.
        type: str
extends_documentation_fragment:
  - maglica.cloud.maglica
attributes:
  check_mode:
    support: full
    description: Reports what would change and changes nothing.
  diff_mode:
    support: full
    description: The settings and state before and after.
'''

EXAMPLES = r'''
- name: Two CPUs and 2 GiB, booting from an installer ISO, with a data disk
  maglica.cloud.maglica_vm:
    name: web1
    vcpus: 2
    memory: 2G
    iso: /var/lib/libvirt/images/debian-12.iso
    boot_device: [cdrom, hd]
    disks:
      - size: 10G
        name: data

- name: Shut it down, destroying it if it has not stopped after a minute
  maglica.cloud.maglica_vm:
    name: web1
    state: stopped
    timeout: 60
    force: true

- name: Remove it with its disks
  maglica.cloud.maglica_vm:
    name: web1
    state: absent

- name: Remove an original image, and first the linked clones that are backed by its disks
  maglica.cloud.maglica_vm:
    name: debian.original
    state: absent
    force_dependants: true
'''

RETURN = r'''
host:
  description: The host the VM is defined on (V(null) when it does not exist).
  returned: always
  type: str
  sample: kvm1.example.com
state:
  description: Its state afterwards, V(running), V(stopped), V(absent) or libvirt's word (V(paused)...).
  returned: always
  type: str
restart_required:
  description: Settings were changed on a running VM; they take effect at its next start.
  returned: always
  type: bool
changes:
  description: What was (or in check mode would be) changed, in words.
  returned: always
  type: list
  elements: str
  sample: ['vcpus 1 -> 2', 'state stopped -> running']
jobs:
  description: The host worker jobs that ran (removal, disks).
  returned: always
  type: list
  elements: dict
vm:
  description: The VM afterwards, as M(maglica.cloud.maglica_vm_info) describes it (V(null) when absent).
  returned: always
  type: dict
deleted_disks:
  description: Disk paths deleted with the VM (and with its dependants).
  returned: when state=absent removed it
  type: list
  elements: str
removed_dependants:
  description: The linked clones removed before the VM because its disks backed theirs (O(force_dependants)).
  returned: when state=absent removed it
  type: list
  elements: str
  sample: [web1, web2]
'''

from typing import Any, Dict, List

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.maglica.cloud.plugins.module_utils import common
from ansible_collections.maglica.cloud.plugins.module_utils.maglica.controller import cloud


def render(settings: Dict[str, Any]) -> str:
    lines: List[str] = []
    for key in sorted(settings):
        value = settings[key]
        if isinstance(value, list):
            value = ', '.join(value) or '(none)'
        lines.append('%s: %s\n' % (key, '(none)' if value is None else value))
    return ''.join(lines)


def main() -> None:
    module = AnsibleModule(
        argument_spec=common.argument_spec(
            name=dict(type='str', required=True),
            state=dict(type='str', choices=['running', 'stopped', 'destroyed', 'absent']),
            force=dict(type='bool', default=False),
            force_dependants=dict(type='bool', default=False),
            timeout=dict(type='int', default=120),
            vcpus=dict(type='int'),
            memory=dict(type='str'),
            iso=dict(type='str'),
            boot_device=dict(type='list', elements='str', choices=['hd', 'cdrom', 'network', 'fd']),
            disks=dict(type='list', elements='dict', options=dict(
                size=dict(type='str', required=True),
                name=dict(type='str'),
            )),
        ),
        supports_check_mode=True,
    )
    p = module.params

    def ensure(config: common.Config) -> Dict[str, Any]:
        return dict(cloud.ensure_vm(config, p['name'], state=p['state'], vcpus=p['vcpus'], memory=p['memory'], iso=p['iso'],
                                    boot_device=p['boot_device'], disks=p['disks'], force=p['force'], timeout=p['timeout'],
                                    force_dependants=p['force_dependants'], check_mode=module.check_mode))

    outcome = common.run(module, ensure, 'libvirt', 'zmq')
    before, after = outcome.pop('before'), outcome.pop('after')
    if module._diff and outcome['changed']:
        where = '%s on %s' % (p['name'], outcome['host'])
        outcome['diff'] = {'before_header': where, 'after_header': where, 'before': render(before), 'after': render(after)}
    if outcome.get('message'):
        module.warn(outcome['message'])
    common.exit_json(module, **outcome)


if __name__ == '__main__':
    main()
