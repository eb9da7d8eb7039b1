#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
module: maglica_image_copy
short_description: Copy an original image to another Maglica host
version_added: 1.0.0
description:
  - Copies the original image O(name) (an inactive libvirt domain and its disk volumes) to the host O(dest),
    so that clones of it can be placed there too.
  - The host worker of O(dest) does the copy, through libvirt storage streams from the source host's libvirtd to
    its own (no ssh, no netcat); holes in the disk files stay holes. It then defines the image there.
  - When O(dest) already has the image, nothing is copied and the module reports no change.
  - Images whose disks have a backing file, and running domains, are refused.
author: Maglica contributors (@maglica)
options:
  name:
    description: Name of the image (its libvirt domain name).
    type: str
    required: true
    aliases: [image]
  dest:
    description: Host to copy it to, as named in the configuration.
    type: str
    required: true
  source:
    description: Host to copy it from. By default, any host that holds it.
    type: str
  timeout:
    description: Seconds to wait for the copy job to finish.
    type: int
    default: 3600
extends_documentation_fragment:
  - maglica.cloud.maglica
attributes:
  check_mode:
    support: full
    description: Reports the source host and changes nothing.
  diff_mode:
    support: none
    description: No diff; RV(result) lists the copied disks.
'''

EXAMPLES = r'''
- name: Make the Debian image available on a new host
  maglica.cloud.maglica_image_copy:
    name: debian.original
    dest: kvm3.example.com
'''

RETURN = r'''
source:
  description: The host it was (or would be) copied from; V(null) when the destination had it already.
  returned: always
  type: str
dest:
  description: The destination host.
  returned: always
  type: str
job_id:
  description: Id of the copy job.
  returned: always
  type: str
job:
  description: The finished job, as M(maglica.cloud.maglica_job_info) returns it.
  returned: always
  type: dict
result:
  description: What the job copied, C(disks) with C(source), C(path), C(bytes) of data sent and C(capacity).
  returned: always
  type: dict
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.maglica.cloud.plugins.module_utils import common
from ansible_collections.maglica.cloud.plugins.module_utils.maglica.controller import cloud


def main() -> None:
    module = AnsibleModule(
        argument_spec=common.argument_spec(
            name=dict(type='str', required=True, aliases=['image']),
            dest=dict(type='str', required=True),
            source=dict(type='str'),
            timeout=dict(type='int', default=3600),
        ),
        supports_check_mode=True,
    )
    p = module.params
    outcome = common.run(module, lambda config: cloud.copy_image(config, p['name'], p['dest'], p['source'], p['timeout'], module.check_mode),
                         'libvirt', 'zmq')
    common.exit_json(module, **outcome)


if __name__ == '__main__':
    main()
