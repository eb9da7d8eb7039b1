#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
module: maglica_vm_migrate
short_description: Move a Maglica VM to another host, live or cold, without shared storage
version_added: 1.1.0
description:
  - Moves the VM O(vm) to the host O(host), or, when O(host) is left out, to the host placement chooses, as for
    clones (spread groups, resources, the clones on their way), never the host it is on.
  - B(Live) (a running VM) is libvirt peer-to-peer. The source's libvirtd reaches the destination's with its host
    worker's client certificate, the QEMU migration stream is encrypted with QEMU's migration TLS (both set up by
    the C(host_worker) role, see its C(host_worker_migration_peers)), and the disks are copied. A linked clone
    copies only its overlay when the destination holds the same image (same name, disk path and size). The guest
    keeps running, its memory, processes and boot. The destination definition is persistent; the source's is
    removed, with its disks.
  - B(Cold) (a stopped VM) copies each disk file as M(maglica.cloud.maglica_image_copy) does (sparse streams between
    the libvirtds) and checks its sha256 on the destination, then defines the VM there. Internal qcow2 snapshots
    travel inside the files and their metadata is redefined; external snapshots cannot, and the migration is refused,
    naming them. A stopped linked clone goes only where its image is.
  - A live migration of a VM with snapshots is refused, naming them (libvirt 9.0 cannot, and QEMU's disk copy would
    not carry them); stop it and migrate it cold, or delete them.
  - When the migration fails, the VM stays where it was, running if it ran, and nothing is left on the destination.
  - When O(vm) already is on O(host), nothing changes.
author: Maglica contributors (@maglica)
options:
  vm:
    description: Name of the VM (its libvirt domain name).
    type: str
    required: true
    aliases: [name]
  host:
    description: The destination host, as named in the configuration. By default placement chooses one.
    type: str
  live:
    description:
      - V(true) migrates a running VM live, V(false) a stopped VM cold. By default a running VM goes live and a
        stopped one cold. V(true) for a stopped VM, or V(false) for a running one, fails naming it.
    type: bool
  timeout:
    description: Seconds to wait for the migration job to finish.
    type: int
    default: 1800
extends_documentation_fragment:
  - maglica.cloud.maglica
attributes:
  check_mode:
    support: full
    description: Reports where the VM would go (placement's candidates) and changes nothing.
  diff_mode:
    support: none
    description: No diff; RV(source) and RV(destination) say where it went.
'''

EXAMPLES = r'''
- name: Move web1 off kvm1 while it runs, wherever placement says
  maglica.cloud.maglica_vm_migrate:
    vm: web1.example.com

- name: Move a stopped VM to kvm3
  maglica.cloud.maglica_vm_migrate:
    vm: build1.example.com
    host: kvm3.example.com
    live: false
'''

RETURN = r'''
source:
  description: The host the VM was on.
  returned: always
  type: str
destination:
  description: The host it went to (or would go to, in check mode); the source when nothing changed.
  returned: always
  type: str
live:
  description: Whether the migration is live.
  returned: always
  type: bool
job_id:
  description: Id of the migration job; V(null) when nothing was submitted.
  returned: always
  type: str
result:
  description:
    - What the job did. C(disks), each C(target), C(path), C(copy) (V(overlay) or V(full)) and C(bytes);
      C(snapshots) carried; C(seconds); C(downtime_ms) (live, QEMU's own figure for the pause); C(migrate_s) (live, libvirt's migration call).
  returned: always
  type: dict
candidates:
  description: When placement chose, the hosts that could take the VM, best first.
  returned: always
  type: list
  elements: dict
filtered:
  description: When placement chose, the hosts left out, each with C(host) and C(reason).
  returned: always
  type: list
  elements: dict
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.maglica.cloud.plugins.module_utils import common
from ansible_collections.maglica.cloud.plugins.module_utils.maglica.controller import cloud


def main() -> None:
    module = AnsibleModule(
        argument_spec=common.argument_spec(
            vm=dict(type='str', required=True, aliases=['name']),
            host=dict(type='str'),
            live=dict(type='bool'),
            timeout=dict(type='int', default=1800),
        ),
        supports_check_mode=True,
    )
    p = module.params
    outcome = common.run(module, lambda config: cloud.vm_migrate(config, p['vm'], p['host'], p['live'], True, p['timeout'],
                                                                 module.check_mode), 'libvirt', 'zmq')
    common.exit_json(module, **outcome)


if __name__ == '__main__':
    main()
