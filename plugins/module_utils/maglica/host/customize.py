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
import re
from typing import Dict, List, Optional, Sequence, Tuple, TypedDict, Union

from ..errors import MaglicaError
from . import ssh_host_keys
from .cloudinit import NOCLOUD_DIR, customize_cloud_init, has_cloud_init
from .guest import (
    CREDENTIAL_SECRET,
    HOST_KEY_RE,
    RANDOM_SEED,
    URANDOM_SEED,
    Guest,
    GuestFS,
    GuestSettings,
    Layout,
    absolute,
    inspect,
    launch,
)
from .guest_network import DEBIAN_FAMILY, RHEL_FAMILY, customize_network

SSH_DIR = '/etc/ssh'
SSHD_PATHS = ('/usr/sbin/sshd', '/sbin/sshd', '/usr/bin/sshd')
RANDOM_SEED_BYTES = 512  # what systemd-random-seed and virt-customize write
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

# A clone's disks as libguestfs opens them: [(path, format)].
Disks = Sequence[Tuple[str, Optional[str]]]


class OsFacts(TypedDict):
    distro: str
    family: str  # debian, rhel or unknown
    major_version: int
    previous_hostname: str


class NetworkFacts(TypedDict):
    device: str
    configured_by: List[str]


class CloudInitFacts(TypedDict):
    instance_id: str
    seed: str


class _Changes(TypedDict):
    os: OsFacts
    network: NetworkFacts
    cloud_init: Optional[CloudInitFacts]
    changed_files: List[str]
    removed_files: List[str]
    diff: List[Dict[str, str]]
    notes: List[str]


class Customization(_Changes, total=False):
    """What a clone's customisation changed: the clone's result carries it (`customization`)."""

    # Always there once customised; the clone job moves them to its result's own `ssh_host_keys`.
    ssh_host_keys: List[str]
    # The image's layout, from customize() for the layout cache (batching.py); never in a clone's result.
    layout: Layout


def hosts_file(before: Optional[str], settings: GuestSettings, old_hostname: Optional[str]) -> str:
    """/etc/hosts with the old name gone and a line for the new one."""
    address = settings.network['address'] if settings.static else '127.0.1.1'
    lines = []
    for line in (before or '').splitlines():
        fields = line.split('#')[0].split()
        names = fields[1:]
        if fields and (fields[0] in ('127.0.1.1', address) or old_hostname and (old_hostname in names or old_hostname.split('.')[0] in names)):
            continue
        lines.append(line)
    new_names = settings.hostname if settings.hostname == settings.short else '%s %s' % (settings.hostname, settings.short)
    if not any(l.split()[:1] == ['127.0.0.1'] for l in lines):
        lines.insert(0, '127.0.0.1\tlocalhost')
    lines.insert(1, '%s\t%s' % (address, new_names))
    return '\n'.join(lines) + '\n'


def shadow(before: Optional[str], password_hash: str) -> str:
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


def customize_host_keys(guest: Guest, settings: GuestSettings, notes: List[str]) -> List[str]:
    """New SSH host keys of every type the image had (rsa, ecdsa, ed25519 when it has sshd but none), written
    over the old ones with their mode and owner. Returns the public key lines."""
    present: Dict[str, str] = {}
    for path in guest.glob(SSH_DIR + '/ssh_host_*_key'):
        match = HOST_KEY_RE.fullmatch(path)
        if match:
            present[match.group(1)] = path
    has_sshd = any(guest.g.is_file(p, followsymlinks=True) for p in SSHD_PATHS)
    types = sorted(present) or (list(ssh_host_keys.DEFAULT_TYPES) if has_sshd else [])
    # Everything else of the image's host identity goes: certificates for its old keys, SSH1 keys, strays.
    keep = {'/etc/ssh/ssh_host_%s_key%s' % (t, suffix) for t in types for suffix in ('', '.pub')}
    for path in guest.g.glob_expand(SSH_DIR + '/*_host_*'):
        if path not in keep:
            guest.remove(path)
    if not types:
        notes.append('no sshd and no SSH host keys in the image: no host keys made')
        return []
    group = ssh_keys_group(guest)
    keys: List[ssh_host_keys.HostKey] = []
    for key_type in types:
        try:
            keys.extend(ssh_host_keys.generate([key_type], 'root@%s' % settings.hostname))
        except MaglicaError as e:
            if key_type in ssh_host_keys.DEFAULT_TYPES:
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


def selinux_policy(guest: Guest) -> str | None:
    """The guest's SELinux policy type (`targeted`...) unless SELinux is disabled or absent."""
    text = guest.read(SELINUX_CONFIG)
    if text is None:
        return None
    values: Dict[str, str] = {}
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


def customize_mounted(g: GuestFS, mountpoints: Dict[str, str], layout: Layout, settings: GuestSettings) -> Customization:
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
        cloud_init_facts: Optional[CloudInitFacts] = None
        if cloud_init:
            cloud_init_facts = {'instance_id': customize_cloud_init(guest, settings, device), 'seed': NOCLOUD_DIR}
        relabel(guest, notes)
        g.sync()
    finally:
        g.umount_all()
    return {
        'os': {'distro': distro, 'family': family, 'major_version': layout['major_version'], 'previous_hostname': old_hostname},
        'network': {'device': device, 'configured_by': stacks},
        'cloud_init': cloud_init_facts,
        'ssh_host_keys': public_keys,
        'changed_files': guest.changed,
        'removed_files': guest.removed,
        'diff': guest.diff,
        'notes': notes,
    }


def customize(disks: Disks, settings: GuestSettings, layout: Optional[Layout] = None) -> Customization:
    """Customise the guest on `disks` [(path, format)] per `settings`, in one appliance launch.

    With a `layout` from an earlier inspection of the same image, inspection is skipped.
    The result carries the layout (`layout` key) for reuse.
    """
    return customize_launched(launch(disks), settings, layout)


def customize_launched(g: GuestFS, settings: GuestSettings, layout: Optional[Layout] = None) -> Customization:
    """customize() in an appliance already launched on the guest's disks (and closed here): customize's own, or a
    spare's (spares.py)."""
    try:
        if layout is None or not layout['batchable']:
            # A layout whose devices are not named by drive (LVM) cannot skip inspection: absolute() cannot name them.
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


def customize_batch(guests: Sequence[Tuple[Disks, GuestSettings, Layout]]) -> List[Union[Customization, MaglicaError]]:
    """Customise several guests [(disks, settings, layout)] in ONE appliance launch.

    Every layout must be batchable (plain partitions: identical LVM names of clones
    of one image would clash in one appliance). Returns, per guest, its result or
    the MaglicaError it failed with; one guest's failure does not fail the others.
    """
    drives = [disk for disks, _settings, _layout in guests for disk in disks]
    g = launch(drives)
    results: List[Union[Customization, MaglicaError]] = []
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
