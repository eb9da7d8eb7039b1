#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
module: maglica_job_info
short_description: Read Maglica jobs from the client worker's job log
version_added: 1.0.0
description:
  - Returns one job by O(id), or the O(limit) most recent jobs, with their state and message.
  - With M(maglica.cloud.maglica_vm_clone) and O(maglica.cloud.maglica_vm_clone#module:wait=false) this gives
    Ansible's asynchronous pattern - submit, then poll with C(until).
author: Maglica contributors (@maglica)
options:
  id:
    description: Id of the job.
    type: str
  limit:
    description: How many recent jobs to return when O(id) is not given.
    type: int
    default: 20
  host:
    description: Only jobs of this host, when O(id) is not given.
    type: str
extends_documentation_fragment:
  - maglica.cloud.maglica
  - maglica.cloud.attributes.info_module
'''

EXAMPLES = r'''
- name: The last ten jobs
  maglica.cloud.maglica_job_info:
    limit: 10

- name: Wait for a job submitted with wait=false
  maglica.cloud.maglica_job_info:
    id: "{{ submitted.job_id }}"
  register: job
  until: job.jobs[0].state in ['succeeded', 'failed', 'expired']
  retries: 60
  delay: 5
'''

RETURN = r'''
jobs:
  description: The jobs, newest first.
  returned: always
  type: list
  elements: dict
  contains:
    id:
      description: Job id.
      type: str
    host:
      description: Host the job runs on.
      type: str
    action:
      description: Action, for example C(vm.clone).
      type: str
    state:
      description: One of C(queued), C(dispatched), C(running), C(succeeded), C(failed), C(expired).
      type: str
    message:
      description: Why a job failed or expired.
      type: str
    attempts:
      description: How many times it was published.
      type: int
    data:
      description:
        - What the host worker returned. A result over 64 KiB has its long texts (file diffs) trimmed, or left
          out, and says so in C(trimmed).
        - A listing (no O(id)) leaves the file diffs out; the job by O(id) has them.
      type: dict
    late_result:
      description:
        - The result a host worker reported for a job that had already expired, with its C(status), C(message),
          C(data) and C(received) time. The job stays C(expired); its effect (a clone, say) may exist all the same.
        - V(null) for every other job.
      type: dict
    progress:
      description:
        - How far the job is, as its host worker last reported it - C(done) and C(total) bytes (C(total) 0 when
          unknown). Image imports report it; V(null) for jobs that report none.
      type: dict
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.maglica.cloud.plugins.module_utils import common
from ansible_collections.maglica.cloud.plugins.module_utils.maglica.controller import cloud


def main() -> None:
    module = AnsibleModule(
        argument_spec=common.argument_spec(
            id=dict(type='str'),
            limit=dict(type='int', default=20),
            host=dict(type='str'),
        ),
        supports_check_mode=True,
    )
    p = module.params
    jobs = common.run(module, lambda config: cloud.job_info(config, p['id'], p['limit'], p['host']), 'zmq')
    module.exit_json(changed=False, jobs=jobs)


if __name__ == '__main__':
    main()
