#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
module: maglica_image_info
short_description: List the original images on every Maglica host
version_added: 1.0.0
description:
  - Lists the "original images" of a Maglica cloud, the inactive libvirt domains that VMs are cloned from,
    asking every configured host's libvirtd at once.
  - A host whose libvirtd cannot be reached is reported in RV(hosts) and does not stop the listing of the others.
  - Stopped clones made by Maglica are not images and are not listed.
author: Maglica contributors (@maglica)
options:
  name:
    description: Only images whose name matches one of these shell patterns.
    type: list
    elements: str
    aliases: [names]
  host:
    description: Only ask these hosts.
    type: list
    elements: str
extends_documentation_fragment:
  - maglica.cloud.maglica
  - maglica.cloud.attributes.info_module
'''

EXAMPLES = r'''
- name: List every image of the cloud
  maglica.cloud.maglica_image_info:
    config: /etc/maglica.conf
  register: images

- name: Debian images on two hosts
  maglica.cloud.maglica_image_info:
    name: ['debian*']
    host: [kvm1.example.com, kvm2.example.com]
'''

RETURN = r'''
images:
  description: One entry per image and host holding it, sorted by name.
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: Domain name of the image.
      type: str
    host:
      description: Host that holds it.
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
  sample:
    - name: debian.original
      host: kvm1.example.com
      vcpus: 1
      memory_mb: 512
      disks: [{target: vda, path: /var/lib/libvirt/images/debian.original.qcow2, format: qcow2, device: disk,
               capacity: 2147483648, allocation: 321912832}]
hosts:
  description: Every host asked, whether it answered, and how many images it holds.
  returned: always
  type: list
  elements: dict
  sample: [{host: kvm1.example.com, reachable: true, error: null, images: 2}]
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
        ),
        supports_check_mode=True,
    )
    listing = common.run(module, lambda config: cloud.image_list(config, module.params['name'], module.params['host']), 'libvirt')
    unreachable = [h['error'] for h in listing['hosts'] if not h['reachable']]
    for error in unreachable:
        module.warn('host not reachable: %s' % error)
    module.exit_json(changed=False, images=listing['images'], hosts=listing['hosts'], unreachable_hosts=unreachable)


if __name__ == '__main__':
    main()
