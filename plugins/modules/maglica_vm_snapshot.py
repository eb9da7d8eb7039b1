#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
module: maglica_vm_snapshot
short_description: Create, revert to and delete snapshots of a Maglica VM
version_added: 1.1.0
description:
  - Manages internal qcow2 snapshots of a VM, wherever it runs. The VM's host worker makes, reverts and deletes them
    as jobs, durable in the client worker's job log and reconciled after a restart.
  - A linked clone's snapshot lives in its own overlay; the image's disk is never written. Original images are not
    snapshotted.
  - "What the host's libvirt cannot do is refused, naming the reason: disks that are not qcow2 (raw disks cannot hold
    internal snapshots), UEFI (pflash) VMs before libvirt 10.9, reverting external snapshots before libvirt 9.9."
  - Without O(memory), a running guest's filesystems are frozen through its QEMU guest agent around the snapshot
    (RV(consistency=quiesced)); without an agent the snapshot is crash-consistent (RV(consistency=crash)).
    libvirt 9.0 keeps the memory of a running VM in every internal snapshot; a revert to a snapshot taken frozen
    thaws the guest again.
author: Maglica contributors (@maglica)
options:
  vm:
    description: The VM.
    type: str
    required: true
  name:
    description: The snapshot's name (1 to 63 letters, digits and C(. _ + -)).
    type: str
    required: true
  state:
    description:
      - V(present) makes the snapshot if the VM has none of that name (then prunes, see O(keep)).
      - V(absent) deletes it.
      - V(reverted) rolls the VM back to it. A revert always reverts and reports a change, also when run twice
        in a row - libvirt cannot tell whether the VM moved on since its last revert, and a rollback is what was asked.
        A snapshot of a running VM brings it back running; one of a stopped VM leaves it stopped.
    type: str
    choices: [present, absent, reverted]
    default: present
  memory:
    description: For a running VM, save its memory too, so that a revert resumes its processes where they were.
    type: bool
    default: false
  description:
    description: One line kept with the snapshot.
    type: str
  keep:
    description:
      - With O(state=present), keep at most this many snapshots of the VM, O(name) included; the oldest others are
        deleted (RV(pruned)).
    type: int
  timeout:
    description: Seconds to wait for the host worker's job (a snapshot with memory writes the guest's RAM).
    type: int
    default: 600
extends_documentation_fragment:
  - maglica.cloud.maglica
attributes:
  check_mode:
    support: full
    description: Reports what would change, refusals included, and changes nothing.
  diff_mode:
    support: full
    description: The VM's snapshot names before and after.
'''

EXAMPLES = r'''
- name: Snapshot web1 before its upgrade, keeping the last three
  maglica.cloud.maglica_vm_snapshot:
    vm: web1
    name: before-upgrade
    description: before apt full-upgrade
    keep: 3

- name: Roll back when the upgrade went wrong
  maglica.cloud.maglica_vm_snapshot:
    vm: web1
    name: before-upgrade
    state: reverted

- name: Snapshot with memory (processes resume after a revert)
  maglica.cloud.maglica_vm_snapshot:
    vm: web1
    name: live
    memory: true

- name: Delete it
  maglica.cloud.maglica_vm_snapshot:
    vm: web1
    name: live
    state: absent
'''

RETURN = r'''
vm:
  description: The VM.
  returned: always
  type: str
host:
  description: The host the VM is defined on.
  returned: always
  type: str
name:
  description: The snapshot.
  returned: always
  type: str
state:
  description: The state asked for.
  returned: always
  type: str
consistency:
  description:
    - How consistent a new snapshot is. V(memory) (its RAM saved, the guest resumes where it was), V(quiesced)
      (filesystems frozen by the guest agent), V(crash) (no agent answered - as after a power cut), V(offline)
      (the VM was stopped).
  returned: when a snapshot was made
  type: str
  sample: quiesced
memory:
  description: Whether the new snapshot holds the VM's memory.
  returned: when a snapshot was made
  type: bool
pruned:
  description: Snapshots deleted by O(keep), oldest first.
  returned: always
  type: list
  elements: str
thawed:
  description: After a revert to a running state, whether the guest agent thawed the filesystems.
  returned: when a revert ran on a running VM
  type: bool
job:
  description: The host worker's job.
  returned: when a job ran
  type: dict
'''

from typing import Any, Dict

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.maglica.cloud.plugins.module_utils import common
from ansible_collections.maglica.cloud.plugins.module_utils.maglica.controller import cloud


def main() -> None:
    module = AnsibleModule(
        argument_spec=common.argument_spec(
            vm=dict(type='str', required=True),
            name=dict(type='str', required=True),
            state=dict(type='str', choices=['present', 'absent', 'reverted'], default='present'),
            memory=dict(type='bool', default=False),
            description=dict(type='str'),
            keep=dict(type='int'),
            timeout=dict(type='int', default=600),
        ),
        supports_check_mode=True,
    )
    p = module.params

    def operation(config: common.Config) -> Dict[str, Any]:
        return dict(cloud.vm_snapshot(config, p['vm'], p['name'], state=p['state'], memory=p['memory'],
                                      description=p['description'], keep=p['keep'], check_mode=module.check_mode,
                                      timeout=p['timeout']))

    outcome = common.run(module, operation, 'libvirt', 'zmq')
    before, after = outcome.pop('before'), outcome.pop('after')
    if module._diff and outcome['changed']:
        where = 'snapshots of %s on %s' % (p['vm'], outcome['host'])
        outcome['diff'] = {'before_header': where, 'after_header': where,
                           'before': ''.join('%s\n' % n for n in before['snapshots']),
                           'after': ''.join('%s\n' % n for n in after['snapshots'])}
    common.exit_json(module, **outcome)


if __name__ == '__main__':
    main()
