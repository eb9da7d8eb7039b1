# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment(object):

    # How every Maglica module finds the cloud: a configuration file, settings given inline, or both.
    DOCUMENTATION = r'''
options:
  config:
    description:
      - Path of the Maglica configuration file (the seed's C(maglica.conf) YAML).
      - When neither O(config) nor O(hosts) is given, C(/etc/maglica.conf) is read (or the file named by
        the E(MAGLICA_CONFIG) environment variable).
      - Settings given inline with O(hosts), O(client), O(libvirt), O(security) and O(placement) win over the file's.
    type: path
  hosts:
    description:
      - The hypervisors, replacing the configuration file's list.
    type: list
    elements: dict
    suboptions:
      name:
        description: Host name; also the topic its host worker subscribes to.
        type: str
        required: true
      weight:
        description: Placement weight; a host of weight 20 takes twice the VMs of one of weight 10.
        type: int
        default: 10
      address:
        description: Address of its libvirtd, when it differs from O(hosts[].name).
        type: str
      uri:
        description: Full libvirt URI of the host, overriding O(libvirt).
        type: str
      memory_mb:
        description:
          - The memory (MiB) placement counts for this host under O(placement.policy=resources), instead of the
            total its libvirtd reports.
        type: int
  placement:
    description: How clones are placed (see the README's Placement section).
    type: dict
    suboptions:
      policy:
        description:
          - V(seed) - the least loaded host, (running domains + reserved clones) x 10 / weight.
          - V(resources) - hosts without the memory or pool space for the clone are left out, each with its reason;
            the others scored by committed memory and vCPUs.
        type: str
        choices: [seed, resources]
      memory_overcommit:
        description: Memory a host may commit to domains, as a multiple of its total (V(resources)).
        type: float
  host_state:
    description:
      - Where listings and placement read the hosts' domains, memory and image storage from.
      - By default from the states the host workers pushed to the client worker (one request for every host), and
        from a host's own libvirtd only when its pushed state is older than O(host_state.max_age) or there is none.
    type: dict
    suboptions:
      max_age:
        description:
          - The oldest pushed state (seconds) trusted; V(0) asks every host's libvirtd. Default V(15).
          - A domain made or removed outside Maglica (C(virsh)) is seen within this time.
        type: float
      fresh:
        description: V(true) asks every host's libvirtd, whatever the pushed states say.
        type: bool
  client:
    description: Where the client worker listens.
    type: dict
    suboptions:
      host:
        description: Host name or address of the client worker.
        type: str
      pub_port:
        description: Port of its PUB socket.
        type: int
      rep_port:
        description: Port of its REP socket.
        type: int
      workers:
        description:
          - Several client workers sharing a PostgreSQL job log, one active at a time; requests go to each in turn
            until the active one takes them (a standby answers that it is standby).
          - Unset, the one client worker at O(client.host).
        type: list
        elements: dict
        suboptions:
          name:
            description: The client worker's name (its C(--name)).
            type: str
            required: true
          host:
            description: Host name or address of the client worker.
            type: str
            required: true
          pub_port:
            description: Port of its PUB socket (default O(client.pub_port)).
            type: int
          rep_port:
            description: Port of its REP socket (default O(client.rep_port)).
            type: int
  libvirt:
    description:
      - How the hosts' libvirt URIs are built (C(DRIVER+TRANSPORT://HOST[:PORT]/PATH), with C(?pkipath=PKI_PATH) over C(tls)).
    type: dict
    suboptions:
      driver:
        description: Hypervisor driver.
        type: str
      transport:
        description:
          - Transport. C(tls) (the default) with client certificates, or C(ssh) with the ssh client's own host key checking.
          - C(tcp) has neither encryption nor authentication and is refused unless O(libvirt.insecure) is set.
        type: str
      pki_path:
        description:
          - Directory of C(cacert.pem), C(clientcert.pem) and C(clientkey.pem) for C(tls) (the C(pkipath) URI parameter).
          - The configuration's default is C(/etc/maglica/pki/library), where the client_worker role puts them.
        type: path
      insecure:
        description:
          - Allow C(transport=tcp), and host URIs that are C(tcp) in any case (C(qemu+TCP://)) or turn off the check of the
            host's identity (C(no_verify=1), C(known_hosts_verify=ignore) or C(auto)); each use is warned about.
        type: bool
      path:
        description: Path part of the URI.
        type: str
      port:
        description: Port, when not the transport's default.
        type: int
  security:
    description: CURVE authentication towards the client worker.
    type: dict
    suboptions:
      curve:
        description: Use CURVE encryption and authentication. Turn off only on a trusted network.
        type: bool
      key_dir:
        description: Directory holding C(library.key_secret) and the client worker's C(server.key).
        type: path
requirements:
  - python >= 3.8
  - libvirt-python (Debian and RHEL package C(python3-libvirt))
  - pyzmq
  - PyYAML
'''
