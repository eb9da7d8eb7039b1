# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Waiting until a started clone is a machine you can reach: an address, then SSH with the host key we wrote.

"Answers SSH" is proven by the SSH client itself with strict host key checking against the
known_hosts lines made from the keys the host worker wrote into the clone: the key exchange only
succeeds when the guest holds the private key of a key we returned. No credentials are offered, so
the guest answers "Permission denied" after the host key was verified; a different key makes the
client say "Host key verification failed". A banner or an open port proves neither.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
import subprocess
import tempfile
from dataclasses import dataclass, field
from typing import Any, Callable, List, Optional, Tuple, TypedDict

from ..cluster import virt
from ..cluster.config import Config
from ..cluster.virt import Domain
from ..errors import MaglicaError
from .known_hosts import known_hosts_lines
from .waiting import Waiter

WAIT_FOR = ('none', 'ip', 'ssh')
SSH = os.environ.get('MAGLICA_SSH', 'ssh')
SSH_CONNECT_TIMEOUT = 10
POLL_INTERVAL = 2.0
LOG = logging.getLogger('maglica.reach')
# What the guest agent may call an interface or its MAC address: printable, short (Windows names have spaces).
INTERFACE_NAME_RE = re.compile(r'[A-Za-z0-9_.:@ ()#-]{1,64}')
MAC_RE = re.compile(r'[0-9a-f]{2}(:[0-9a-f]{2}){5}')


class GuestAddress(TypedDict):
    """One address of a guest, parsed (see interface_addresses)."""
    interface: Optional[str]
    mac: Optional[str]
    address: str
    prefix: Optional[int]
    family: str


class NotReachable(MaglicaError):
    """The clone was made and started but did not come up as asked in time. It is kept."""


@dataclass
class Reachability:
    """What was observed of a started clone: its address, whether SSH answered with our key, the last thing observed."""
    ip: Optional[str] = None
    ssh: bool = False
    last_seen: str = 'nothing yet'
    waited_s: float = 0.0
    addresses: List[GuestAddress] = field(default_factory=list)
    warnings: List[str] = field(default_factory=list)


def clone_names(hostname: str, ip: Optional[str] = None) -> List[str]:
    """The names a clone is reached by: its name, its short name, and its address once known."""
    return [hostname, hostname.split('.')[0]] + ([ip] if ip else [])


def ssh_answers(address: str, known_hosts: List[str], port: int = 22, timeout: int = SSH_CONNECT_TIMEOUT) -> Tuple[bool, str]:
    """(True, what was observed) when sshd at `address` proves it holds a host key of `known_hosts`."""
    with tempfile.TemporaryDirectory(prefix='maglica-ssh-') as tmp:
        path = os.path.join(tmp, 'known_hosts')
        with open(path, 'w') as handle:
            handle.write(''.join('%s\n' % line for line in known_hosts))
        command = [SSH, '-F', '/dev/null', '-p', str(port), '-o', 'BatchMode=yes', '-o', 'StrictHostKeyChecking=yes',
                   '-o', 'UserKnownHostsFile=%s' % path, '-o', 'GlobalKnownHostsFile=/dev/null',
                   '-o', 'ConnectTimeout=%d' % timeout, '-o', 'IdentityAgent=none', '-o', 'PubkeyAuthentication=no',
                   '-o', 'PasswordAuthentication=no', '-o', 'KbdInteractiveAuthentication=no',
                   '-o', 'GSSAPIAuthentication=no', '-o', 'HostbasedAuthentication=no',
                   '-o', 'LogLevel=ERROR', 'maglica-probe@%s' % address, 'true']
        try:
            proc = subprocess.run(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  timeout=timeout + 5, check=False)
        except subprocess.TimeoutExpired:
            return False, 'ssh to %s did not finish within %ds' % (address, timeout + 5)
        except OSError as e:
            raise MaglicaError('cannot run %s: %s' % (SSH, e.strerror or e))
    output = proc.stdout.decode('utf-8', 'replace').strip()
    # Authentication comes after the host key was verified: a refusal of our (absent) credentials is the proof.
    if proc.returncode == 0 or 'Permission denied' in output:
        return True, 'sshd at %s presented a host key the clone was given' % address
    last = output.splitlines()[-1] if output else 'ssh exited %d' % proc.returncode
    return False, 'ssh %s: %s' % (address, last)


def wait(config: Config, host: str, name: str, mode: str, public_keys: List[str], timeout: float,
         console: Optional[Callable[[], List[str]]] = None) -> Reachability:
    """Wait until the clone `name` on `host` has an address (`ip`), or also answers SSH with one of its
    `public_keys` (`ssh`), checked against known_hosts lines naming it by that address.

    Raises NotReachable, with the last thing observed and the console's last lines (from `console()`), when it
    does not get there within `timeout` seconds. The clone is left as it is.
    """
    observed = Reachability()
    if mode == 'none':
        return observed
    if mode not in WAIT_FOR:
        raise MaglicaError('wait_for must be one of %s, not %r' % (', '.join(WAIT_FOR), mode))
    if mode == 'ssh' and not public_keys:
        raise MaglicaError('wait_for=ssh needs the clone\'s SSH host keys, and %s has none recorded' % name)
    waiter = Waiter(timeout, first=POLL_INTERVAL, most=POLL_INTERVAL)
    # Read-write: libvirt answers guest-agent address queries only on a read-write connection, and without the
    # agent a DHCP lease of an earlier boot of the same MAC could be taken for the address.
    with virt.Connection(config, config.host(host)) as conn:
        while True:
            observed.waited_s = round(waiter.elapsed(), 1)
            dom = conn.lookupByName(name)
            if not dom.isActive():
                observed.last_seen = '%s is not running' % name
            else:
                warnings: List[str] = []
                observed.addresses = guest_addresses(dom, warnings)
                observed.warnings = list(dict.fromkeys(observed.warnings + warnings))
                ipv4: List[Optional[str]] = [a['address'] for a in observed.addresses if a['family'] == 'ipv4']
                observed.ip = (ipv4 or [a['address'] for a in observed.addresses] or [None])[0]
                if observed.ip is None:
                    observed.last_seen = 'no address yet (neither the guest agent nor the DHCP leases know one)'
                    if warnings:
                        observed.last_seen = 'no address yet (%s)' % '; '.join(warnings[:3])
                elif mode == 'ip':
                    return observed
                else:
                    observed.ssh, observed.last_seen = ssh_answers(observed.ip, known_hosts_lines(clone_names(name, observed.ip),
                                                                                                  public_keys))
                    if observed.ssh:
                        return observed
            if waiter.expired():
                break
            waiter.pause()
    lines = []
    if console is not None:
        try:
            lines = console()
        except MaglicaError as e:
            lines = ['(its console could not be read: %s)' % e]
    tail = '\n'.join(lines[-20:]) if lines else '(no console output recorded)'
    raise NotReachable('%s on %s was made and started but %s within %ds; the clone was kept. Last seen: %s. '
                       'Its console ended with:\n%s' % (name, host, 'has no address' if mode == 'ip' or observed.ip is None
                                                        else 'does not answer SSH with its host key', timeout,
                                                        observed.last_seen, tail))


def shown(value: Any) -> str:
    """A guest's value for a message: repr (no line breaks), cut short."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + '...'


def parse_address(value: Any) -> Optional[str]:
    """The IP address a guest reported, as ipaddress writes it, or None when `value` is not exactly one address.

    A guest agent's values are the guest's choice: '10.0.0.9,*', a line break, a scope id ('fe80::1%eth0')
    or a name would become known_hosts patterns or extra lines, so only a plain IPv4 or IPv6 address passes.
    """
    if not isinstance(value, str):
        return None
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.scope_id is not None:
        return None
    return str(address)


def is_guest_address(address: str) -> bool:
    """An address the guest can be reached at from outside: not loopback, link-local, multicast or unspecified."""
    parsed = ipaddress.ip_address(address)
    if isinstance(parsed, ipaddress.IPv6Address) and parsed.ipv4_mapped is not None:
        parsed = parsed.ipv4_mapped
    return not (parsed.is_loopback or parsed.is_link_local or parsed.is_multicast or parsed.is_unspecified)


def interface_addresses(interfaces: Any, warnings: List[str]) -> List[GuestAddress]:
    """libvirt's interfaceAddresses reply, parsed: [{interface, mac, address, prefix, family}], IPv4 first.

    Everything in it may come from the guest (its agent): an address that is not an IP address is dropped, an
    interface name or MAC that does not parse is left out (None), each with a line in `warnings`.
    """
    found: List[GuestAddress] = []
    if not isinstance(interfaces, dict):
        return found
    for iface_name, iface in sorted(interfaces.items(), key=lambda item: str(item[0])):
        if not isinstance(iface, dict) or not isinstance(iface.get('addrs'), list):
            continue
        name = iface_name if isinstance(iface_name, str) and INTERFACE_NAME_RE.fullmatch(iface_name) else None
        if name is None and iface_name is not None:
            warnings.append('the guest reported an interface name that is not one, %s: left out' % shown(iface_name))
        if name == 'lo':
            continue
        mac = iface.get('hwaddr')
        if mac is not None:
            mac = mac.lower() if isinstance(mac, str) and MAC_RE.fullmatch(mac.lower()) else None
            if mac is None:
                warnings.append('the guest reported a MAC address for %s that is not one, %s: left out'
                                % (name or 'an interface', shown(iface.get('hwaddr'))))
        for addr in iface['addrs']:
            value = addr.get('addr') if isinstance(addr, dict) else addr
            address = parse_address(value)
            if address is None:
                warnings.append('the guest reported an address for %s that is not an IP address, %s: dropped'
                                % (name or 'an interface', shown(value)))
                continue
            if not is_guest_address(address):
                continue
            version = ipaddress.ip_address(address).version
            prefix = addr.get('prefix') if isinstance(addr, dict) else None
            if not isinstance(prefix, int) or isinstance(prefix, bool) or not 0 <= prefix <= (32 if version == 4 else 128):
                prefix = None
            found.append({'interface': name, 'mac': mac, 'address': address, 'prefix': prefix,
                          'family': 'ipv4' if version == 4 else 'ipv6'})
    return sorted(found, key=lambda a: a['family'] != 'ipv4')


def guest_addresses(dom: Domain, warnings: Optional[List[str]] = None) -> List[GuestAddress]:
    """The guest's IP addresses where libvirt knows them: the guest agent, else the DHCP leases of its network.

    Only parsed IP addresses (see interface_addresses); what was dropped is logged and added to `warnings`.
    """
    lv = virt.libvirt()
    sources = [getattr(lv, 'VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_AGENT', 1), getattr(lv, 'VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_LEASE', 0)]
    for source in sources:
        try:
            interfaces = dom.interfaceAddresses(source, 0) or {}
        except lv.libvirtError:  # no agent (yet), or not on a libvirt network: try the next way
            continue
        dropped: List[str] = []
        found = interface_addresses(interfaces, dropped)
        for line in dropped:
            LOG.warning('%s: %s', dom.name(), line)
        if warnings is not None:
            warnings.extend('%s: %s' % (dom.name(), line) for line in dropped)
        if found:
            return found
    return []
