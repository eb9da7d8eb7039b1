# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Offline guest customisation with the libguestfs Python API: one appliance launch per clone.

Rewrites the hostname and network settings of the guest's distribution family,
and removes what must be unique per machine (persistent net rules, machine-id,
SSH host keys). Everything it changes is reported, with a diff of text files.
"""

from __future__ import annotations

import re

from . import deps
from .errors import MaglicaError

DEBIAN_FAMILY = ('debian', 'ubuntu', 'linuxmint', 'kalilinux')
RHEL_FAMILY = ('rhel', 'centos', 'fedora', 'rocky', 'almalinux', 'oraclelinux', 'scientificlinux', 'redhat-based', 'circle', 'eurolinux')
# Files whose content must never show up in a diff.
SECRET_FILES = ('/etc/shadow',)
NM_DIR = '/etc/NetworkManager/system-connections'
IFCFG_DIR = '/etc/sysconfig/network-scripts'
SELINUX_CONFIG = '/etc/selinux/config'
AUTORELABEL = '/.autorelabel'


class GuestSettings(object):
    """What to write into the guest, from a vm.clone job's args."""

    def __init__(self, hostname, network=None, root_password_hash=None, ssh_authorized_keys=None):
        self.hostname = hostname
        self.short = hostname.split('.')[0]
        self.network = network or {'mode': 'dhcp'}
        self.root_password_hash = root_password_hash
        self.ssh_authorized_keys = ssh_authorized_keys or []

    @property
    def static(self):
        return self.network.get('mode') == 'static'


class Guest(object):
    """An open guestfs handle on a guest's disks, mounted, recording every change."""

    def __init__(self, handle):
        self.g = handle
        self.changed = []
        self.removed = []
        self.diff = []

    def read(self, path):
        if not self.g.is_file(path, followsymlinks=True):
            return None
        return self.g.read_file(path).decode('utf-8', 'replace')

    def write(self, path, content, mode=None):
        before = self.read(path)
        if before == content:
            return False
        self.g.write(path, content.encode('utf-8'))
        if mode is not None:
            self.g.chmod(mode, path)
        self.changed.append(path)
        secret = path in SECRET_FILES
        self.diff.append({'before_header': path, 'after_header': path,
                          'before': '(secret content)\n' if secret and before is not None else before or '',
                          'after': '(secret content, changed)\n' if secret else content})
        return True

    def remove(self, path):
        if self.g.exists(path):
            self.g.rm_f(path)
            self.removed.append(path)
            self.diff.append({'before_header': path, 'after_header': '/dev/null', 'before': '(removed)\n', 'after': ''})

    def empty(self, path):
        """Truncate a file that exists and has content (machine-id, persistent net rules)."""
        if self.g.is_file(path, followsymlinks=False) and self.g.filesize(path) > 0:
            self.write(path, '')

    def glob(self, pattern):
        return [p for p in self.g.glob_expand(pattern) if self.g.is_file(p, followsymlinks=False)]


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


def debian_interfaces(before, settings, device):
    """/etc/network/interfaces with DEVICE's stanza replaced by ours (DHCP or static)."""
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
    stanza = ['', 'auto %s' % device]
    net = settings.network
    if settings.static:
        stanza.append('iface %s inet static' % device)
        stanza.append('    address %s/%d' % (net['address'], net.get('prefix', 24)))
        if net.get('gateway'):
            stanza.append('    gateway %s' % net['gateway'])
        if net.get('dns'):
            stanza.append('    dns-nameservers %s' % ' '.join(net['dns']))
        if net.get('domain'):
            stanza.append('    dns-search %s' % net['domain'])
    else:
        stanza.append('iface %s inet dhcp' % device)
        stanza.append('    hostname %s' % settings.short)
    return '\n'.join(out + stanza) + '\n'


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
        body = drop_keys(body, ('dhcp-hostname', 'address1', 'gateway', 'dns'))
        body = set_key(body, 'method', 'manual')
        gateway = ',%s' % net['gateway'] if net.get('gateway') else ''
        body = set_key(body, 'address1', '%s/%d%s' % (net['address'], net.get('prefix', 24), gateway))
        if net.get('dns'):
            body = set_key(body, 'dns', ';'.join(net['dns']) + ';')
    else:
        body = set_key(body, 'method', 'auto')
        body = set_key(body, 'dhcp-hostname', settings.hostname)
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


def customize_debian(guest, settings, notes):
    interfaces = guest.read('/etc/network/interfaces')
    if interfaces is not None:
        devices = re.findall(r'^iface\s+(\S+)\s+inet\s', interfaces, re.M)
        device = interface_name(guest, settings, devices)
        guest.write('/etc/network/interfaces', debian_interfaces(interfaces, settings, device))
    if guest.g.is_dir('/etc/dhcp') and not settings.static:
        guest.write('/etc/dhcp/dhclient.conf', dhclient_conf(guest.read('/etc/dhcp/dhclient.conf'), settings))
    netplans = guest.glob('/etc/netplan/*.yaml')
    if netplans:
        device = interface_name(guest, settings, [])
        guest.write('/etc/netplan/50-maglica.yaml', netplan(settings, device), mode=0o600)
    if interfaces is None and not netplans:
        notes.append('no /etc/network/interfaces or netplan found: network left as it is')


def netplan(settings, device):
    net = settings.network
    lines = ['# Written by maglica for %s' % settings.hostname, 'network:', '  version: 2', '  ethernets:', '    %s:' % device]
    if settings.static:
        lines.append('      addresses: [%s/%d]' % (net['address'], net.get('prefix', 24)))
        if net.get('gateway'):
            lines.append('      routes: [{to: default, via: %s}]' % net['gateway'])
        if net.get('dns'):
            lines.append('      nameservers: {addresses: [%s]}' % ', '.join(net['dns']))
    else:
        lines.append('      dhcp4: true')
        lines.append('      dhcp4-overrides: {hostname: %s}' % settings.hostname)
    return '\n'.join(lines) + '\n'


def customize_rhel(guest, settings, notes):
    network = guest.read('/etc/sysconfig/network')
    if network is not None:
        guest.write('/etc/sysconfig/network', set_key(network, 'HOSTNAME', settings.hostname))
    files = [p for p in guest.glob(IFCFG_DIR + '/ifcfg-*') if not p.endswith('ifcfg-lo')]
    for path in files:
        guest.write(path, ifcfg(guest.read(path), settings))
    keyfiles = guest.glob(NM_DIR + '/*.nmconnection')
    for path in keyfiles:
        guest.write(path, nm_keyfile(guest.read(path), settings), mode=0o600)
    if not files and not keyfiles:
        notes.append('no ifcfg file or NetworkManager keyfile found: network left as it is')


def customize_common(guest, settings, old_hostname):
    guest.write('/etc/hostname', settings.hostname + '\n')
    guest.write('/etc/hosts', hosts_file(guest.read('/etc/hosts'), settings, old_hostname))
    guest.empty('/etc/udev/rules.d/70-persistent-net.rules')
    guest.empty('/etc/machine-id')
    for path in guest.glob('/etc/ssh/ssh_host_*'):
        guest.remove(path)
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
        guest = Guest(g)
        notes = []
        customize_common(guest, settings, old_hostname if old_hostname != 'unknown' else None)
        if distro in DEBIAN_FAMILY:
            family = 'debian'
            customize_debian(guest, settings, notes)
        elif distro in RHEL_FAMILY:
            family = 'rhel'
            customize_rhel(guest, settings, notes)
        else:
            family = 'unknown'
            notes.append('distribution %s is not supported for network settings: only the hostname was set' % distro)
        relabel(guest, notes)
        g.sync()
    finally:
        g.umount_all()
    return {
        'os': {'distro': distro, 'family': family, 'major_version': layout['major_version'], 'previous_hostname': old_hostname},
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
