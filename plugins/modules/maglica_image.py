#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
module: maglica_image
short_description: Make (from a cloud image URL, a file or a VM) or remove original images on the Maglica hosts
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
    that is not a qcow2 or raw disk image, an image that names another file (a backing file, an external data
    file), a download or a virtual size over its limit (O(max_download_size), O(max_download_time),
    O(max_virtual_size)), a redirect elsewhere than O(redirect_schemes), a copy that would not fit in the pool,
    a full disk.
  - With O(from_vm), the image is made instead from a shut-off VM, on that VM's host - its disks copied (a
    linked clone's flattened), then sealed with libguestfs so that it carries no identity - machine-id emptied,
    SSH host keys removed, hostname C(localhost), DHCP leases, cloud-init instance state and hard-wired MACs
    removed. The VM is left as it was. The image definition options (O(vcpus), O(memory)...) do not apply - the
    image takes the VM's definition.
  - With O(state=absent), the image (its domain and disk volumes) is removed from O(targets). Refused, naming
    them, while linked clones use its disk as a backing file, unless O(force_dependants=true). Only original
    images are removed this way - use M(maglica.cloud.maglica_vm) for a VM.
author: Maglica contributors (@maglica)
options:
  name:
    description: Name of the image (its libvirt domain name, and its disk C(NAME.qcow2)).
    type: str
    required: true
  url:
    description:
      - Where each host worker fetches the image from, V(http://), V(https://) or V(file:///path) (a path on each
        host - only a regular file inside a directory the host_worker role allows, C(host_worker_file_url_dirs),
        none by default).
      - With O(state=present), one of O(url), O(path) and O(from_vm) is required.
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
    description:
      - Hosts, as named in the configuration, that get the image (or, with O(state=absent), lose it). By default
        every configured host.
      - Not with O(from_vm) - the image is made on the VM's host; M(maglica.cloud.maglica_image_copy) copies it on.
    type: list
    elements: str
  from_vm:
    description:
      - Make the image from this shut-off VM (by name, on whichever host holds it) instead of a URL or file.
    type: str
  force_dependants:
    description:
      - With O(state=absent), remove the image even while linked clones use its disk as a backing file - those
        clones are removed first and returned in RV(dependants).
    type: bool
    default: false
  disk_mode:
    description: The image's disk is a V(copy) of the cached file, or a qcow2 V(overlay) backed by it.
    type: str
    choices: [copy, overlay]
    default: copy
  keep_cache:
    description:
      - With O(disk_mode=copy), keep the downloaded file in the host's cache once the image's disk is copied from it,
        so that a later image of the same file needs no download. By default the entry goes once the copy is made, and
        a host stores the data once. An entry that was there before the import (kept, or backing an overlay image)
        always stays.
    type: bool
    default: false
  state:
    description: V(present) makes the image where it is missing; V(absent) removes it from the targets.
    type: str
    choices: [present, absent]
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
    description:
      - Reports which hosts would fetch (RV(fetch)) and which have the image already (RV(present)); with
        O(state=absent), which hosts would remove it (RV(hosts)).
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

- name: An image from a shut-off template VM, sealed (the VM is left as it is)
  maglica.cloud.maglica_image:
    name: web.original
    from_vm: web-template.example.com

- name: Remove an old image from one host, with the linked clones that still use it
  maglica.cloud.maglica_image:
    name: debian11.original
    state: absent
    targets: [kvm2.example.com]
    force_dependants: true
'''

RETURN = r'''
checksum:
  description: The checksum, normalised (V(sha256:) and lower case).
  returned: when importing (O(url) or O(path))
  type: str
present:
  description: Targets that had the image with this checksum already.
  returned: when importing (O(url) or O(path))
  type: list
  elements: str
fetch:
  description: Targets that got (in check mode, would get) an import job.
  returned: when importing (O(url) or O(path))
  type: list
  elements: str
jobs:
  description:
    - The finished jobs by host, as M(maglica.cloud.maglica_job_info) returns them (importing); the removal jobs
      (O(state=absent)).
  returned: when importing or removing
  type: raw
imported:
  description:
    - What each host made, by host - C(path) of the disk, C(cache) file, C(cache_hit) (no download),
      C(cache_kept) (whether the cache file is still there), C(fetched_bytes), C(format) of the source, C(disk_mode),
      C(capacity) and C(allocation) of the disk in bytes.
  returned: when importing (O(url) or O(path))
  type: dict
hosts:
  description:
    - With O(state=absent), per target - C(host), C(state) (V(removed), V(absent) or, in check mode,
      V(would remove)), the C(dependants) removed with it there and the C(deleted_disks).
  returned: when O(state=absent)
  type: list
  elements: dict
dependants:
  description: With O(state=absent), the linked clones removed first (O(force_dependants=true)).
  returned: when O(state=absent)
  type: list
  elements: str
host:
  description: With O(from_vm), the host the image was made on (the VM's).
  returned: when O(from_vm) is given
  type: str
job_id:
  description: With O(from_vm), the id of the job that made the image (none when nothing changed).
  returned: when O(from_vm) is given
  type: str
result:
  description: With O(from_vm), what the job reports - the image's disks and the sealing steps made.
  returned: when O(from_vm) is given
  type: dict
'''

from typing import Any, Dict

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.maglica.cloud.plugins.module_utils import common
from ansible_collections.maglica.cloud.plugins.module_utils.maglica.controller import cloud
from ansible_collections.maglica.cloud.plugins.module_utils.maglica.errors import MaglicaError


def main() -> None:
    module = AnsibleModule(
        argument_spec=common.argument_spec(
            name=dict(type='str', required=True),
            url=dict(type='str'),
            path=dict(type='path'),
            checksum=dict(type='str'),
            targets=dict(type='list', elements='str'),
            from_vm=dict(type='str'),
            force_dependants=dict(type='bool', default=False),
            disk_mode=dict(type='str', choices=['copy', 'overlay'], default='copy'),
            keep_cache=dict(type='bool', default=False),
            state=dict(type='str', choices=['present', 'absent'], default='present'),
            timeout=dict(type='int', default=3600),
            **common.IMAGE_ARGUMENT_SPEC
        ),
        mutually_exclusive=common.IMAGE_MUTUALLY_EXCLUSIVE + [('url', 'path', 'from_vm'), ('from_vm', 'targets')],
        required_if=[('state', 'present', ('url', 'path', 'from_vm'), True)],
        required_by={'url': 'checksum'},
        supports_check_mode=True,
    )
    p = module.params

    def operation(config: common.Config) -> Dict[str, Any]:
        if p['state'] == 'absent':
            if p['url'] or p['path'] or p['from_vm']:
                raise MaglicaError('state=absent takes the image name (and targets), not url, path or from_vm')
            return dict(cloud.remove_image(config, p['name'], p['targets'], p['force_dependants'], module.check_mode, p['timeout']))
        if p['from_vm']:
            return dict(cloud.create_from_vm(config, p['name'], p['from_vm'], module.check_mode, p['timeout']))
        settings = dict(common.image_settings(p), disk_mode=p['disk_mode'], keep_cache=p['keep_cache'] or None)
        return dict(cloud.import_image(config, p['name'], p['url'], p['checksum'], p['targets'], settings,
                                       p['timeout'], module.check_mode, path=p['path']))

    common.exit_json(module, **common.run(module, operation, 'libvirt', 'zmq'))


if __name__ == '__main__':
    main()
