#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
module: maglica_host
short_description: Put a Maglica host in maintenance and drain it, or bring it back
version_added: 1.1.0
description:
  - With O(state=maintenance), the host O(host) is taken out of placement at once, and stays out (the client worker
    keeps the flag in its job log, across restarts of every worker) until O(state=active) brings it back. The client
    worker itself refuses a clone to a host in maintenance.
  - Then the host is drained. Placement chooses a destination for every VM of the host in one decision, as for a
    batch of clones, so the members of a spread group stay spread over the hosts that are left; hosts in maintenance
    are no destination. Running VMs are migrated live, stopped ones cold, at most O(max_parallel) at once.
  - Original images (inactive domains that are not clones) stay where they are.
  - A drain that cannot finish (no host fits a VM, or a migration failed) fails naming each VM that stayed and why,
    with RV(vms); the host stays in maintenance, the VMs that could move have moved, and a VM whose migration failed is
    where it was. Run the task again to drain what is left.
  - A host in maintenance already with nothing left to drain reports no change.
author: Maglica contributors (@maglica)
options:
  host:
    description: The host, as named in the configuration.
    type: str
    required: true
  state:
    description:
      - V(maintenance) takes the host out of placement and drains it; V(active) brings it back.
    type: str
    choices: [maintenance, active]
    default: maintenance
  max_parallel:
    description: Migrations of the drain at once.
    type: int
    default: 2
  timeout:
    description: Seconds to wait for each migration.
    type: int
    default: 1800
extends_documentation_fragment:
  - maglica.cloud.maglica
attributes:
  check_mode:
    support: full
    description: Sets nothing and migrates nothing; RV(vms) is the plan, each VM with its destination.
  diff_mode:
    support: none
    description: No diff; RV(vms) says where each VM went.
'''

EXAMPLES = r'''
- name: Drain kvm2 before its kernel update
  maglica.cloud.maglica_host:
    host: kvm2.example.com
    state: maintenance
    max_parallel: 2

- name: Bring it back afterwards
  maglica.cloud.maglica_host:
    host: kvm2.example.com
    state: active
'''

RETURN = r'''
host:
  description: The host.
  returned: always
  type: str
maintenance:
  description: Whether the host is in maintenance now (in check mode, still as it was).
  returned: always
  type: bool
was_maintenance:
  description: Whether it was in maintenance before the task.
  returned: always
  type: bool
since:
  description: When it went into maintenance (seconds since the epoch), V(null) when it is active.
  returned: always
  type: float
vms:
  description:
    - Each VM of the host with O(state=maintenance) (empty with V(active)), where placement sends it and what happened.
    - C(status) is V(planned) (check mode), V(migrated) or V(stayed); C(reason) says why a VM stayed; C(live) whether it
      runs (migrated live) or not (cold); C(candidates) and C(filtered) are placement's, as for clones.
  returned: always
  type: list
  elements: dict
  sample:
    - {name: web1, source: kvm2.example.com, destination: kvm3.example.com, live: true, spread_group: web,
       status: migrated, reason: null, job_id: 0f3c..., result: {}, candidates: [], filtered: []}
images:
  description: The original images of the host, which stay there.
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
            host=dict(type='str', required=True),
            state=dict(type='str', choices=['maintenance', 'active'], default='maintenance'),
            max_parallel=dict(type='int', default=2),
            timeout=dict(type='int', default=1800),
        ),
        supports_check_mode=True,
    )
    p = module.params

    def operation(config: common.Config) -> cloud.HostResult:
        try:
            return cloud.host_state(config, p['host'], p['state'], p['max_parallel'], p['timeout'], module.check_mode)
        except cloud.DrainIncomplete as e:
            common.fail(module, msg=str(e), **e.result)

    outcome = common.run(module, operation, 'libvirt', 'zmq')
    common.exit_json(module, **outcome)


if __name__ == '__main__':
    main()
