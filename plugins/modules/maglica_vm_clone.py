#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
module: maglica_vm_clone
short_description: Clone a VM from an original image onto the least loaded Maglica host
version_added: 1.0.0
description:
  - Clones the original image O(image) to a new VM called O(hostname) on the least loaded host that holds the image,
    rewrites the clone's hostname and network settings inside its disk, and starts it.
  - The load of a host is its active domains x 10 / its weight. O(host) overrides the choice.
  - Idempotent on O(hostname) - when a domain of that name exists on any host, nothing is done and its host is returned.
  - The clone runs as a job of the host's worker, submitted through the client worker. With O(wait=false) the module
    returns the job id at once; follow it with M(maglica.cloud.maglica_job_info).
  - A clone that fails midway is removed with its disks.
author: Maglica contributors (@maglica)
options:
  image:
    description: Name of the original image (an inactive libvirt domain).
    type: str
    required: true
  hostname:
    description: Name of the new VM, written into the guest as its hostname.
    type: str
    required: true
    aliases: [name]
  host:
    description: Put the clone on this host instead of the least loaded one. It must hold O(image).
    type: str
  clone_mode:
    description:
      - V(full) copies the image's disks with virt-clone.
      - V(linked) makes a qcow2 overlay backed by the image's disks, near-instant; the image must stay in place.
    type: str
    choices: [full, linked]
    default: full
  start:
    description: Start the clone once it is made.
    type: bool
    default: true
  wait:
    description: Wait until the job has ended. With V(false), RV(job_id) is returned at once.
    type: bool
    default: true
  timeout:
    description:
      - Seconds to wait for the job to end. A host worker that does not take the job within this time
        makes the job expire.
    type: int
    default: 600
  network:
    description: Network settings written into the guest.
    type: dict
    suboptions:
      mode:
        description: V(dhcp) (the clone sends its hostname to the DHCP server) or V(static).
        type: str
        choices: [dhcp, static]
        default: dhcp
      device:
        description: Interface to configure; default the first one the image configures, else C(eth0).
        type: str
      address:
        description: Static IPv4 address; required with O(network.mode=static).
        type: str
      prefix:
        description: Prefix length of O(network.address).
        type: int
        default: 24
      gateway:
        description: Default gateway.
        type: str
      dns:
        description: DNS servers.
        type: list
        elements: str
      domain:
        description: DNS search domain.
        type: str
  root_password_hash:
    description: A crypt(3) hash set as root's password in the guest. Never a fixed password - only the one given here.
    type: str
  ssh_authorized_keys:
    description: Public keys added to root's C(authorized_keys) in the guest.
    type: list
    elements: str
extends_documentation_fragment:
  - maglica.cloud.maglica
attributes:
  check_mode:
    support: full
    description: Reports the host that would be chosen and every candidate's score; changes nothing.
  diff_mode:
    support: full
    description: Shows every file rewritten inside the guest.
notes:
  - Run it where the hosts' libvirtd and the client worker can be reached - the client host, or the controller
    with C(delegate_to).
'''

EXAMPLES = r'''
- name: Clone a web server from the Debian image, DHCP with its hostname
  maglica.cloud.maglica_vm_clone:
    image: debian.original
    hostname: web1.example.com
    ssh_authorized_keys:
      - "{{ lookup('file', '~/.ssh/id_ed25519.pub') }}"

- name: A linked clone with a static address on a chosen host
  maglica.cloud.maglica_vm_clone:
    image: rhel.original
    hostname: db1.example.com
    host: kvm2.example.com
    clone_mode: linked
    network:
      mode: static
      address: 192.0.2.20
      prefix: 24
      gateway: 192.0.2.1
      dns: [192.0.2.53]

- name: Submit without waiting, then follow the job
  maglica.cloud.maglica_vm_clone:
    image: debian.original
    hostname: batch1.example.com
    wait: false
  register: submitted

- name: Wait for it
  maglica.cloud.maglica_job_info:
    id: "{{ submitted.job_id }}"
  register: job
  until: job.jobs[0].state in ['succeeded', 'failed', 'expired']
  retries: 60
  delay: 5
'''

RETURN = r'''
host:
  description: Host the clone is on (or, in check mode, would be put on).
  returned: always
  type: str
  sample: kvm1.example.com
candidates:
  description: Every host holding the image with its active domains, weight and score, best first. Empty when the VM existed.
  returned: always
  type: list
  elements: dict
  sample: [{host: kvm1.example.com, active: 1, weight: 10, score: 1.0}, {host: kvm2.example.com, active: 4, weight: 10, score: 4.0}]
job_id:
  description: Id of the clone job; null when nothing was submitted.
  returned: always
  type: str
  sample: 3f2c9a1e0b7d4c59a4e1f0f7d1e2a3b4
message:
  description:
    - Set when a clone of O(hostname) was already under way, from an earlier run that timed out or did not wait. The client
      worker lets one job at a time make a name, so no second job was made. RV(job_id) is that earlier job (waited for
      when O(wait)), and C(changed) is false.
  returned: when a clone of O(hostname) was in flight
  type: str
  sample: a clone of web1 is already under way as job 3f2c9a1e0b7d4c59a4e1f0f7d1e2a3b4 on kvm1.example.com
job:
  description: The job as the client worker logged it (state, message, attempts, timestamps).
  returned: when a job was submitted
  type: dict
result:
  description:
    - What the host worker did. C(customization) lists C(changed_files), C(removed_files), the guest's C(os) and C(notes).
  returned: when the job ended
  type: dict
domain:
  description: The existing VM, when O(hostname) was already defined.
  returned: when nothing changed
  type: dict
unreachable_hosts:
  description: Hosts that could not be asked. The name check and placement only cover the hosts that answered.
  returned: always
  type: list
  elements: str
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.maglica.cloud.plugins.module_utils import common
from ansible_collections.maglica.cloud.plugins.module_utils.maglica import cloud


def main():
    module = AnsibleModule(
        argument_spec=common.argument_spec(
            image=dict(type='str', required=True),
            hostname=dict(type='str', required=True, aliases=['name']),
            host=dict(type='str'),
            clone_mode=dict(type='str', choices=['full', 'linked'], default='full'),
            start=dict(type='bool', default=True),
            wait=dict(type='bool', default=True),
            timeout=dict(type='int', default=600),
            network=dict(type='dict', options=dict(
                mode=dict(type='str', choices=['dhcp', 'static'], default='dhcp'),
                device=dict(type='str'),
                address=dict(type='str'),
                prefix=dict(type='int', default=24),
                gateway=dict(type='str'),
                dns=dict(type='list', elements='str'),
                domain=dict(type='str'),
            ), required_if=[('mode', 'static', ['address'])]),
            root_password_hash=dict(type='str', no_log=True),
            ssh_authorized_keys=dict(type='list', elements='str', no_log=False),
        ),
        supports_check_mode=True,
    )
    p = module.params

    def clone(config):
        return cloud.clone(config, p['image'], p['hostname'], host=p['host'], clone_mode=p['clone_mode'], start=p['start'],
                           network=p['network'], root_password_hash=p['root_password_hash'],
                           ssh_authorized_keys=p['ssh_authorized_keys'], wait=p['wait'], timeout=p['timeout'],
                           check_mode=module.check_mode)

    outcome = common.run(module, clone, 'libvirt', 'zmq')
    outcome['unreachable_hosts'] = outcome.pop('unreachable')
    for error in outcome['unreachable_hosts']:
        module.warn('host not reachable, not considered: %s' % error)
    customization = outcome['result'].get('customization') or {}
    diff = customization.pop('diff', None)
    if module._diff and outcome['changed']:
        header = {'before_header': '%s on %s' % (p['hostname'], outcome['host']), 'after_header': '%s on %s' % (p['hostname'], outcome['host']),
                  'before': '', 'after': 'clone of %s (%s)\n' % (p['image'], p['clone_mode'])}
        outcome['diff'] = [header] + (diff or [])
    module.exit_json(**outcome)


if __name__ == '__main__':
    main()
