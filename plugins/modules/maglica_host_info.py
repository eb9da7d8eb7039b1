#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
module: maglica_host_info
short_description: Report the state of every Maglica host
version_added: 1.0.0
description:
  - Asks every configured host's libvirtd at once for its domains, memory and CPUs, and the client worker
    whether each host's host worker sends heartbeats.
  - A host whose libvirtd cannot be reached is reported with RV(hosts[].reachable=false); it does not stop the others.
  - When the client worker does not answer, RV(hosts[].worker_alive) is V(null) and a warning says why,
    unless O(require_workers) is set.
  - With O(require_workers), one task verifies a deployed cloud, failing naming every host whose worker is not alive
    or whose libvirtd server certificate expires within O(cert_renew_days).
  - Reports per host the libvirt transport in use and, over C(tls), the days until its server certificate expires.
author: Maglica contributors (@maglica)
options:
  host:
    description: Only report these hosts.
    type: list
    elements: str
  require_workers:
    description: Fail unless the host worker of every reported host is alive.
    type: bool
    default: false
  wait_timeout:
    description:
      - Seconds to wait for every host worker to become alive before reporting (or failing with O(require_workers)).
      - V(0) reports the current state at once.
    type: float
    default: 0
  cert_renew_days:
    description:
      - The renewal window of the libvirtd server certificates (the roles' C(maglica_pki_renew_days)).
      - With O(require_workers), a certificate that expires within it fails the task.
    type: int
    default: 30
extends_documentation_fragment:
  - maglica.cloud.maglica
  - maglica.cloud.attributes.info_module
'''

EXAMPLES = r'''
- name: Show the hosts
  maglica.cloud.maglica_host_info:
    config: /etc/maglica.conf
  register: cloud_hosts

- name: After deploying the workers, wait until every one of them is up
  maglica.cloud.maglica_host_info:
    require_workers: true
    wait_timeout: 60
'''

RETURN = r'''
hosts:
  description: One entry per host, in configuration order.
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: Host name as configured.
      type: str
    weight:
      description: Placement weight.
      type: int
    uri:
      description: The libvirt URI used.
      type: str
    reachable:
      description: Whether its libvirtd answered.
      type: bool
    error:
      description: Why it could not be asked, when it could not.
      type: str
    hostname:
      description: The host name libvirtd reports.
      type: str
    active_domains:
      description: Running domains.
      type: int
    inactive_domains:
      description: Defined, not running domains (images and stopped VMs).
      type: int
    cpus:
      description: Physical CPUs.
      type: int
    cpu_model:
      description: CPU model libvirt reports.
      type: str
    vcpus_in_use:
      description: Virtual CPUs of the running domains.
      type: int
    memory_mb:
      description: Total memory in MiB.
      type: int
    free_memory_mb:
      description: Free memory in MiB.
      type: int
    worker_alive:
      description: Whether its host worker sent a heartbeat recently; V(null) when the client worker did not answer.
      type: bool
    worker_last_seen_s:
      description: Seconds since its last heartbeat.
      type: float
    worker_pid:
      description: Process id of its host worker.
      type: int
    maintenance:
      description:
        - Whether the host is in maintenance (M(maglica.cloud.maglica_host)), when placement gives it no new VM.
        - V(null) when the client worker does not answer.
      type: bool
    transport:
      description: The libvirt transport of its URI (C(tls), C(ssh), C(tcp), or C(unix) for a local socket).
      type: str
    server_cert_days:
      description: Over C(tls), days until its libvirtd's server certificate expires (negative once it has); else V(null).
      type: float
    server_cert_error:
      description: Why its server certificate could not be read, when it could not.
      type: str
  sample:
    - {name: kvm1.example.com, weight: 10, uri: "qemu+tls://kvm1.example.com/system?pkipath=/etc/maglica/pki/library",
       reachable: true, error: null, transport: tls, server_cert_days: 341.5, server_cert_error: null,
       hostname: kvm1, active_domains: 3, inactive_domains: 2, cpus: 16, vcpus_in_use: 6, memory_mb: 64000,
       free_memory_mb: 41000, worker_alive: true, worker_last_seen_s: 1.2, worker_pid: 4242,
       maintenance: false}
unreachable_hosts:
  description: Errors of the hosts whose libvirtd could not be asked.
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
            host=dict(type='list', elements='str'),
            require_workers=dict(type='bool', default=False),
            wait_timeout=dict(type='float', default=0),
            cert_renew_days=dict(type='int', default=30),
        ),
        supports_check_mode=True,
    )
    p = module.params
    report = common.run(module, lambda config: cloud.host_info(config, p['require_workers'], p['wait_timeout'], p['host'],
                                                               renew_days=p['cert_renew_days']),
                        'libvirt', 'zmq')
    for warning in report['warnings']:
        module.warn(warning)
    unreachable = [h['error'] for h in report['hosts'] if not h['reachable']]
    for error in unreachable:
        module.warn('host not reachable: %s' % error)
    module.exit_json(changed=False, hosts=report['hosts'], unreachable_hosts=unreachable)


if __name__ == '__main__':
    main()
