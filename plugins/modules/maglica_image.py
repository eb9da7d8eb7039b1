#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
module: maglica_image
short_description: Make an original image from a cloud image URL on the Maglica hosts you choose
version_added: 1.1.0
description:
  - Turns a disk image (a distribution's cloud image, qcow2 or raw) at O(url), or the file O(path), into the original image O(name), an
    inactive libvirt domain that VMs are cloned from, on every host of O(targets).
  - Each target's host worker fetches the file itself (one job per host, all at once), streamed in chunks, written
    sparse, and checked against O(checksum) before anything is made from it. It keeps the file in a cache keyed by
    the checksum in a directory C(.maglica-image-cache) of its C(default) storage pool, so a second image from the
    same file costs no download.
  - The cached file is a read-only base. The image's disk, C(NAME.qcow2) in the pool, is a copy of it
    (O(disk_mode=copy)) or a qcow2 overlay on it (O(disk_mode=overlay)); growing it to O(disk_size) changes only
    that disk.
  - The domain is defined from a definition Maglica makes (virtio disk and NIC, serial console logged to a file,
    guest agent channel, VNC on localhost) and marked as an image in its own libvirt metadata, with the checksum
    and URL it was made from.
  - Nothing changes (C(changed=false)) when every target has an image O(name) made from the same checksum.
  - Refused before any job is submitted - a target that is not in the configuration, a name taken by a VM (or by
    an image made from another file) on a target. Refused by the host worker, leaving no partial disk, domain or
    cache entry - a wrong checksum (expected and actual are shown), an HTTP error or an unreachable URL, a file
    that is not a disk image, a full disk.
author: Maglica contributors (@maglica)
options:
  name:
    description: Name of the image (its libvirt domain name, and its disk C(NAME.qcow2)).
    type: str
    required: true
  url:
    description:
      - Where each host worker fetches the image from, V(http://), V(https://) or V(file:///path) (a path on each
        host).
      - One of O(url) and O(path) is required.
    type: str
  path:
    description:
      - A file on the machine the module runs on, uploaded to each target that lacks the image through libvirt
        storage streams (holes sent as holes) instead of being fetched. Its checksum is computed here.
    type: path
  checksum:
    description:
      - The file's sha256, V(sha256:<64 hex digits>). The fetched file must match it.
      - Required with O(url); with O(path), when given, the file must match it.
    type: str
  targets:
    description: Hosts, as named in the configuration, that get the image. By default every configured host.
    type: list
    elements: str
  disk_mode:
    description: The image's disk is a V(copy) of the cached file, or a qcow2 V(overlay) backed by it.
    type: str
    choices: [copy, overlay]
    default: copy
  state:
    description: V(present) makes the image where it is missing.
    type: str
    choices: [present]
    default: present
  timeout:
    description: Seconds to wait for the jobs to finish.
    type: int
    default: 3600
extends_documentation_fragment:
  - maglica.cloud.maglica
  - maglica.cloud.image
attributes:
  check_mode:
    support: full
    description: Reports which hosts would fetch (RV(fetch)) and which have the image already (RV(present)).
  diff_mode:
    support: none
    description: No diff; RV(imported) says what each host made.
'''

EXAMPLES = r'''
- name: Debian 12 on two hosts, grown to 20G
  maglica.cloud.maglica_image:
    name: debian12.original
    url: https://cloud.debian.org/images/cloud/bookworm/latest/debian-12-genericcloud-amd64.qcow2
    checksum: sha256:3f0c0b6c5e4ad3b81bd84f9ec1b0a5c7e2c7fa0ba4b3c1e9e6d1d3a1c5b2e4f6
    targets: [kvm1.example.com, kvm2.example.com]
    vcpus: 2
    memory: 2G
    disk_size: 20G
    libvirt_network: default
'''

RETURN = r'''
checksum:
  description: The checksum, normalised (V(sha256:) and lower case).
  returned: always
  type: str
present:
  description: Targets that had the image with this checksum already.
  returned: always
  type: list
  elements: str
fetch:
  description: Targets that got (in check mode, would get) an import job.
  returned: always
  type: list
  elements: str
jobs:
  description: The finished jobs by host, as M(maglica.cloud.maglica_job_info) returns them.
  returned: always
  type: dict
imported:
  description:
    - What each host made, by host - C(path) of the disk, C(cache) file, C(cache_hit) (no download),
      C(fetched_bytes), C(format) of the source, C(disk_mode), C(capacity) and C(allocation) of the disk in bytes.
  returned: always
  type: dict
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.maglica.cloud.plugins.module_utils import common
from ansible_collections.maglica.cloud.plugins.module_utils.maglica import image_import


def main():
    module = AnsibleModule(
        argument_spec=common.argument_spec(
            name=dict(type='str', required=True),
            url=dict(type='str'),
            path=dict(type='path'),
            checksum=dict(type='str'),
            targets=dict(type='list', elements='str'),
            disk_mode=dict(type='str', choices=['copy', 'overlay'], default='copy'),
            state=dict(type='str', choices=['present'], default='present'),
            timeout=dict(type='int', default=3600),
            **common.IMAGE_ARGUMENT_SPEC
        ),
        mutually_exclusive=common.IMAGE_MUTUALLY_EXCLUSIVE + [('url', 'path')],
        required_one_of=[('url', 'path')],
        required_by={'url': 'checksum'},
        supports_check_mode=True,
    )
    p = module.params

    def operation(config):
        settings = dict(common.image_settings(p), disk_mode=p['disk_mode'])
        return image_import.import_image(config, p['name'], p['url'], p['checksum'], p['targets'], settings,
                                         p['timeout'], module.check_mode, path=p['path'])

    module.exit_json(**common.run(module, operation, 'libvirt', 'zmq'))


if __name__ == '__main__':
    main()
