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
  - The placement policy of the configuration (C(placement.policy)) chooses the host; O(host) overrides the choice,
    O(exclude_hosts) keeps hosts out of it, and O(spread_group) puts clones of one group on different hosts.
  - With O(vms), clones a whole batch at once, placed as one decision, submitted together, and waited for together;
    the top-level options are the defaults of every item.
  - Idempotent on O(hostname) - when a domain of that name exists on any host, nothing is done and its host is returned.
    While a host cannot be reached, the task fails rather than risk a second VM of the name; see O(allow_unreachable).
  - The clone runs as a job of the host's worker, submitted through the client worker. With O(wait=false) the module
    returns the job id at once; follow it with M(maglica.cloud.maglica_job_info).
  - A clone that fails midway is removed with its disks.
author: Maglica contributors (@maglica)
options:
  image:
    description:
      - Name of the original image (an inactive libvirt domain).
      - Required with O(hostname); with O(vms), the image of every item that names none.
    type: str
  hostname:
    description:
      - Name of the new VM, written into the guest as its hostname.
      - One of O(hostname) and O(vms) is required; they exclude each other.
    type: str
    aliases: [name]
  host:
    description: Put the clone on this host instead of the least loaded one. It must hold O(image).
    type: str
  exclude_hosts:
    description:
      - Never put the clone on these hosts (for example one that is being drained). Complements O(host).
    type: list
    elements: str
  spread_group:
    description:
      - A name shared by related VMs (for example V(web) for C(web1)-C(web3)). Clones of one group go to different
        hosts while there are hosts left, then to the host with the fewest members of the group.
      - Stored in the clone's libvirt metadata, so every later placement (and every restart of the workers) knows it;
        M(maglica.cloud.maglica_vm_info) shows it as C(spread_group).
    type: str
  vms:
    description:
      - A batch of clones, one dict per VM, instead of O(hostname). Each item takes the per-VM options below; an option
        an item does not set is taken from the top level.
      - The batch is placed as one decision (each clone counts against its host for the next), every job is submitted,
        then all are waited for. The host worker of each host customises the clones of the batch in one appliance launch.
      - Returns one result per VM in RV(results), in order, and C(changed) for the batch as a whole. In check mode,
        RV(plan) shows where each would go and why.
    type: list
    elements: dict
    suboptions:
      hostname:
        description: Name of the new VM.
        type: str
        required: true
        aliases: [name]
      image:
        description: Its image; default the top-level O(image).
        type: str
      host:
        description: Its host; default the top-level O(host).
        type: str
      exclude_hosts:
        description: Hosts it must not go to; default the top-level O(exclude_hosts).
        type: list
        elements: str
      spread_group:
        description: Its spread group; default the top-level O(spread_group).
        type: str
      clone_mode:
        description: V(full) or V(linked); default the top-level O(clone_mode).
        type: str
        choices: [full, linked]
      start:
        description: Start it once made; default the top-level O(start).
        type: bool
      network:
        description: Its network settings, as the top-level O(network) (which it replaces whole).
        type: dict
        suboptions:
          mode:
            description: V(dhcp) or V(static).
            type: str
            choices: [dhcp, static]
            default: dhcp
          device:
            description: Interface to configure.
            type: str
          address:
            description: Static IPv4 address; required with mode V(static).
            type: str
          prefix:
            description: Prefix length of the address.
            type: int
            default: 24
          gateway:
            description: Default gateway (IPv4).
            type: str
          dns:
            description: DNS servers (IPv4 addresses).
            type: list
            elements: str
          domain:
            description: DNS search domain.
            type: str
      root_password_hash:
        description: A crypt(3) hash for root; default the top-level O(root_password_hash).
        type: str
      ssh_authorized_keys:
        description: Public keys for root; default the top-level O(ssh_authorized_keys).
        type: list
        elements: str
      cloud_init_user_data:
        description: cloud-init user-data; default the top-level O(cloud_init_user_data).
        type: str
      customize:
        description: Customise it; default the top-level O(customize).
        type: bool
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
  customize:
    description:
      - Customise the clone inside its disk (hostname, network settings, machine-id, new SSH host keys, and the settings
        below), in one libguestfs appliance launch on its host.
      - V(false) skips that launch - for hosts where it is slow (a hypervisor under software emulation) or images that
        set themselves up. The clone then keeps the image's hostname, network settings, machine-id and SSH host keys,
        so two such clones of one image running on one network collide; O(network), O(root_password_hash),
        O(ssh_authorized_keys) and O(cloud_init_user_data) cannot be given, RV(ssh_host_keys) is empty and
        O(wait_for=ssh) cannot be asked.
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
  wait_for:
    description:
      - After the job, wait until the started clone is reachable.
      - V(ip) waits until it has an address (from the QEMU guest agent, then the DHCP leases of its libvirt network).
      - V(ssh) also waits until its sshd proves it holds one of the SSH host keys the host worker wrote into it,
        checked by the SSH client with strict host key checking against RV(known_hosts) (no trust on first use).
      - A clone that does not get there within O(wait_for_timeout) is kept (it is a complete VM that did not come
        up), and the task fails with the last thing seen and its console's last lines. A re-run finds the clone
        (C(changed=false)) and waits again.
      - Needs O(start=true) and O(wait=true).
    type: str
    choices: [none, ip, ssh]
    default: none
  wait_for_timeout:
    description: Seconds to wait for O(wait_for), counted apart from the job's O(timeout).
    type: int
    default: 300
  allow_unreachable:
    description:
      - When a host cannot be reached, it may hold a VM called O(hostname) (or one of O(vms)), and a clone placed
        elsewhere would be a second VM of that name. So the task fails, naming the hosts that cannot be reached,
        unless the name is found on a host that answered.
      - V(true) clones all the same, on the hosts that answered (each unreachable host is warned about).
    type: bool
    default: false
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
        description: Prefix length of O(network.address), 0 to 32.
        type: int
        default: 24
      gateway:
        description: Default gateway (IPv4).
        type: str
      dns:
        description: DNS servers (IPv4 addresses).
        type: list
        elements: str
      domain:
        description: DNS search domain.
        type: str
  root_password_hash:
    description: A crypt(3) hash set as root's password in the guest. Never a fixed password - only the one given here.
    type: str
  ssh_authorized_keys:
    description:
      - Public keys added to root's C(authorized_keys) in the guest.
      - For an image with cloud-init, they are also in the user-data of its NoCloud seed (cloud-init gives them to its
        default user as well).
    type: list
    elements: str
  cloud_init_user_data:
    description:
      - Your own cloud-init user-data, for an image with cloud-init (C(/usr/bin/cloud-init), not disabled). The clone
        gets a NoCloud seed in C(/var/lib/cloud/seed/nocloud) with a fresh instance-id, its hostname, a network-config
        from O(network) and user-data of its own that keeps the SSH host keys Maglica wrote, root's keys and the hostname.
      - A C(#cloud-config) document is merged with that user-data key by key; Maglica's values win on its keys
        (C(ssh_deletekeys), C(ssh_genkeytypes), C(disable_root), C(preserve_hostname), C(hostname), C(fqdn)) and
        C(ssh_authorized_keys) are joined. It must be a YAML mapping and must not set C(ssh_keys).
      - Any other format cloud-init knows (C(#!) scripts, C(#include), C(#cloud-boothook), a MIME multipart message...)
        travels as parts of a MIME multipart message beside Maglica's, which come last with merge headers so they win.
      - A secret like O(root_password_hash) - masked in job listings and diffs, never logged.
      - Ignored for images without cloud-init.
    type: str
extends_documentation_fragment:
  - maglica.cloud.maglica
attributes:
  check_mode:
    support: full
    description:
      - Reports the host that would be chosen, and per candidate host its score, reserved clones, free memory and
        disk and spread group members, and why each other host was filtered out; changes nothing.
      - With O(vms), the whole plan (RV(plan)).
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

- name: Clone, wait until it answers SSH with the host key it was given, and remember that key
  maglica.cloud.maglica_vm_clone:
    image: debian.original
    hostname: web2.example.com
    ssh_authorized_keys:
      - "{{ lookup('file', '~/.ssh/id_ed25519.pub') }}"
    wait_for: ssh
  register: web2

- name: Trust exactly the host keys written into the clone
  ansible.builtin.blockinfile:
    path: ~/.ssh/known_hosts
    create: true
    mode: "0600"
    marker: "# {mark} web2.example.com (maglica)"
    block: "{{ web2.known_hosts | join('\n') }}"

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

- name: Three web servers on three different hosts (one host failure takes only one)
  maglica.cloud.maglica_vm_clone:
    image: debian.original
    hostname: "{{ item }}"
    spread_group: web
    exclude_hosts: [kvm9.example.com]
  loop: [web1.example.com, web2.example.com, web3.example.com]

- name: A batch of six, placed as one decision and customised together; see the plan first
  maglica.cloud.maglica_vm_clone:
    image: debian.original
    spread_group: workers
    ssh_authorized_keys:
      - "{{ lookup('file', '~/.ssh/id_ed25519.pub') }}"
    vms:
      - hostname: worker1.example.com
      - hostname: worker2.example.com
      - hostname: worker3.example.com
      - hostname: worker4.example.com
        clone_mode: linked
      - hostname: worker5.example.com
        network: {mode: static, address: 192.0.2.25, gateway: 192.0.2.1}
      - hostname: worker6.example.com
        image: rhel.original
        spread_group: rhel-workers
  check_mode: true
  register: plan

- name: Show where each would go
  ansible.builtin.debug:
    msg: "{{ plan.plan | map(attribute='host') | list }}"

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
  returned: with O(hostname)
  type: str
  sample: kvm1.example.com
candidates:
  description:
    - Every host that qualifies, best first, with its C(weight), C(score) (lower is better), C(reserved) (clones on their
      way to it), C(free_memory_mb), C(free_disk_bytes) and C(group_members) (members of O(spread_group) on it). Empty
      when the VM existed.
  returned: with O(hostname)
  type: list
  elements: dict
  sample: [{host: kvm1.example.com, weight: 10, score: 1.0, reserved: 0, free_memory_mb: 6144, free_disk_bytes: 53687091200,
            group_members: 0}]
filtered:
  description: Each host that was left out, with the C(reason) (not holding the image, too little memory or disk, excluded).
  returned: with O(hostname)
  type: list
  elements: dict
  sample: [{host: kvm2.example.com, reason: "kvm2.example.com: 1.1 GiB uncommitted, clone needs 2 GiB"}]
policy:
  description: The placement policy that chose the host (C(placement.policy) of the configuration).
  returned: with O(hostname)
  type: str
  sample: resources
results:
  description:
    - One result per item of O(vms), in order, each with the keys a single clone returns (C(hostname), C(host),
      C(candidates), C(filtered), C(job_id), C(job), C(result), C(changed), C(ssh_host_keys), C(known_hosts)...).
  returned: with O(vms)
  type: list
  elements: dict
plan:
  description: Where each item of O(vms) goes, as one decision - C(hostname), C(host), C(candidates) and C(filtered).
  returned: with O(vms)
  type: list
  elements: dict
  sample: [{hostname: worker1.example.com, host: kvm1.example.com, candidates: [], filtered: []}]
job_id:
  description: Id of the clone job; null when nothing was submitted.
  returned: with O(hostname)
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
    - What the host worker did. C(customization) lists C(changed_files), C(removed_files), the guest's C(os), its
      C(network) (the device and what configures it), C(cloud_init) (the new instance-id) and C(notes); with
      O(customize=false) it holds only C(customized), V(false).
  returned: when the job ended
  type: dict
domain:
  description: The existing VM, when O(hostname) was already defined.
  returned: when nothing changed
  type: dict
ip:
  description: The clone's address, once O(wait_for) has seen one.
  returned: with O(hostname)
  type: str
  sample: 172.30.11.153
ssh_host_keys:
  description:
    - The public SSH host keys the host worker made and wrote into the clone, one per key type the image had.
    - Kept in the clone's libvirt metadata, so that a re-run (and the inventory plugin) returns them too.
  returned: with O(hostname)
  type: list
  elements: str
  sample: ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJx... root@web1"]
known_hosts:
  description:
    - Lines for a C(known_hosts) file naming the clone by its name, its short name and (once known) its address,
      so that the first SSH connection checks the host key strictly.
  returned: with O(hostname)
  type: list
  elements: str
  sample: ["web1.example.com,web1,172.30.11.153 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJx..."]
surveyed:
  description:
    - The hosts whose libvirtd placement asked itself, because the client worker held no state of theirs pushed within
      C(host_state.max_age) seconds (or O(host_state.fresh) asked for a survey). The others were placed from their pushed state.
  returned: with O(hostname)
  type: list
  elements: str
state_age_s:
  description: The age in seconds of the oldest pushed state placement read; 0 when it read none.
  returned: with O(hostname)
  type: float
unreachable_hosts:
  description: Hosts that could not be asked. The name check and placement only cover the hosts that answered.
  returned: always
  type: list
  elements: str
'''

from typing import Any, Dict, List, Optional, Set

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.maglica.cloud.plugins.module_utils import common
from ansible_collections.maglica.cloud.plugins.module_utils.maglica.controller import cloud


def main() -> None:
    module = AnsibleModule(
        argument_spec=common.argument_spec(
            wait=dict(type='bool', default=True),
            timeout=dict(type='int', default=600),
            wait_for=dict(type='str', choices=list(cloud.WAIT_FOR), default='none'),
            wait_for_timeout=dict(type='int', default=300),
            allow_unreachable=dict(type='bool', default=False),
            vms=dict(type='list', elements='dict', options=common.clone_vm_options(defaults=False)),
            **common.clone_vm_options()
        ),
        mutually_exclusive=[('hostname', 'vms')],
        required_one_of=[('hostname', 'vms')],
        required_by={'hostname': 'image'},
        supports_check_mode=True,
    )
    p = module.params
    if p['vms'] is not None:
        batch(module)

    def clone(config: common.Config) -> Dict[str, Any]:
        return dict(cloud.clone(config, p['image'], p['hostname'], host=p['host'], clone_mode=p['clone_mode'], start=p['start'],
                                network=p['network'], root_password_hash=p['root_password_hash'],
                                ssh_authorized_keys=p['ssh_authorized_keys'], wait=p['wait'], timeout=p['timeout'],
                                check_mode=module.check_mode, wait_for=p['wait_for'], wait_for_timeout=p['wait_for_timeout'],
                                cloud_init_user_data=p['cloud_init_user_data'], spread_group=p['spread_group'],
                                exclude_hosts=p['exclude_hosts'], allow_unreachable=p['allow_unreachable'], customize=p['customize']))

    outcome = common.run(module, clone, 'libvirt', 'zmq')
    outcome['unreachable_hosts'] = outcome.pop('unreachable')
    for error in outcome['unreachable_hosts']:
        module.warn('host not reachable, not considered: %s' % error)
    diff = take_diff(outcome)
    if module._diff and outcome['changed']:
        outcome['diff'] = diff_of(p, outcome, diff)
    common.exit_json(module, **outcome)


def take_diff(outcome: Dict[str, Any]) -> Optional[List[Dict[str, Any]]]:
    """The customisation's diff, out of the result (it goes to Ansible's diff, not into the registered value)."""
    return ((outcome.get('result') or {}).get('customization') or {}).pop('diff', None)


def diff_of(vm: Dict[str, Any], outcome: Dict[str, Any], diff: Optional[List[Dict[str, Any]]]) -> List[Dict[str, Any]]:
    where = '%s on %s' % (vm['hostname'], outcome['host'])
    return [{'before_header': where, 'after_header': where, 'before': '',
             'after': 'clone of %s (%s)\n' % (vm['image'], vm['clone_mode'])}] + (diff or [])


def batch(module: common.Module) -> None:
    """maglica_vm_clone vms: one clone_batch call; one result per VM, changed for the whole batch."""
    p = module.params
    vms: List[Dict[str, Any]] = []

    def clone_batch(config: common.Config) -> Dict[str, Any]:
        vms.extend(common.clone_batch_vms(p))
        return dict(cloud.clone_batch(config, vms, wait=p['wait'], timeout=p['timeout'], check_mode=module.check_mode,
                                      wait_for=p['wait_for'], wait_for_timeout=p['wait_for_timeout'],
                                      allow_unreachable=p['allow_unreachable']))

    outcome = common.run(module, clone_batch, 'libvirt', 'zmq')
    diffs: List[Dict[str, Any]] = []
    unreachable: Set[str] = set()
    warnings: List[str] = []
    for vm, result in zip(vms, outcome['results']):
        unreachable.update(result.pop('unreachable', None) or [])
        warnings.extend(w for w in result.pop('warnings', None) or [] if w not in warnings)
        diff = take_diff(result)
        if result['changed']:
            diffs.extend(diff_of(vm, result, diff))
    outcome['unreachable_hosts'] = sorted(unreachable | set(outcome.pop('unreachable', None) or []))
    for error in outcome['unreachable_hosts']:
        module.warn('host not reachable, not considered: %s' % error)
    for warning in warnings:
        module.warn(warning)
    if module._diff and outcome['changed']:
        outcome['diff'] = diffs
    common.exit_json(module, **outcome)


if __name__ == '__main__':
    main()
