# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A guest's disks opened with libguestfs: one appliance launch, the guest's filesystems mounted, its files read and
written, and what each change did, secrets left out of the diff."""

from __future__ import annotations

import re
from typing import Any, Dict, List, Optional, Sequence, Tuple, TypedDict, Union

from .. import deps
from ..errors import MaglicaError

GuestFS = Any  # guestfs.GuestFS: python3-guestfs has no type stubs

NOCLOUD_DIR = '/var/lib/cloud/seed/nocloud'
HOST_KEY_RE = re.compile(r'/etc/ssh/ssh_host_([a-z0-9]+)_key')
RANDOM_SEED = '/var/lib/systemd/random-seed'
URANDOM_SEED = '/var/lib/urandom/random-seed'  # sysvinit's urandom script
CREDENTIAL_SECRET = '/var/lib/systemd/credential.secret'
NM_DIR = '/etc/NetworkManager/system-connections'

# Files whose content must never show up in a diff; see is_secret() for the SSH host keys.
SECRET_FILES = ('/etc/shadow', '/etc/gshadow', RANDOM_SEED, URANDOM_SEED, CREDENTIAL_SECRET, NOCLOUD_DIR + '/user-data')
# Secret values in NetworkManager keyfiles (Wi-Fi PSKs, 802.1x and VPN passwords), masked line by line.
NM_SECRET_RE = re.compile(r'^(\s*(?:psk|password|pin|wep-key\d|[\w-]*-password|[\w-]*secret[\w-]*)\s*=).*$', re.M | re.I)


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


class _NetworkMode(TypedDict):
    mode: str  # dhcp or static


class Network(_NetworkMode, total=False):
    """A vm.clone job's `network` argument (messages.NETWORK): a static address needs `address`."""

    device: str
    address: str
    prefix: int
    gateway: str
    dns: List[str]
    domain: str


# A mountpoint's device relative to the guest's drives: [disk index counted from its first drive, partition suffix]
# (a list, as the layout cache's JSON gives it back), or None when it cannot be named so (LVM, device mapper).
RelativeDevice = Optional[List[Union[int, str]]]


class Layout(TypedDict):
    """What inspection learnt of an image, kept for its later clones (batching.LayoutCache, a JSON file)."""

    distro: str
    major_version: int
    hostname: str
    mountpoints: Dict[str, RelativeDevice]
    # Every mountpoint names a device relative to the guest's own drives: it can share an appliance.
    batchable: bool


class GuestSettings:
    """What to write into the guest, from a vm.clone job's args."""

    def __init__(self, hostname: str, network: Optional[Network] = None, root_password_hash: Optional[str] = None,
                 ssh_authorized_keys: Optional[Sequence[str]] = None, cloud_init_user_data: Optional[str] = None) -> None:
        self.hostname = hostname
        self.short = hostname.split('.')[0]
        self.network: Network = network or {'mode': 'dhcp'}
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

    def __init__(self, handle: GuestFS) -> None:
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


def set_key(text: str, key: str, value: str, sep: str = '=', quote: str = '') -> str:
    """Set `key=value` in a shell-style or ini-style block of lines, replacing an existing assignment."""
    line = '%s%s%s%s%s' % (key, sep, quote, value, quote)
    pattern = re.compile(r'^\s*%s\s*%s.*$' % (re.escape(key), re.escape(sep)), re.M)
    if pattern.search(text):
        return pattern.sub(line.replace('\\', '\\\\'), text, count=1)
    return text + ('' if not text or text.endswith('\n') else '\n') + line + '\n'


def drop_keys(text: str, keys: Sequence[str]) -> str:
    return ''.join(line for line in text.splitlines(True)
                   if not re.match(r'^\s*(%s)\s*=' % '|'.join(re.escape(k) for k in keys), line))


DEVICE_RE = re.compile(r'(/dev/[sv]d[a-z]+)(\d*)')


def launch(drives: Sequence[Tuple[str, Optional[str]]], memsize_mib: Optional[int] = None) -> GuestFS:
    """One appliance with every drive [(path, format)] attached, read-write (with `memsize_mib` of memory, else
    libguestfs' default)."""
    guestfs = deps.load('guestfs')
    g = guestfs.GuestFS(python_return_dict=True)
    try:
        if memsize_mib:
            g.set_memsize(memsize_mib)
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


def relative(devices: List[str], device: str, first: int) -> RelativeDevice:
    """A device as [disk index counted from the guest's first drive, partition suffix], or None (LVM, mapper)."""
    match = DEVICE_RE.fullmatch(device)
    if not match or match.group(1) not in devices:
        return None
    return [devices.index(match.group(1)) - first, match.group(2)]


def inspect(g: GuestFS, first: int = 0, count: Optional[int] = None) -> Tuple[Layout, Dict[str, str]]:
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
    relatives = {mp: relative(devices, dev, first) for mp, dev in mountpoints.items()}
    layout: Layout = {
        'distro': g.inspect_get_distro(root),
        'major_version': g.inspect_get_major_version(root),
        'hostname': g.inspect_get_hostname(root),
        'mountpoints': relatives,
        'batchable': all(rel is not None and 0 <= int(rel[0]) < count for rel in relatives.values()),
    }
    return layout, mountpoints


def absolute(g: GuestFS, layout: Layout, first: int) -> Dict[str, str]:
    """The layout's mountpoints as devices of `g`, the guest's drives starting at drive `first`. Only for a batchable
    layout: every mountpoint has a relative device."""
    devices: List[str] = g.list_devices()
    mounts = {}
    for mp, rel in layout['mountpoints'].items():
        if rel is None:  # customize() inspects such a guest again
            raise MaglicaError('the layout names the device of %s by no drive of the guest (LVM?): it cannot be reused' % mp)
        mounts[mp] = devices[first + int(rel[0])] + str(rel[1])
    return mounts
