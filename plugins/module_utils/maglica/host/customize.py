# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Offline guest customisation with the libguestfs Python API: one appliance launch per clone.

Makes a clone a new machine: its hostname, and the network settings of what the guest really uses
(ifupdown, netplan, NetworkManager, RHEL ifcfg); new SSH host keys of the types the image had;
everything else that must differ per machine emptied or made anew (machine-id, DHCP leases, the
random seed, cloud-init's instance state, the old hostname wherever it stays); and, for images
with cloud-init, a NoCloud seed that agrees with all of it. Everything it changes is reported,
with a diff of text files in which secrets are masked.
"""

from __future__ import annotations

import os
import posixpath
import re
import uuid
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from . import cloudinit, deps, hostkeys
from .errors import MaglicaError

DEBIAN_FAMILY = ('debian', 'ubuntu', 'linuxmint', 'kalilinux')
RHEL_FAMILY = ('rhel', 'centos', 'fedora', 'rocky', 'almalinux', 'oraclelinux', 'scientificlinux', 'redhat-based', 'circle', 'eurolinux')
NM_DIR = '/etc/NetworkManager/system-connections'
# How Debian (and RHEL) enable NetworkManager: `systemctl enable` makes this link.
NM_WANTS = '/etc/systemd/system/multi-user.target.wants/NetworkManager.service'
IFCFG_DIR = '/etc/sysconfig/network-scripts'
INTERFACES = '/etc/network/interfaces'
INTERFACES_D = '/etc/network/interfaces.d'
NETPLAN_DIR = '/etc/netplan'
SSH_DIR = '/etc/ssh'
SSHD_PATHS = ('/usr/sbin/sshd', '/sbin/sshd', '/usr/bin/sshd')
HOST_KEY_RE = re.compile(r'/etc/ssh/ssh_host_([a-z0-9]+)_key')
RANDOM_SEED = '/var/lib/systemd/random-seed'
URANDOM_SEED = '/var/lib/urandom/random-seed'  # sysvinit's urandom script
RANDOM_SEED_BYTES = 512  # what systemd-random-seed and virt-customize write
CREDENTIAL_SECRET = '/var/lib/systemd/credential.secret'
CLOUD_INIT = '/usr/bin/cloud-init'
CLOUD_INIT_DISABLED = '/etc/cloud/cloud-init.disabled'
CLOUD_DIR = '/var/lib/cloud'
NOCLOUD_DIR = '/var/lib/cloud/seed/nocloud'
# Where cloud-init writes its own rendering of the network-config on Debian (cloudinit/distros/debian.py) and
# with NetworkManager (cloudinit/net/network_manager.py): the offline config goes there, see network_target().
CLOUD_INIT_ENI = INTERFACES_D + '/50-cloud-init'
CLOUD_INIT_NETPLAN = NETPLAN_DIR + '/50-cloud-init.yaml'
# Files whose content must never show up in a diff; see is_secret() for the SSH host keys.
SECRET_FILES = ('/etc/shadow', '/etc/gshadow', RANDOM_SEED, URANDOM_SEED, CREDENTIAL_SECRET, NOCLOUD_DIR + '/user-data')
# Secret values in NetworkManager keyfiles (Wi-Fi PSKs, 802.1x and VPN passwords), masked line by line.
NM_SECRET_RE = re.compile(r'^(\s*(?:psk|password|pin|wep-key\d|[\w-]*-password|[\w-]*secret[\w-]*)\s*=).*$', re.M | re.I)
# Per-machine state that the software it belongs to makes anew when it is missing (virt-sysprep's
# dhcp-client-state and more): DHCP leases of dhclient, NetworkManager, dhcpcd, and machine secrets.
MACHINE_STATE_GLOBS = (
    '/var/lib/dhcp/dhclient*', '/var/lib/dhclient/*', '/var/lib/dhcpcd/*.lease*', '/var/lib/dhcpcd5/*.lease*',
    '/var/lib/NetworkManager/*.lease', '/var/lib/NetworkManager/secret_key', '/var/lib/NetworkManager/timestamps',
    '/var/lib/systemd/network/*', CREDENTIAL_SECRET, '/var/lib/yum/uuid', '/etc/sysconfig/hw-uuid',
)
# Files that name the host: the image's name in them is replaced by the clone's (whole words only).
HOSTNAME_FILES = ('/etc/mailname', '/etc/postfix/main.cf', '/etc/exim4/update-exim4.conf.conf')
GENERIC_HOSTNAMES = ('localhost', 'localhost.localdomain', 'localhost6', 'unknown', '')
SELINUX_CONFIG = '/etc/selinux/config'
AUTORELABEL = '/.autorelabel'


def is_secret(path: str) -> bool:
    """Whether a guest file's content must stay out of diffs, results and logs: private keys, hashes, seeds."""
    return path in SECRET_FILES or bool(HOST_KEY_RE.fullmatch(path))


def diff_text(path: str, text: Optional[str]) -> str:
    """A file's text as a diff may show it: NetworkManager keyfiles with their secret values masked."""
    if text is None:
        return ''
    if path.startswith(NM_DIR + '/'):
        return NM_SECRET_RE.sub(r'\1(secret)', text)
    return text


class GuestSettings:
    """What to write into the guest, from a vm.clone job's args."""

    def __init__(self, hostname: str, network: Optional[Dict[str, Any]] = None, root_password_hash: Optional[str] = None,
                 ssh_authorized_keys: Optional[Sequence[str]] = None, cloud_init_user_data: Optional[str] = None):
        self.hostname = hostname
        self.short = hostname.split('.')[0]
        self.network = network or {'mode': 'dhcp'}
        self.root_password_hash = root_password_hash
        self.ssh_authorized_keys = list(ssh_authorized_keys or [])
        self.cloud_init_user_data = cloud_init_user_data

    def __repr__(self) -> str:  # never the password hash or the user-data
        return 'GuestSettings(%r, %r)' % (self.hostname, self.network)

    @property
    def static(self) -> bool:
        return self.network.get('mode') == 'static'


class Guest:
    """An open guestfs handle on a guest's disks, mounted, recording every change."""

    def __init__(self, handle):
        self.g = handle
        self.changed: List[str] = []
        self.removed: List[str] = []
        self.diff: List[Dict[str, str]] = []

    def read(self, path: str) -> Optional[str]:
        if not self.g.is_file(path, followsymlinks=True):
            return None
        return self.g.read_file(path).decode('utf-8', 'replace')

    def exists(self, path: str) -> bool:
        """Anything at `path`, a dangling symlink included (an enabled unit's link points into /lib)."""
        return self.g.exists(path) or self.g.is_symlink(path)

    def write(self, path: str, content: Union[str, bytes], mode: Optional[int] = None,
              owner: Optional[Tuple[int, int]] = None) -> bool:
        """Write a file (mode and owner kept when it exists, else as given). Secret files show masked in the diff."""
        data = content.encode('utf-8') if isinstance(content, str) else content
        before = self.g.read_file(path) if self.g.is_file(path, followsymlinks=True) else None
        if before == data:
            return False
        # Written over the old file, not replaced: its SELinux label and other xattrs stay.
        self.g.write(path, data)
        if owner is not None:
            self.g.chown(owner[0], owner[1], path)
        if mode is not None:
            self.g.chmod(mode, path)
        self.changed.append(path)
        if is_secret(path):
            self.diff.append({'before_header': path, 'after_header': path,
                              'before': '(secret content)\n' if before is not None else '',
                              'after': '(secret content, changed)\n'})
        else:
            self.diff.append({'before_header': path, 'after_header': path,
                              'before': diff_text(path, before.decode('utf-8', 'replace') if before is not None else None),
                              'after': diff_text(path, data.decode('utf-8', 'replace'))})
        return True

    def remove(self, path: str) -> None:
        """Remove a file, a symlink or a whole directory."""
        if self.exists(path):
            self.g.rm_rf(path)
            self.removed.append(path)
            self.diff.append({'before_header': path, 'after_header': '/dev/null', 'before': '(removed)\n', 'after': ''})

    def empty(self, path: str) -> None:
        """Truncate a file that exists and has content (machine-id, persistent net rules)."""
        if self.g.is_file(path, followsymlinks=False) and self.g.filesize(path) > 0:
            self.write(path, '')

    def glob(self, pattern: str) -> List[str]:
        return [p for p in self.g.glob_expand(pattern) if self.g.is_file(p, followsymlinks=False)]

    def stat(self, path: str) -> Tuple[int, int, int]:
        """(permission bits, uid, gid) of a file."""
        info = self.g.lstatns(path)
        return info['st_mode'] & 0o7777, info['st_uid'], info['st_gid']


def set_key(text, key, value, sep='=', quote=''):
    """Set `key=value` in a shell-style or ini-style block of lines, replacing an existing assignment."""
    line = '%s%s%s%s%s' % (key, sep, quote, value, quote)
    pattern = re.compile(r'^\s*%s\s*%s.*$' % (re.escape(key), re.escape(sep)), re.M)
    if pattern.search(text):
        return pattern.sub(line.replace('\\', '\\\\'), text, count=1)
    return text + ('' if not text or text.endswith('\n') else '\n') + line + '\n'


def drop_keys(text, keys):
    return ''.join(line for line in text.splitlines(True)
                   if not re.match(r'^\s*(%s)\s*=' % '|'.join(re.escape(k) for k in keys), line))


def hosts_file(before, settings, old_hostname):
    """/etc/hosts with the old name gone and a line for the new one."""
    address = settings.network['address'] if settings.static else '127.0.1.1'
    lines = []
    for line in (before or '').splitlines():
        fields = line.split('#')[0].split()
        names = fields[1:]
        if fields and (fields[0] in ('127.0.1.1', address) or old_hostname and (old_hostname in names or old_hostname.split('.')[0] in names)):
            continue
        lines.append(line)
    names = settings.hostname if settings.hostname == settings.short else '%s %s' % (settings.hostname, settings.short)
    if not any(l.split()[:1] == ['127.0.0.1'] for l in lines):
        lines.insert(0, '127.0.0.1\tlocalhost')
    lines.insert(1, '%s\t%s' % (address, names))
    return '\n'.join(lines) + '\n'


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


def dhclient_conf(before, settings):
    """dhclient.conf sending the new name as the DHCP host name (the seed's way)."""
    line = 'send host-name = "%s";' % settings.hostname
    pattern = re.compile(r'^\s*send\s+host-name\s+.*;\s*$', re.M)
    text = before or ''
    if pattern.search(text):
        return pattern.sub(line, text, count=1)
    return text + ('' if not text or text.endswith('\n') else '\n') + line + '\n'


def ifcfg(before, settings):
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


def nm_keyfile(before, settings):
    """A NetworkManager keyfile: [ipv4] dhcp-hostname or a manual address; the image's MAC dropped."""
    sections, current = {}, None
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


def shadow(before, password_hash):
    if before is None:
        raise MaglicaError('the guest has no /etc/shadow to set the root password in')
    lines = []
    found = False
    for line in before.splitlines():
        fields = line.split(':')
        if fields[0] == 'root' and len(fields) > 1:
            fields[1] = password_hash
            line = ':'.join(fields)
            found = True
        lines.append(line)
    if not found:
        raise MaglicaError('/etc/shadow in the guest has no root entry to set the password on')
    return '\n'.join(lines) + '\n'


def interface_name(guest, settings, candidates):
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
    return '# Written by maglica for %s\n' % settings.hostname + cloudinit.dump({'network': netplan_config(settings, device)})


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
    return cloudinit.dump(data)


def keyfile_device(text: str) -> Tuple[Optional[str], Optional[str]]:
    """(interface-name, type) of a NetworkManager keyfile."""
    name = re.search(r'^\s*interface-name\s*=\s*(\S+)\s*$', text, re.M)
    kind = re.search(r'^\s*type\s*=\s*(\S+)\s*$', text, re.M)
    return (name.group(1) if name else None), (kind.group(1) if kind else None)


def new_keyfile(device: str) -> str:
    return ('[connection]\nid=%s\nuuid=%s\ntype=ethernet\ninterface-name=%s\nautoconnect=true\n\n[ethernet]\n\n'
            '[ipv4]\n\n[ipv6]\nmethod=auto\n' % (device, uuid.uuid4(), device))


def network_stacks(guest: Guest) -> Dict[str, Any]:
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
                guest.write(path, ifcfg(guest.read(path), settings))
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


def customize_host_keys(guest: Guest, settings: GuestSettings, notes: List[str]) -> List[str]:
    """New SSH host keys of every type the image had (rsa, ecdsa, ed25519 when it has sshd but none), written
    over the old ones with their mode and owner. Returns the public key lines."""
    present: Dict[str, str] = {}
    for path in guest.glob(SSH_DIR + '/ssh_host_*_key'):
        match = HOST_KEY_RE.fullmatch(path)
        if match:
            present[match.group(1)] = path
    has_sshd = any(guest.g.is_file(p, followsymlinks=True) for p in SSHD_PATHS)
    types = sorted(present) or (list(hostkeys.DEFAULT_TYPES) if has_sshd else [])
    # Everything else of the image's host identity goes: certificates for its old keys, SSH1 keys, strays.
    keep = {'/etc/ssh/ssh_host_%s_key%s' % (t, suffix) for t in types for suffix in ('', '.pub')}
    for path in guest.g.glob_expand(SSH_DIR + '/*_host_*'):
        if path not in keep:
            guest.remove(path)
    if not types:
        notes.append('no sshd and no SSH host keys in the image: no host keys made')
        return []
    group = ssh_keys_group(guest)
    keys: List[hostkeys.HostKey] = []
    for key_type in types:
        try:
            keys.extend(hostkeys.generate([key_type], 'root@%s' % settings.hostname))
        except MaglicaError as e:
            if key_type in hostkeys.DEFAULT_TYPES:
                raise
            # e.g. dsa, which newer OpenSSH cannot make: the image's key must not stay, the others suffice.
            notes.append('no new %s host key (%s): the image\'s was removed' % (key_type, e))
            guest.remove(present[key_type])
            guest.remove(present[key_type] + '.pub')
    for key in keys:
        private = '/etc/ssh/ssh_host_%s_key' % key.type
        if guest.g.is_file(private, followsymlinks=False):
            mode, uid, gid = guest.stat(private)
        elif group is not None:
            mode, uid, gid = 0o640, 0, group  # as RHEL's sshd-keygen makes them
        else:
            mode, uid, gid = 0o600, 0, 0
        public = private + '.pub'
        pub_mode, pub_uid, pub_gid = guest.stat(public) if guest.g.is_file(public, followsymlinks=False) else (0o644, uid, gid)
        guest.g.mkdir_p(SSH_DIR)
        guest.write(private, key.private, mode=mode, owner=(uid, gid))
        guest.write(public, key.public + '\n', mode=pub_mode, owner=(pub_uid, pub_gid))
    return [key.public for key in keys]


def ssh_keys_group(guest: Guest) -> Optional[int]:
    """The gid of the group `ssh_keys` (RHEL's host key group), or None."""
    for line in (guest.read('/etc/group') or '').splitlines():
        fields = line.split(':')
        if len(fields) > 2 and fields[0] == 'ssh_keys' and fields[2].isdigit():
            return int(fields[2])
    return None


def reset_machine_state(guest: Guest) -> None:
    """What must differ per machine and is made anew when missing or empty (virt-sysprep's list, for a clone)."""
    guest.empty('/etc/udev/rules.d/70-persistent-net.rules')
    # Empty, not removed: systemd makes a new machine-id at first boot (and runs its first-boot units).
    guest.empty('/etc/machine-id')
    if guest.g.is_file('/var/lib/dbus/machine-id', followsymlinks=False):  # a symlink to /etc/machine-id stays
        guest.remove('/var/lib/dbus/machine-id')
    for pattern in MACHINE_STATE_GLOBS:
        for path in guest.glob(pattern):
            guest.remove(path)
    # The image's seed is every clone's: each gets its own, which systemd-random-seed feeds to the kernel at boot.
    if guest.g.is_dir('/var/lib/systemd'):
        guest.write(RANDOM_SEED, os.urandom(RANDOM_SEED_BYTES), mode=0o600, owner=(0, 0))
    if guest.g.is_file(URANDOM_SEED, followsymlinks=False):
        guest.write(URANDOM_SEED, os.urandom(RANDOM_SEED_BYTES), mode=0o600)


def replace_hostname(text: str, old_hostname: str, settings: GuestSettings) -> str:
    """TEXT with the old name (long, then short) replaced by the new one (long, then short), whole words only."""
    old_short = old_hostname.split('.')[0]
    for old, new in ((old_hostname, settings.hostname), (old_short, settings.short)):
        if old and old not in GENERIC_HOSTNAMES:
            text = re.sub(r'(?<![\w.-])%s(?![\w-]|\.\w)' % re.escape(old), new.replace('\\', r'\\'), text)
    return text


def customize_common(guest: Guest, settings: GuestSettings, old_hostname: Optional[str]) -> None:
    guest.write('/etc/hostname', settings.hostname + '\n')
    guest.write('/etc/hosts', hosts_file(guest.read('/etc/hosts'), settings, old_hostname))
    if old_hostname:
        for path in HOSTNAME_FILES:
            text = guest.read(path)
            if text is not None:
                guest.write(path, replace_hostname(text, old_hostname, settings))
    reset_machine_state(guest)
    if settings.root_password_hash:
        # Written in place: the file keeps its mode (RHEL 0000, Debian 0640), owner and SELinux label.
        guest.write('/etc/shadow', shadow(guest.read('/etc/shadow'), settings.root_password_hash))
    if settings.ssh_authorized_keys:
        if not guest.g.is_dir('/root/.ssh'):
            guest.g.mkdir_p('/root/.ssh')
        guest.g.chmod(0o700, '/root/.ssh')
        before = guest.read('/root/.ssh/authorized_keys') or ''
        present = set(before.splitlines())
        added = [k.strip() for k in settings.ssh_authorized_keys if k.strip() not in present]
        if added:
            text = before + ('' if not before or before.endswith('\n') else '\n') + '\n'.join(added) + '\n'
            guest.write('/root/.ssh/authorized_keys', text, mode=0o600)


def has_cloud_init(guest: Guest) -> bool:
    return guest.g.is_file(CLOUD_INIT, followsymlinks=True) and not guest.exists(CLOUD_INIT_DISABLED)


def forget_cloud_init_instance(guest: Guest) -> None:
    """What `cloud-init clean` removes: the instance state and logs; the seed and the image's own scripts stay."""
    for name in ('instance', 'instances', 'data', 'sem', 'handlers'):
        guest.remove(posixpath.join(CLOUD_DIR, name))
    for path in guest.glob('/var/log/cloud-init*.log'):
        guest.remove(path)


def customize_cloud_init(guest: Guest, settings: GuestSettings, device: str) -> str:
    """A NoCloud seed with a fresh instance-id, after the image's instance state is gone. Returns the instance-id."""
    forget_cloud_init_instance(guest)
    instance_id = 'iid-maglica-%s' % uuid.uuid4().hex
    guest.g.mkdir_p(NOCLOUD_DIR)
    guest.write(NOCLOUD_DIR + '/meta-data', cloudinit.meta_data(settings, instance_id), mode=0o644, owner=(0, 0))
    guest.write(NOCLOUD_DIR + '/user-data', cloudinit.user_data(settings), mode=0o600, owner=(0, 0))
    guest.write(NOCLOUD_DIR + '/network-config', cloudinit.dump(netplan_config(settings, device)), mode=0o644, owner=(0, 0))
    return instance_id


def selinux_policy(guest: Guest) -> str | None:
    """The guest's SELinux policy type (`targeted`...) unless SELinux is disabled or absent."""
    text = guest.read(SELINUX_CONFIG)
    if text is None:
        return None
    values = {}
    for line in text.splitlines():
        key, sep, value = line.strip().partition('=')
        if sep and not key.startswith('#'):
            values[key.strip()] = value.strip().strip('"')
    if values.get('SELINUX', '').lower() == 'disabled':
        return None
    return values.get('SELINUXTYPE') or 'targeted'


def relabel(guest: Guest, notes: list[str]) -> str | None:
    """Give the files we wrote their SELinux labels: setfiles in the appliance when it has it, else /.autorelabel.

    Files rewritten in place keep their label; new ones (authorized_keys, keys, keyfiles) have none until labelled.
    Returns how: 'setfiles', 'autorelabel' or None (no SELinux, nothing written).
    """
    policy = selinux_policy(guest)
    if policy is None or not guest.changed:
        return None
    specfile = '/etc/selinux/%s/contexts/files/file_contexts' % policy
    if guest.g.feature_available(['selinuxrelabel']) and guest.g.is_file(specfile):
        for path in list(guest.changed):
            guest.g.selinux_relabel(specfile, path, force=True)
        return 'setfiles'
    guest.write(AUTORELABEL, '')
    notes.append('SELinux (%s): this libguestfs appliance cannot label files (no setfiles); %s makes the guest '
                 'relabel itself at its first boot' % (policy, AUTORELABEL))
    return 'autorelabel'


DEVICE_RE = re.compile(r'(/dev/[sv]d[a-z]+)(\d*)')


def launch(drives):
    """One appliance with every drive [(path, format)] attached, read-write."""
    guestfs = deps.load('guestfs')
    g = guestfs.GuestFS(python_return_dict=True)
    try:
        for path, fmt in drives:
            g.add_drive_opts(path, format=fmt or 'raw', readonly=False)
        g.launch()
    except RuntimeError as e:
        g.close()
        raise MaglicaError('libguestfs could not open %s: %s' % (', '.join(path for path, _format in drives), e))
    except BaseException:
        g.close()
        raise
    return g


def relative(devices, device, first):
    """A device as [disk index counted from the guest's first drive, partition suffix], or None (LVM, mapper)."""
    match = DEVICE_RE.fullmatch(device)
    if not match or match.group(1) not in devices:
        return None
    return [devices.index(match.group(1)) - first, match.group(2)]


def inspect(g, first=0, count=None):
    """Inspect the guest on drives first..first+count-1 of `g`.

    Returns its layout: distro, version, hostname and mountpoints as relative devices, so
    that it can be reused for any clone of the same image (inspection is the slow part).
    `batchable` is False when a device cannot be named relative to the guest's drives.
    """
    devices = g.list_devices()
    count = len(devices) - first if count is None else count
    roots = [r for r in g.inspect_os() if (relative(devices, r, first) or [-1])[0] in range(count)]
    if not roots and count == len(devices):
        roots = g.inspect_os()
    if not roots:
        raise MaglicaError('libguestfs found no operating system on the clone disks')
    root = roots[0]
    mountpoints = g.inspect_get_mountpoints(root)
    layout = {
        'distro': g.inspect_get_distro(root),
        'major_version': g.inspect_get_major_version(root),
        'hostname': g.inspect_get_hostname(root),
        'mountpoints': {mp: relative(devices, dev, first) for mp, dev in mountpoints.items()},
    }
    layout['batchable'] = all(rel is not None and 0 <= rel[0] < count for rel in layout['mountpoints'].values())
    return layout, mountpoints


def absolute(g, layout, first):
    devices = g.list_devices()
    return {mp: devices[first + rel[0]] + rel[1] for mp, rel in layout['mountpoints'].items()}


def customize_mounted(g, mountpoints, layout, settings):
    """Mount one guest's filesystems, customise it, unmount. Returns what changed."""
    for mountpoint in sorted(mountpoints, key=len):
        g.mount(mountpoints[mountpoint], mountpoint)
    try:
        distro = layout['distro']
        old_hostname = layout['hostname']
        family = 'debian' if distro in DEBIAN_FAMILY else 'rhel' if distro in RHEL_FAMILY else 'unknown'
        guest = Guest(g)
        notes: List[str] = []
        cloud_init = has_cloud_init(guest)
        customize_common(guest, settings, old_hostname if old_hostname not in GENERIC_HOSTNAMES else None)
        public_keys = customize_host_keys(guest, settings, notes)
        device, stacks = customize_network(guest, settings, family, cloud_init, notes)
        instance_id = customize_cloud_init(guest, settings, device) if cloud_init else None
        relabel(guest, notes)
        g.sync()
    finally:
        g.umount_all()
    return {
        'os': {'distro': distro, 'family': family, 'major_version': layout['major_version'], 'previous_hostname': old_hostname},
        'network': {'device': device, 'configured_by': stacks},
        'cloud_init': {'instance_id': instance_id, 'seed': NOCLOUD_DIR} if cloud_init else None,
        'ssh_host_keys': public_keys,
        'changed_files': guest.changed,
        'removed_files': guest.removed,
        'diff': guest.diff,
        'notes': notes,
    }


def customize(disks, settings, layout=None):
    """Customise the guest on `disks` [(path, format)] per `settings`, in one appliance launch.

    With a `layout` from an earlier inspection of the same image, inspection is skipped.
    The result carries the layout (`layout` key) for reuse.
    """
    g = launch(disks)
    try:
        if layout is None:
            layout, mountpoints = inspect(g)
        else:
            mountpoints = absolute(g, layout, 0)
        result = customize_mounted(g, mountpoints, layout, settings)
        g.shutdown()
    except RuntimeError as e:
        raise MaglicaError('customising the guest failed: %s' % e)
    finally:
        g.close()
    result['layout'] = layout
    return result


def customize_batch(guests):
    """Customise several guests [(disks, settings, layout)] in ONE appliance launch.

    Every layout must be batchable (plain partitions: identical LVM names of clones
    of one image would clash in one appliance). Returns, per guest, its result or
    the MaglicaError it failed with; one guest's failure does not fail the others.
    """
    drives = [disk for disks, _settings, _layout in guests for disk in disks]
    g = launch(drives)
    results = []
    try:
        first = 0
        for disks, settings, layout in guests:
            try:
                results.append(customize_mounted(g, absolute(g, layout, first), layout, settings))
            except (RuntimeError, MaglicaError) as e:
                results.append(MaglicaError('customising the guest failed: %s' % e))
            first += len(disks)
        g.shutdown()
    finally:
        g.close()
    return results
