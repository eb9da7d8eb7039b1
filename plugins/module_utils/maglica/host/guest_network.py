# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A clone's network settings written in the guest's own stack: ifupdown (Debian), ifcfg (RHEL), NetworkManager
keyfiles, netplan."""

from __future__ import annotations

import posixpath
import re
import uuid
from typing import Any, Dict, List, Optional, Sequence, Tuple, TypedDict

from .. import deps
from ..protocol.user_data import dump
from .guest import NM_DIR, Guest, GuestSettings, drop_keys, set_key

DEBIAN_FAMILY = ('debian', 'ubuntu', 'linuxmint', 'kalilinux')
RHEL_FAMILY = ('rhel', 'centos', 'fedora', 'rocky', 'almalinux', 'oraclelinux', 'scientificlinux', 'redhat-based', 'circle', 'eurolinux')
# How Debian (and RHEL) enable NetworkManager: `systemctl enable` makes this link.
NM_WANTS = '/etc/systemd/system/multi-user.target.wants/NetworkManager.service'
IFCFG_DIR = '/etc/sysconfig/network-scripts'
INTERFACES = '/etc/network/interfaces'
INTERFACES_D = '/etc/network/interfaces.d'
NETPLAN_DIR = '/etc/netplan'
# Where cloud-init writes its own rendering of the network-config on Debian (cloudinit/distros/debian.py) and
# with NetworkManager (cloudinit/net/network_manager.py): the offline config goes there, see network_target().
CLOUD_INIT_ENI = INTERFACES_D + '/50-cloud-init'
CLOUD_INIT_NETPLAN = NETPLAN_DIR + '/50-cloud-init.yaml'


def debian_interfaces(before: Optional[str], settings: GuestSettings, device: str, stanza: bool = True) -> str:
    """/etc/network/interfaces with DEVICE's stanza replaced by ours (DHCP or static), or only removed (stanza=False)."""
    out, skipping = [], False
    for line in (before or '').splitlines():
        words = line.split()
        if words and not line[0].isspace():
            skipping = False
            if words[0] in ('auto', 'allow-hotplug') and device in words[1:]:
                rest = [w for w in words[1:] if w != device]
                if rest:
                    out.append('%s %s' % (words[0], ' '.join(rest)))
                continue
            if words[0] == 'iface' and len(words) > 1 and words[1] == device:
                skipping = True
                continue
        if not skipping:
            out.append(line)
    while out and not out[-1].strip():
        out.pop()
    if not stanza:
        return '\n'.join(out) + '\n' if out else ''
    lines = ['auto %s' % device]
    net = settings.network
    if settings.static:
        lines.append('iface %s inet static' % device)
        lines.append('    address %s/%d' % (net['address'], net.get('prefix', 24)))
        if net.get('gateway'):
            lines.append('    gateway %s' % net['gateway'])
        if net.get('dns'):
            lines.append('    dns-nameservers %s' % ' '.join(net['dns']))
        if net.get('domain'):
            lines.append('    dns-search %s' % net['domain'])
    else:
        lines.append('iface %s inet dhcp' % device)
        lines.append('    hostname %s' % settings.short)
    return '\n'.join(out + [''] + lines if out else lines) + '\n'


def interfaces_devices(text: Optional[str]) -> List[str]:
    """Devices with an `iface` stanza in an interfaces(5) text."""
    return re.findall(r'^iface\s+(\S+)\s+inet6?\s', text or '', re.M)


def sources_interfaces_d(text: Optional[str]) -> bool:
    """Whether an interfaces(5) text reads /etc/network/interfaces.d (where cloud-init writes its stanzas)."""
    return bool(re.search(r'^\s*source(-directory)?\s+/etc/network/interfaces\.d(/\*)?\s*$', text or '', re.M))


def dhclient_conf(before: Optional[str], settings: GuestSettings) -> str:
    """dhclient.conf sending the new name as the DHCP host name."""
    line = 'send host-name = "%s";' % settings.hostname
    pattern = re.compile(r'^\s*send\s+host-name\s+.*;\s*$', re.M)
    text = before or ''
    if pattern.search(text):
        return pattern.sub(line, text, count=1)
    return text + ('' if not text or text.endswith('\n') else '\n') + line + '\n'


def ifcfg(before: str, settings: GuestSettings) -> str:
    """An RHEL ifcfg file: DHCP_HOSTNAME, or a static address; the image's MAC and UUID dropped."""
    text = drop_keys(before, ('HWADDR', 'UUID', 'MACADDR'))
    text = set_key(text, 'ONBOOT', 'yes')
    net = settings.network
    if settings.static:
        text = drop_keys(text, ('DHCP_HOSTNAME', 'IPADDR', 'PREFIX', 'NETMASK', 'GATEWAY', 'DNS1', 'DNS2', 'DNS3'))
        text = set_key(text, 'BOOTPROTO', 'none')
        text = set_key(text, 'IPADDR', net['address'])
        text = set_key(text, 'PREFIX', str(net.get('prefix', 24)))
        if net.get('gateway'):
            text = set_key(text, 'GATEWAY', net['gateway'])
        for index, server in enumerate(net.get('dns') or [], 1):
            text = set_key(text, 'DNS%d' % index, server)
    else:
        text = set_key(text, 'BOOTPROTO', 'dhcp')
        text = set_key(text, 'DHCP_HOSTNAME', settings.hostname)
    return text


def nm_keyfile(before: str, settings: GuestSettings) -> str:
    """A NetworkManager keyfile: [ipv4] dhcp-hostname or a manual address; the image's MAC dropped."""
    sections: Dict[str, List[str]] = {}
    current: Optional[str] = None
    order = []
    for line in before.splitlines():
        match = re.match(r'^\s*\[(.+)\]\s*$', line)
        if match:
            current = match.group(1)
            order.append(current)
            sections[current] = []
        elif current is not None:
            sections[current].append(line)
        else:
            if '' not in sections:
                order.insert(0, '')
            sections.setdefault('', []).append(line)
    for name in ('ethernet', '802-3-ethernet'):
        if name in sections:
            sections[name] = [l for l in sections[name] if not l.strip().startswith('mac-address=')]
    if 'ipv4' not in sections:
        order.append('ipv4')
        sections['ipv4'] = []
    body = '\n'.join(sections['ipv4'])
    net = settings.network
    if settings.static:
        body = drop_keys(body, ('dhcp-hostname', 'dhcp-send-hostname', 'address1', 'gateway', 'dns', 'dns-search'))
        body = set_key(body, 'method', 'manual')
        gateway = ',%s' % net['gateway'] if net.get('gateway') else ''
        body = set_key(body, 'address1', '%s/%d%s' % (net['address'], net.get('prefix', 24), gateway))
        if net.get('dns'):
            body = set_key(body, 'dns', ';'.join(net['dns']) + ';')
        if net.get('domain'):
            body = set_key(body, 'dns-search', net['domain'] + ';')
    else:
        body = drop_keys(body, ('address1', 'gateway'))
        body = set_key(body, 'method', 'auto')
        body = set_key(body, 'dhcp-hostname', settings.hostname)
        body = set_key(body, 'dhcp-send-hostname', 'true')
    sections['ipv4'] = [l for l in body.splitlines() if l.strip()]
    out = []
    for name in order:
        if name:
            out.append('[%s]' % name)
        out.extend(sections[name])
        out.append('')
    return '\n'.join(out).rstrip('\n') + '\n'


def interface_name(guest: Guest, settings: GuestSettings, candidates: Sequence[Optional[str]]) -> str:
    """The device to configure: the one asked for, else the first the image configures, else eth0."""
    if settings.network.get('device'):
        return settings.network['device']
    for name in candidates:
        if name and name != 'lo':
            return name
    return 'eth0'


def netplan_config(settings: GuestSettings, device: str) -> Dict[str, Any]:
    """The `network` option as netplan version 2: both the netplan file and cloud-init's network-config."""
    net = settings.network
    ethernet: Dict[str, Any] = {}
    if settings.static:
        ethernet['addresses'] = ['%s/%d' % (net['address'], net.get('prefix', 24))]
        if net.get('gateway'):
            # 0.0.0.0/0 rather than `default`: cloud-init before 23 cannot parse `to: default`.
            ethernet['routes'] = [{'to': '::/0' if ':' in net['gateway'] else '0.0.0.0/0', 'via': net['gateway']}]
        nameservers: Dict[str, Any] = {}
        if net.get('dns'):
            nameservers['addresses'] = list(net['dns'])
        if net.get('domain'):
            nameservers['search'] = [net['domain']]
        if nameservers:
            ethernet['nameservers'] = nameservers
    else:
        ethernet['dhcp4'] = True
        ethernet['dhcp4-overrides'] = {'hostname': settings.hostname}
    return {'version': 2, 'ethernets': {device: ethernet}}


def netplan(settings: GuestSettings, device: str) -> str:
    """A netplan file for DEVICE, written with a YAML library: any hostname reads back as the same string."""
    return '# Written by maglica for %s\n' % settings.hostname + dump({'network': netplan_config(settings, device)})


def netplan_without(text: Optional[str], device: str) -> Optional[str]:
    """A netplan file's text with DEVICE's ethernet removed (ours defines it), or None when it has none or is unreadable."""
    yaml = deps.load('yaml')
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        return None
    ethernets = ((data or {}).get('network') or {}).get('ethernets') if isinstance(data, dict) else None
    if not isinstance(ethernets, dict) or device not in ethernets:
        return None
    del ethernets[device]
    return dump(data)


def keyfile_device(text: str) -> Tuple[Optional[str], Optional[str]]:
    """(interface-name, type) of a NetworkManager keyfile."""
    name = re.search(r'^\s*interface-name\s*=\s*(\S+)\s*$', text, re.M)
    kind = re.search(r'^\s*type\s*=\s*(\S+)\s*$', text, re.M)
    return (name.group(1) if name else None), (kind.group(1) if kind else None)


def new_keyfile(device: str) -> str:
    return ('[connection]\nid=%s\nuuid=%s\ntype=ethernet\ninterface-name=%s\nautoconnect=true\n\n[ethernet]\n\n'
            '[ipv4]\n\n[ipv6]\nmethod=auto\n' % (device, uuid.uuid4(), device))


class Stacks(TypedDict):
    """What configures a guest's network (network_stacks)."""

    netplan: List[str]  # netplan files
    networkmanager: bool  # enabled, or has keyfiles
    keyfiles: List[str]  # NetworkManager keyfiles
    interfaces: Optional[str]  # /etc/network/interfaces, None when there is none
    ifcfg: List[str]  # RHEL ifcfg files but the loopback's


def network_stacks(guest: Guest) -> Stacks:
    """What configures the guest's network, read from its files (not from its distribution)."""
    keyfiles = guest.glob(NM_DIR + '/*.nmconnection')
    return {
        'netplan': guest.glob(NETPLAN_DIR + '/*.yaml') + guest.glob(NETPLAN_DIR + '/*.yml'),
        'networkmanager': guest.exists(NM_WANTS) or bool(keyfiles),
        'keyfiles': keyfiles,
        'interfaces': guest.read(INTERFACES),
        'ifcfg': [p for p in guest.glob(IFCFG_DIR + '/ifcfg-*') if not p.endswith('ifcfg-lo')],
    }


def customize_network(guest: Guest, settings: GuestSettings, family: str, cloud_init: bool,
                      notes: List[str]) -> Tuple[str, List[str]]:
    """Write the network settings where the guest's own network stack reads them. Returns (device, [stacks written])."""
    stacks = network_stacks(guest)
    interfaces = stacks['interfaces']
    stanzas = interfaces_devices(interfaces)
    if interfaces is not None:
        for path in guest.glob(INTERFACES_D + '/*'):
            stanzas += interfaces_devices(guest.read(path))
    candidates = stanzas + [keyfile_device(guest.read(p) or '')[0] for p in stacks['keyfiles']]
    device = interface_name(guest, settings, candidates)
    written: List[str] = []
    if stacks['netplan']:
        # netplan renders for networkd or NetworkManager itself: it is the one place to write.
        target = CLOUD_INIT_NETPLAN if cloud_init else NETPLAN_DIR + '/50-maglica.yaml'
        for path in stacks['netplan']:
            if path != target:
                rest = netplan_without(guest.read(path), device)
                if rest is not None:
                    guest.write(path, rest)
        guest.write(target, netplan(settings, device), mode=0o600, owner=(0, 0))
        written.append('netplan')
    else:
        # Debian's NetworkManager leaves alone the devices that /etc/network/interfaces configures: ifupdown
        # owns the device when it has a stanza, or when NetworkManager is not there at all.
        ifupdown = interfaces is not None and (device in stanzas or not stacks['networkmanager'] and family != 'rhel')
        if ifupdown:
            customize_ifupdown(guest, settings, device, interfaces, cloud_init)
            written.append('ifupdown')
        if family == 'rhel':
            network = guest.read('/etc/sysconfig/network')
            if network is not None:
                guest.write('/etc/sysconfig/network', set_key(network, 'HOSTNAME', settings.hostname))
            for path in stacks['ifcfg']:
                guest.write(path, ifcfg(guest.read(path) or '', settings))
            if stacks['ifcfg']:
                written.append('ifcfg')
        if stacks['networkmanager']:
            mine = []
            for path in stacks['keyfiles']:
                text = guest.read(path) or ''
                name, kind = keyfile_device(text)
                if name == device or name is None and kind in ('ethernet', '802-3-ethernet'):
                    mine.append(path)
                    guest.write(path, nm_keyfile(text, settings), mode=0o600)
            if not mine and not ifupdown and not stacks['ifcfg']:
                # No profile for the device: NetworkManager would make "Wired connection 1" and send whatever
                # hostname it has at that moment. Ours says what to send. cloud-init's NetworkManager renderer
                # writes cloud-init-DEVICE.nmconnection: the same name, so there are never two profiles.
                name = 'cloud-init-%s.nmconnection' % device if cloud_init else 'maglica-%s.nmconnection' % device
                guest.g.mkdir_p(NM_DIR)
                guest.write(posixpath.join(NM_DIR, name), nm_keyfile(new_keyfile(device), settings), mode=0o600, owner=(0, 0))
            written.append('networkmanager')
    if family == 'debian' and guest.g.is_dir('/etc/dhcp') and not settings.static:
        guest.write('/etc/dhcp/dhclient.conf', dhclient_conf(guest.read('/etc/dhcp/dhclient.conf'), settings))
    if not written:
        notes.append('no netplan, NetworkManager, ifupdown or ifcfg configuration found: network left as it is')
    return device, written


def customize_ifupdown(guest: Guest, settings: GuestSettings, device: str, interfaces: Optional[str], cloud_init: bool) -> None:
    """DEVICE's stanza, in exactly one file that ifupdown reads.

    With cloud-init, the stanza goes to interfaces.d/50-cloud-init: cloud-init's Debian renderer rewrites that
    file from the network-config we seed (the same settings), so before and after its first run there is one
    stanza for the device - never a second one beside it in /etc/network/interfaces, which would make ifup
    configure the device twice. Without cloud-init (or when interfaces.d is not read), /etc/network/interfaces.
    """
    target = CLOUD_INIT_ENI if cloud_init and sources_interfaces_d(interfaces) else INTERFACES
    for path in [INTERFACES] + guest.glob(INTERFACES_D + '/*'):
        if path != target:
            text = interfaces if path == INTERFACES else guest.read(path)
            if device in interfaces_devices(text):
                guest.write(path, debian_interfaces(text, settings, device, stanza=False))
    if target == INTERFACES:
        guest.write(INTERFACES, debian_interfaces(interfaces, settings, device))
    else:
        guest.g.mkdir_p(INTERFACES_D)
        header = '# Written by maglica; cloud-init writes the same from the network-config of its NoCloud seed.\n'
        before = guest.read(target)
        guest.write(target, debian_interfaces(before if before is not None else header, settings, device))
