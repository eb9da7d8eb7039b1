# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment(object):

    # The definition of an original image Maglica makes: matched by common.IMAGE_ARGUMENT_SPEC.
    DOCUMENTATION = r'''
options:
  vcpus:
    description: Virtual CPUs of the image (its clones start with as many).
    type: int
    default: 1
  memory:
    description: Memory of the image, with a unit (V(512M), V(2G)); powers of 1024.
    type: str
    default: 1G
  disk_size:
    description:
      - Grow the image's disk to this size (with a unit, V(20G)) when it is larger than the source image's virtual
        size (C(qemu-img resize) on the image's own disk, never on the cached file). A smaller size is refused.
      - By default the disk keeps the source image's virtual size.
    type: str
  libvirt_network:
    description:
      - The libvirt network of the image's virtio NIC (and so of its clones'). Mutually exclusive with O(bridge).
      - V(default) when neither is given.
    type: str
  bridge:
    description: A host bridge for the image's virtio NIC, instead of a libvirt network.
    type: str
  firmware:
    description: V(bios), or V(uefi) (libvirt picks the OVMF firmware, q35 machine).
    type: str
    choices: [bios, uefi]
    default: bios
  domain_type:
    description:
      - The libvirt domain type. V(kvm) for hardware virtualisation; V(qemu) for software emulation (TCG),
        where KVM is not usable.
    type: str
    choices: [kvm, qemu]
    default: kvm
  max_virtual_size:
    description:
      - Refuse an image whose virtual size (the disk its guest sees, before O(disk_size) grows it) is larger than
        this, with a unit (V(200G), V(2T)).
      - By default V(1T), the host workers' default - over ten times the largest published cloud image.
    type: str
  max_download_size:
    description:
      - Refuse a download of more bytes than this, with a unit; a server that announces more (C(Content-Length))
        is refused before a byte is read. What was fetched is removed.
      - By default V(64G), the host workers' default.
    type: str
  max_download_time:
    description:
      - Refuse a download that takes longer than this many seconds in all (each read also times out after 60
        seconds). What was fetched is removed.
      - By default V(21600) (6 hours), the host workers' default.
    type: int
  redirect_schemes:
    description:
      - Where HTTP redirects of O(url) may lead. A redirect elsewhere (V(ftp://), V(file://), or V(http://) unless
        given here) is refused, saying where it pointed.
      - By default V(https) only - http to https and https to https.
    type: list
    elements: str
    choices: [http, https]
'''
