# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""An `image.import` job on the host worker: it streams the URL in chunks, hashes it as it goes, writes it sparse
(seeks over all-zero blocks) into a cache keyed by the checksum beside its storage pool, and renames it into the
cache only once verified. The image's disk is a copy of the cached file (or a qcow2 overlay on it), grown with
qemu-img resize - never the cache. Then it defines the inactive domain from XML made here, marked with the image
metadata (virt.IMAGE_METADATA_NS). Any failure removes what the job made: part files, the cache entry it fetched,
the disk, the domain.

Everything fetched is hostile until parsed: only qcow2 and raw images that name no other file (sniff_format,
image_info; qemu-img never probes, see pinned()), within the job's Limits (bytes, seconds, redirects, virtual size)
and, for file:// URLs, only regular files in the host worker's file_url_dirs.
"""

from __future__ import annotations

import errno
import hashlib
import http.client
import json
import os
import stat
import struct
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
import xml.etree.ElementTree as ET
from email.message import Message
from typing import (
    IO,
    Any,
    Callable,
    Dict,
    Iterable,
    Iterator,
    List,
    Optional,
    Tuple,
    TypedDict,
    cast,
)

from ..cluster import virt
from ..cluster.domains import disk_users, in_pool, lookup
from ..cluster.virt import Connect, Pool
from ..errors import ConflictError, HostError, MaglicaError, MessageError
from ..protocol import messages
from ..protocol.import_job import (
    BLOCK,
    CHUNK,
    DEFAULT_MAX_VIRTUAL_SIZE,
    ZERO_BLOCK,
    ZERO_CHUNK,
    Limits,
    job_limits,
)
from . import clone

CACHE_DIR = '.maglica-image-cache'
# The formats imported: qcow2 and raw, nothing else (the class of OpenStack's CVE-2022-47951 and
# OSSA-2024-001). VMDK, VDI, VHD(X), QED... can name other files of the host (extents, data files) that qemu-img
# would copy into the image; they are refused by name (sniff_format). A raw file must be whole sectors and at
# least MIN_RAW_BYTES (an HTML error page or a text file is neither).
IMAGE_FORMATS = ('qcow2', 'raw')
MIN_RAW_BYTES = 1024 * 1024
# Per read, and the longest a single read may overrun the overall deadline (max_download_time).
FETCH_TIMEOUT = 60
QEMU_IMG_TIMEOUT = 3600
Progress = Callable[[int, int], None]


class _ImportArgs(TypedDict):
    name: str
    checksum: str  # sha256:HEX


class ImportArgs(_ImportArgs, total=False):
    """An image.import job's args (messages.ACTIONS['image.import']): `url`, or `upload` (and its `origin`)."""

    url: str
    upload: str  # the file the library uploaded into the pool
    origin: str  # its path on the machine that uploaded it
    vcpus: int
    memory_mb: int
    disk_size: int
    network: str
    bridge: str
    firmware: str  # bios or uefi
    disk_mode: str  # copy or overlay
    keep_cache: bool  # copy: keep the cache entry the copy was made from
    domain_type: str  # kvm or qemu
    pool: str
    max_virtual_size: int
    max_download_size: int
    max_download_time: int
    redirect_schemes: List[str]


class _Fetched(TypedDict):
    bytes: int
    format: str
    virtual_size: int


class Fetched(_Fetched, total=False):
    """What is in the cache entry: fetched (or uploaded) now, or there already (a cache hit)."""

    created: bool  # this job made the entry (fetch_to_cache, adopt_upload): only then may it remove it
    cache_hit: bool


class _ImportResult(TypedDict):
    name: str


class ImportResult(_ImportResult, total=False):
    """An image.import job's result data: the image made, or one there already (reconciled, present)."""

    reconciled: bool  # made by this job before the host worker restarted
    present: bool  # made meanwhile by another job of the same image
    checksum: str
    url: str
    path: str
    cache: str
    cache_hit: bool
    cache_kept: bool  # whether the cache entry is still there (overlay, keep_cache, an entry made before)
    fetched_bytes: int
    format: str
    disk_mode: str
    capacity: int
    allocation: int


# -- what both sides check ----------------------------------------------------------------------

# -- the host worker's side --------------------------------------------------------------------------

def write_sparse(chunks: Iterable[bytes], handle: IO[bytes], progress: Optional[Callable[[int], None]] = None) -> Tuple[int, str]:
    """Write `chunks` to the binary file `handle` from its start, seeking over all-zero BLOCKs (holes), hashing
    every byte. Returns (bytes, sha256 hex). The file is truncated to the length, so trailing zeros are a hole too."""
    digest = hashlib.sha256()
    position = 0
    for chunk in chunks:
        digest.update(chunk)
        if chunk == ZERO_CHUNK[:len(chunk)]:
            position += len(chunk)
        else:
            view = memoryview(chunk)
            start = 0
            while start < len(view):
                block = view[start:start + BLOCK]
                if block != ZERO_BLOCK[:len(block)]:
                    handle.seek(position + start)
                    handle.write(block)
                start += BLOCK
            position += len(chunk)
        if progress:
            progress(position)
    handle.truncate(position)
    handle.flush()
    return position, digest.hexdigest()


class _Redirects(urllib.request.HTTPRedirectHandler):
    """Follows a redirect only to a URL of an allowed scheme that a job could name itself (messages.fetch_url)."""

    def __init__(self, schemes: Tuple[str, ...]) -> None:
        self.schemes = schemes

    def http_error_302(self, req: urllib.request.Request, fp: IO[bytes], code: int, msg: str,
                       headers: http.client.HTTPMessage) -> Optional[IO[bytes]]:
        location = headers.get('location') or headers.get('uri')
        if location:  # checked before the standard library's own check, so every refusal says the same
            self.check(req, fp, code, urllib.parse.urljoin(req.full_url, location))
        return super().http_error_302(req, fp, code, msg, headers)

    http_error_301 = http_error_303 = http_error_307 = http_error_308 = http_error_302

    def check(self, req: urllib.request.Request, fp: IO[bytes], code: int, newurl: str) -> None:
        scheme = urllib.parse.urlsplit(newurl).scheme.lower()
        problem = None
        if scheme not in self.schemes:
            problem = 'only redirects to %s are followed (redirect_schemes)' % ', '.join('%s://' % s for s in self.schemes)
        else:
            try:
                messages.fetch_url('the redirect', newurl)
            except MessageError as e:
                problem = str(e)
        if problem:
            fp.close()
            raise MaglicaError('fetching %s: the server redirected (HTTP %d) to %s; refused: %s'
                               % (req.full_url[:300], code, newurl[:300], problem))


def content_length(headers: Message, url: str) -> int:
    """The body's length from Content-Length: 0 when absent; a value that is not one byte count is refused."""
    values = set(v.strip() for v in (headers.get_all('Content-Length') or []))
    if not values:
        return 0
    value = values.pop()
    if values or not value.isdigit() or not value.isascii() or len(value) > 19:
        raise HostError('fetching %s: the server sent a bad Content-Length (%r): not one byte count'
                        % (url, ', '.join(sorted(values | {value}))[:80]))
    return int(value)


def open_url(url: str, limits: Limits = Limits()) -> Tuple[Any, int]:
    """Open `url` for reading: (stream, total bytes or 0 when unknown). Errors say what and where.

    http(s): redirects only to limits.redirect_schemes; a Content-Length over max_download_size is refused before
    a byte is read. file://: only regular files inside limits.file_dirs (open_local_file)."""
    if urllib.parse.urlsplit(url).scheme.lower() == 'file':
        return open_local_file(url, limits.file_dirs)
    # Only the http(s) handlers: no file://, ftp:// or data: even where a redirect could lead.
    opener = urllib.request.OpenerDirector()
    for handler in (urllib.request.ProxyHandler(), urllib.request.HTTPHandler(), urllib.request.HTTPSHandler(),
                    urllib.request.HTTPDefaultErrorHandler(), urllib.request.HTTPErrorProcessor(),
                    _Redirects(limits.redirect_schemes)):
        opener.add_handler(handler)
    try:
        # The standard library's opener (schemes checked by check_url): this library imports nothing from Ansible.
        response = opener.open(url, timeout=min(FETCH_TIMEOUT, limits.max_download_time))
    except urllib.error.HTTPError as e:
        raise HostError('fetching %s failed: HTTP %d %s' % (url, e.code, e.reason))
    except urllib.error.URLError as e:
        reason = getattr(e.reason, 'strerror', None) or str(e.reason)
        raise HostError('cannot fetch %s: %s' % (url, reason))
    except (OSError, http.client.HTTPException) as e:
        raise HostError('cannot fetch %s: %s' % (url, getattr(e, 'strerror', None) or e))
    try:
        total = content_length(response.headers, url)
        if total > limits.max_download_size:
            raise HostError('fetching %s: the server announces %d bytes (Content-Length), over max_download_size %d'
                            % (url, total, limits.max_download_size))
    except BaseException:
        response.close()
        raise
    return response, total


def open_local_file(url: str, file_dirs: Iterable[str]) -> Tuple[Any, int]:
    """A file:// URL's file, opened for reading: only a regular file whose real path (symbolic links resolved)
    lies inside one of `file_dirs`, the host worker's host_worker.file_url_dirs (none by default). A refusal says
    nothing of the file itself - not whether it exists, nor anything of its content."""
    path = urllib.parse.unquote(urllib.parse.urlsplit(url).path)
    dirs = [os.path.realpath(d) for d in file_dirs]
    refused = HostError('%s is refused: file:// URLs may name only regular files inside %s (host_worker.file_url_dirs '
                        'of this host worker; symbolic links out of them are refused too)'
                        % (url, ', '.join(dirs) if dirs else 'no directory: none is allowed on this host'))

    def inside(real: str) -> bool:
        return any(real != d and real.startswith(d.rstrip('/') + '/') for d in dirs)

    if '\0' in path:
        raise refused
    real = os.path.realpath(path)
    if not dirs or not inside(real):
        raise refused
    try:
        # O_NONBLOCK: a FIFO does not hold the open; O_NOFOLLOW: the last component swapped for a link since.
        fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise refused
        raise HostError('cannot open %s: %s' % (url, e.strerror or e))
    try:
        st = os.fstat(fd)
        # What was opened, as the kernel names it: a directory swapped for a link on the way is caught here.
        opened = os.readlink('/proc/self/fd/%d' % fd)
        if not stat.S_ISREG(st.st_mode) or not inside(opened):
            raise refused
        os.set_blocking(fd, True)
        return os.fdopen(fd, 'rb'), st.st_size
    except BaseException:
        os.close(fd)
        raise


def read_chunks(stream: IO[bytes], url: str, limits: Limits = Limits(), deadline: Optional[float] = None) -> Iterator[bytes]:
    """The stream's bytes in chunks, stopped with an error past max_download_size bytes or past the deadline
    (time.monotonic(); a read waits at most FETCH_TIMEOUT, so the deadline is overrun by that at most)."""
    read = getattr(stream, 'read1', stream.read)  # what has come, not a whole CHUNK: a slow drip meets the deadline
    if deadline is None:
        deadline = time.monotonic() + limits.max_download_time
    done = 0
    while True:
        if time.monotonic() > deadline:
            raise HostError('fetching %s did not finish within max_download_time %gs (%d bytes read)'
                            % (url, limits.max_download_time, done))
        try:
            chunk = read(CHUNK)
        except (OSError, http.client.HTTPException) as e:
            why = 'timed out' if isinstance(e, TimeoutError) else getattr(e, 'strerror', None) or e.__class__.__name__
            raise HostError('reading %s failed: %s' % (url, why))
        if not chunk:
            return
        done += len(chunk)
        if done > limits.max_download_size:
            raise HostError('fetching %s: more than max_download_size %d bytes; refused' % (url, limits.max_download_size))
        yield chunk


def qemu_img(*args: str) -> str:
    try:
        proc = subprocess.run(['qemu-img'] + list(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              universal_newlines=True, timeout=QEMU_IMG_TIMEOUT, check=False)
    except FileNotFoundError:
        raise HostError('qemu-img is not installed on this host')
    except subprocess.TimeoutExpired:
        raise HostError('qemu-img %s did not finish within %ds' % (args[0], QEMU_IMG_TIMEOUT))
    if proc.returncode != 0:
        raise HostError('qemu-img %s failed: %s' % (args[0], proc.stderr.strip()[-500:]))
    return proc.stdout


# How qemu-img opens an image it did not make: never by probing. sniff_format decides the format here, from the
# file's own header, and every qemu-img call on that file names it as
#     json:{"driver": "qcow2"|"raw", "file": {"driver": "file", "filename": PATH}, "backing": null}
# the format driver pinned over the file driver on PATH, with no backing file. So no name written inside the image
# (a backing file, a json: name) is ever opened; a qcow2 external data file - the one child qcow2 opens by a name of
# its own, which `backing: null` cannot switch off - is refused from the header before qemu-img reads the file, and
# again from qemu-img info. Formats whose files name other files (VMDK extents...) never reach qemu-img: refused.
# A file sniff_format does not know is raw, and qemu reads it as bytes, whatever they look like.
# Not chosen: an unprivileged user for qemu-img (nobody still reads /etc/passwd and other world-readable files,
# and the pool's files would need other owners), and -U on a copy (a copy does not stop qemu opening other files).
def pinned(path: str, fmt: str) -> str:
    """qemu's name of `path` opened as `fmt` only (qcow2 or raw), over the file driver, without a backing file."""
    if fmt not in IMAGE_FORMATS:
        raise MaglicaError('%s is not a format images are imported in (%s)' % (fmt, ', '.join(IMAGE_FORMATS)))
    spec: Dict[str, Any] = {'driver': fmt, 'file': {'driver': 'file', 'filename': os.path.abspath(path)}}
    if fmt == 'qcow2':
        spec['backing'] = None
    return 'json:' + json.dumps(spec, separators=(',', ':'))


# Formats recognised by their magic, to refuse them by name: (offset, magic, name).
OTHER_FORMATS = (
    (0, b'KDMV', 'vmdk'), (0, b'COWD', 'vmdk'), (0, b'QED\x00', 'qed'), (0, b'vhdxfile', 'vhdx'),
    (0, b'conectix', 'vpc (VHD)'), (0x40, b'\x7f\x10\xda\xbe', 'vdi'), (0, b'WithoutFreeSpace', 'parallels'),
    (0, b'WithouFreSpacExt', 'parallels'), (0, b'Bochs Virtual HD Image', 'bochs'), (0, b'LUKS\xba\xbe', 'luks'),
    (0, b'#!/bin/sh\n#V2.0 Format', 'cloop'),
)
QCOW2_MAGIC = b'QFI\xfb'
# qcow2 incompatible feature bits: dirty, corrupt, external data file, compression type, extended L2 entries.
QCOW2_DIRTY, QCOW2_CORRUPT, QCOW2_DATA_FILE, QCOW2_COMPRESSION, QCOW2_EXTENDED_L2 = 1, 2, 4, 8, 16
QCOW2_KNOWN_INCOMPATIBLE = QCOW2_DIRTY | QCOW2_CORRUPT | QCOW2_DATA_FILE | QCOW2_COMPRESSION | QCOW2_EXTENDED_L2


def sniff_format(path: str, url: str) -> str:
    """The format of a fetched file, from its header: 'qcow2' or 'raw'. Other disk formats, and qcow2 images that
    would open another file (a backing file, an external data file) or that qemu could not read safely, are refused
    naming the problem. Nothing of the file's content is quoted."""
    with open(path, 'rb') as handle:
        head = handle.read(4096)
    if head.startswith(QCOW2_MAGIC):
        version, backing_offset, backing_size = struct.unpack('>IQI', head[4:20])
        crypt_method = struct.unpack('>I', head[32:36])[0]
        if version not in (2, 3):
            raise MaglicaError('%s is a qcow image of version %d: only qcow2 (versions 2 and 3) and raw images are '
                               'imported' % (url, version))
        if backing_offset or backing_size:
            raise MaglicaError('%s is a qcow2 image with a backing file: only self-contained images are imported' % url)
        if crypt_method:
            raise MaglicaError('%s is an encrypted qcow2 image: only unencrypted images are imported' % url)
        incompatible = struct.unpack('>Q', head[72:80])[0] if version == 3 else 0
        if incompatible & QCOW2_DATA_FILE:
            raise MaglicaError('%s is a qcow2 image with an external data file (a file of the host it names): only '
                               'self-contained images are imported' % url)
        if incompatible & QCOW2_CORRUPT:
            raise MaglicaError('%s is a qcow2 image marked corrupt' % url)
        if incompatible & ~QCOW2_KNOWN_INCOMPATIBLE:
            raise MaglicaError('%s is a qcow2 image with unknown incompatible features (%#x)' % (url, incompatible))
        return 'qcow2'
    if head.startswith(b'QFI'):
        raise MaglicaError('%s is a qcow image of an unknown kind: only qcow2 and raw images are imported' % url)
    for offset, magic, name in OTHER_FORMATS:
        if head[offset:offset + len(magic)] == magic:
            raise MaglicaError('%s is a %s image: only qcow2 and raw images are imported (convert it to qcow2 '
                               'with qemu-img convert first)' % (url, name))
    if b'# Disk DescriptorFile' in head[:1024] or b'createType=' in head[:1024]:
        raise MaglicaError('%s is a VMDK descriptor (its extents name other files of the host): only qcow2 and raw '
                           'images are imported' % url)
    return 'raw'


def _strings(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield str(key)
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def image_info(path: str, url: str, max_virtual_size: int = DEFAULT_MAX_VIRTUAL_SIZE) -> Dict[str, Any]:
    """What a fetched file is: its format (sniff_format) and qemu-img info of it opened in that format only.
    Refuses what is not a qcow2 or raw disk image, any image that names another file (a backing file, an external
    data file, any child but its own file, a json: name), and a virtual size over `max_virtual_size`."""
    fmt = sniff_format(path, url)
    try:
        info = json.loads(qemu_img('info', '--output=json', pinned(path, fmt)))
    except HostError as e:
        raise MaglicaError('%s is not a disk image: %s' % (url, e))
    except ValueError:
        raise MaglicaError('%s: qemu-img info gave no JSON' % url)
    size = os.path.getsize(path)
    if not isinstance(info, dict) or info.get('format') != fmt:
        raise MaglicaError('%s: qemu-img info reads a %s image as %s' % (url, fmt, info.get('format') if isinstance(info, dict) else '?'))
    if fmt == 'raw' and (size % 512 or size < MIN_RAW_BYTES):
        raise MaglicaError('%s is not a disk image: it has no image format (qcow2), and qemu-img info reads it as raw '
                           'data of %d bytes, not whole 512-byte sectors of at least %d' % (url, size, MIN_RAW_BYTES))
    specific = (info.get('format-specific') or {}).get('data') or {}
    children = [child.get('name') for child in info.get('children') or [] if isinstance(child, dict)]
    problem = None
    if any(info.get(key) for key in ('backing-filename', 'full-backing-filename', 'backing-filename-format')):
        problem = 'a backing file'
    elif specific.get('data-file') or specific.get('data-file-raw'):
        problem = 'an external data file (a file of the host it names)'
    elif specific.get('encrypt'):
        problem = 'encryption'
    elif any(name != 'file' for name in children):
        problem = 'a child node other than its own file (%s)' % ', '.join(str(n)[:40] for n in children)
    elif any(text.startswith('json:') for text in _strings(info)):
        problem = 'a json: file name'
    if problem:
        raise MaglicaError('%s is a %s image with %s: only self-contained images are imported' % (url, fmt, problem))
    virtual = info.get('virtual-size')
    if not isinstance(virtual, int) or isinstance(virtual, bool) or virtual <= 0:
        raise MaglicaError('%s: qemu-img info gives no virtual size' % url)
    if virtual > max_virtual_size:
        raise MaglicaError('%s is a %s image of virtual size %d bytes, over max_virtual_size %d'
                           % (url, fmt, virtual, max_virtual_size))
    return info


def free_bytes(directory: str) -> int:
    """Bytes an unprivileged writer may still use in `directory`'s file system."""
    st = os.statvfs(directory)
    return st.f_bavail * st.f_frsize


def check_room_for_copy(source: str, fmt: str, directory: str, what: str) -> int:
    """Refuse a copy (qemu-img convert to qcow2) of `source` that would not fit in `directory` now: qemu-img measure
    counts what the copy writes (a compressed qcow2 expands here). Returns the bytes needed."""
    try:
        measured = json.loads(qemu_img('measure', '--output=json', '-O', 'qcow2', pinned(source, fmt)))
        need = int(measured['required'])
    except (ValueError, KeyError, TypeError):
        raise HostError('qemu-img measure of %s gave no size' % what)
    free = free_bytes(directory)
    if need > free:
        raise HostError('no room for the copy of %s in %s: it needs %d bytes, %d are free' % (what, directory, need, free))
    return need


def domain_xml(name: str, disk_path: str, args: ImportArgs, domain_uuid: str) -> str:
    """The original image's definition: virtio disk and NIC, serial console logged to a file, guest agent
    channel, VNC on localhost; bios or uefi firmware. Clones copy it (and rename the console log)."""
    kind = args.get('domain_type') or 'kvm'
    domain = ET.Element('domain', type=kind)
    ET.SubElement(domain, 'name').text = name
    ET.SubElement(domain, 'uuid').text = domain_uuid
    ET.SubElement(domain, 'memory', unit='MiB').text = str(args.get('memory_mb') or 1024)
    ET.SubElement(domain, 'vcpu').text = str(args.get('vcpus') or 1)
    os_element = ET.SubElement(domain, 'os')
    if (args.get('firmware') or 'bios') == 'uefi':
        os_element.set('firmware', 'efi')
        ET.SubElement(os_element, 'type', arch='x86_64', machine='q35').text = 'hvm'
    else:
        ET.SubElement(os_element, 'type', arch='x86_64', machine='pc').text = 'hvm'
    ET.SubElement(os_element, 'boot', dev='hd')
    features = ET.SubElement(domain, 'features')
    ET.SubElement(features, 'acpi')
    if kind == 'qemu':
        # Software emulation: a bounded translation cache keeps each guest's memory in check.
        ET.SubElement(ET.SubElement(features, 'tcg'), 'tb-cache', unit='MiB').text = '128'
    devices = ET.SubElement(domain, 'devices')
    disk = ET.SubElement(devices, 'disk', type='file', device='disk')
    ET.SubElement(disk, 'driver', name='qemu', type='qcow2')
    ET.SubElement(disk, 'source', file=disk_path)
    ET.SubElement(disk, 'target', dev='vda', bus='virtio')
    if args.get('bridge'):
        iface = ET.SubElement(devices, 'interface', type='bridge')
        ET.SubElement(iface, 'source', bridge=args['bridge'])
    else:
        iface = ET.SubElement(devices, 'interface', type='network')
        ET.SubElement(iface, 'source', network=args.get('network') or 'default')
    ET.SubElement(iface, 'model', type='virtio')
    serial = ET.SubElement(devices, 'serial', type='pty')
    ET.SubElement(serial, 'log', file='/var/log/libvirt/qemu/%s-console.log' % name, append='off')
    ET.SubElement(serial, 'target', port='0')
    console = ET.SubElement(devices, 'console', type='pty')
    ET.SubElement(console, 'target', type='serial', port='0')
    channel = ET.SubElement(devices, 'channel', type='unix')
    ET.SubElement(channel, 'target', type='virtio', name='org.qemu.guest_agent.0')
    ET.SubElement(devices, 'graphics', type='vnc', port='-1', autoport='yes', listen='127.0.0.1')
    return ET.tostring(domain, encoding='unicode')


def _pool(conn: Connect, name: str) -> Tuple[Pool, str]:
    lv = virt.libvirt()
    try:
        pool = conn.storagePoolLookupByName(name)
    except lv.libvirtError:
        raise HostError('no storage pool called %s' % name)
    directory = ET.fromstring(pool.XMLDesc(0)).findtext('./target/path')
    if not directory:
        raise HostError('the storage pool %s has no directory' % name)
    return pool, directory


def _remove(path: Optional[str]) -> None:
    if path:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


def _no_space(error: OSError) -> bool:
    return error.errno in (errno.ENOSPC, errno.EDQUOT)


def fetch_to_cache(url: str, checksum: str, cache_file: str, part: str, progress: Optional[Progress] = None,
                   limits: Limits = Limits()) -> Fetched:
    """Fetch `url` into `part` (fetch_verified), make it read-only and rename it to `cache_file`."""
    fetched, _info = fetch_verified(url, checksum, part, progress, limits, then=lambda: os.chmod(part, 0o444))
    try:
        fetched['created'] = settle(part, cache_file)
    except BaseException:
        _remove(part)
        raise
    return fetched


def fetch_verified(url: str, checksum: str, part: str, progress: Optional[Progress] = None, limits: Limits = Limits(),
                   then: Callable[[], Any] = lambda: None) -> Tuple[Fetched, Dict[str, Any]]:
    """Fetch `url` into `part` (sparse, hashed) and check it (checksum, image_info); `then` runs once it is checked.
    Returns what was fetched and qemu-img's info of it. `part` is removed on any failure; the caller records it
    before. Bounded by `limits` (bytes, seconds, redirects, file:// directories, the image's virtual size)."""
    expected = checksum.split(':', 1)[1]
    deadline = time.monotonic() + limits.max_download_time
    stream, total = open_url(url, limits)
    try:
        with open(part, 'wb') as handle:
            os.chmod(part, 0o600)
            size, actual = write_sparse(read_chunks(stream, url, limits, deadline), handle,
                                        (lambda done: progress(done, total)) if progress else None)
            os.fsync(handle.fileno())
        if actual != expected:
            raise MaglicaError('checksum mismatch for %s: expected sha256:%s, got sha256:%s (%d bytes fetched)'
                               % (url, expected, actual, size))
        info = image_info(part, url, limits.max_virtual_size)
        then()
    except OSError as e:
        _remove(part)
        if _no_space(e):
            raise HostError('no space left for %s in %s: %s' % (url, os.path.dirname(part), e.strerror))
        raise HostError('writing %s to %s failed: %s' % (url, part, e.strerror or e))
    except BaseException:
        _remove(part)
        raise
    finally:
        stream.close()
    return {'bytes': size, 'format': info['format'], 'virtual_size': info['virtual-size']}, info


def settle(part: str, cache_file: str) -> bool:
    """Give a verified file its cache name, unless a job fetching the same file at once got there first (then
    that entry stays and `part` goes). Returns whether this job made the entry: only then may it remove it."""
    try:
        os.link(part, cache_file)
        created = True
    except FileExistsError:
        created = False
    os.unlink(part)
    return created


def adopt_upload(uploaded: str, checksum: str, cache_file: str, label: str, progress: Optional[Progress] = None,
                 max_virtual_size: int = DEFAULT_MAX_VIRTUAL_SIZE) -> Fetched:
    """Check an uploaded file (checksum, qemu-img info) and rename it into the cache, read-only."""
    expected = checksum.split(':', 1)[1]
    digest = hashlib.sha256()
    size = os.path.getsize(uploaded)
    done = 0
    with open(uploaded, 'rb') as handle:
        for block in iter(lambda: handle.read(CHUNK), b''):
            digest.update(block)
            done += len(block)
            if progress:
                progress(done, size)
    if digest.hexdigest() != expected:
        raise MaglicaError('checksum mismatch for %s: expected sha256:%s, got sha256:%s (%d bytes uploaded)'
                           % (label, expected, digest.hexdigest(), size))
    info = image_info(uploaded, label, max_virtual_size)
    os.chmod(uploaded, 0o444)
    created = settle(uploaded, cache_file)
    return {'bytes': size, 'format': info['format'], 'virtual_size': info['virtual-size'], 'created': created}


def settle_disk(conn: Connect, name: str, host_name: str, part_disk: str, disk_path: str, ownership: clone.Ownership) -> None:
    """Give the finished disk its name - never over a file that is there (another job's, or a clone's disk of the same
    name): checked and linked under the lock every clone's disk-making takes, so nothing appears in between."""
    with clone.VOLUME_LOCK:
        if lookup(conn, name) is not None:
            raise ConflictError('%s was defined on %s while this job ran: this job did not make it' % (name, host_name))
        if os.path.lexists(disk_path) or in_pool(conn, disk_path):
            raise ConflictError('the volume %s already exists on %s' % (disk_path, host_name))
        ownership.intend_file(disk_path)
        try:
            os.link(part_disk, disk_path)  # unlike a rename, it fails on an existing file
        except FileExistsError:
            raise ConflictError('the volume %s already exists on %s' % (disk_path, host_name))
    os.unlink(part_disk)


def qcow2_backing(path: str) -> Optional[str]:
    """The backing file named in a qcow2 header (None: none, or not qcow2). Our own pool's files, read as bytes."""
    try:
        with open(path, 'rb') as handle:
            header = handle.read(20)
            if len(header) < 20 or header[:4] != b'QFI\xfb':
                return None
            offset, size = int.from_bytes(header[8:16], 'big'), int.from_bytes(header[16:20], 'big')
            if not offset or not 0 < size <= 1023:  # the qcow2 specification's limit
                return None
            handle.seek(offset)
            return handle.read(size).decode('utf-8', 'replace')
    except OSError:
        return None


def cache_users(conn: Connect, cache_file: str, pool_dir: str) -> List[str]:
    """What depends on a cache entry: domains whose disks it backs, and the pool's files backed by it (overlays of
    images being imported, not yet defined)."""
    users = list(disk_users(conn, [cache_file]).get(cache_file, []))
    try:
        entries = sorted(os.listdir(pool_dir))
    except OSError:
        entries = []
    for entry in entries:
        path = os.path.join(pool_dir, entry)
        if os.path.isfile(path) and qcow2_backing(path) in (cache_file, os.path.relpath(cache_file, pool_dir)):
            users.append(path)
    return users


def remove_own(conn: Connect, paths: List[str], cache_file: str, pool_dir: str) -> None:
    """Remove files this job made (rollback) or recorded (reconcile): never a disk a domain uses, and the cache entry
    only while nothing depends on it - under the lock an overlay on it is made under."""
    for path in paths:
        if path == cache_file:
            with clone.VOLUME_LOCK:
                if not cache_users(conn, cache_file, pool_dir):
                    _remove(path)
        elif not (os.path.lexists(path) and disk_users(conn, [path])):
            _remove(path)


def run_import(conn: Connect, host_name: str, job_id: str, args: ImportArgs, reconcile: bool = False,
               ownership: Optional[clone.Ownership] = None, progress: Optional[Progress] = None,
               file_dirs: Iterable[str] = ()) -> ImportResult:
    """The host worker's image.import: cache (fetching on a miss), the disk, the domain. Leaves nothing on failure.
    `file_dirs`: where file:// URLs may point (the host worker's host_worker.file_url_dirs)."""
    lv = virt.libvirt()
    limits = job_limits(cast(Dict[str, Any], args), file_dirs)  # an ImportArgs: job_limits reads its limits only
    ownership = ownership if ownership is not None else clone.Ownership()
    name, checksum = args['name'], args['checksum']
    # What the image was made from: the URL, or the uploaded file's path on the machine that uploaded it.
    url = args.get('url') or 'upload:%s' % (args.get('origin') or args['upload'])
    pool, pool_dir = _pool(conn, args.get('pool') or 'default')
    # A `path` import: the library uploaded the file into the pool; this job takes it into the cache or removes it.
    uploaded = os.path.join(pool_dir, args['upload']) if args.get('upload') else None
    cache_dir = os.path.join(pool_dir, CACHE_DIR)
    cache_file = os.path.join(cache_dir, '%s.img' % checksum.split(':', 1)[1])
    mode = args.get('disk_mode') or 'copy'
    # A copy needs its cache entry no longer: one this job made goes once the image is defined, unless kept.
    drop_cache = mode == 'copy' and not args.get('keep_cache', False)
    there = lookup(conn, name)
    if there is not None:
        if uploaded:
            _remove(uploaded)
            pool.refresh(0)
        if reconcile and ownership.owns_domain(there):
            if drop_cache and cache_file in ownership.files:  # the restart came between the define and the drop
                remove_own(conn, [cache_file], cache_file, pool_dir)
            return {'name': name, 'reconciled': True}
        if virt.image_metadata_of(ET.fromstring(there.XMLDesc(0))).get('checksum') == checksum and not there.isActive():
            return {'name': name, 'present': True}  # made meanwhile by another job of the same image
        raise ConflictError('%s is already defined on %s and this job did not make it' % (name, host_name))
    disk_path = os.path.join(pool_dir, '%s.qcow2' % name)
    part_disk = disk_path + '.part-' + job_id
    fetch_part = disk_path + '.fetch-' + job_id
    source, as_is = cache_file, False  # what the disk is made from; as_is: it becomes the disk, renamed
    part_cache = cache_file + '.part-' + job_id
    made: List[str] = []  # files this job made, removed on failure (the cache entry only if this job fetched it)
    dom = None
    if uploaded:
        ownership.intend_file(uploaded)
    if reconcile:  # a restarted job: what it recorded and left half done goes, then it starts over
        remove_own(conn, [path for path in sorted(ownership.files) if path != uploaded], cache_file, pool_dir)
    try:
        os.makedirs(cache_dir, mode=0o755, exist_ok=True)
        fetched: Fetched
        if os.path.exists(cache_file):
            info = image_info(cache_file, url, limits.max_virtual_size)
            fetched = {'bytes': 0, 'format': info['format'], 'virtual_size': info['virtual-size'], 'cache_hit': True}
        elif drop_cache and not uploaded:
            # A copy that keeps no cache entry: fetched beside the disk, never into the cache, where another job
            # could find it. A self-contained qcow2 with no snapshots of its own becomes the disk as it is.
            ownership.intend_file(fetch_part)
            made.append(fetch_part)
            fetched, info = fetch_verified(url, checksum, fetch_part, progress, limits)
            fetched['cache_hit'] = False
            source = fetch_part
            as_is = info['format'] == 'qcow2' and not info.get('snapshots')
        elif uploaded:
            fetched = adopt_upload(uploaded, checksum, cache_file, url, progress, limits.max_virtual_size)
            if fetched.pop('created'):  # recorded once made: a crash before leaves a verified entry, never a loss
                ownership.intend_file(cache_file)
                made.append(cache_file)
            fetched['cache_hit'] = False
        else:
            ownership.intend_file(part_cache)
            fetched = fetch_to_cache(url, checksum, cache_file, part_cache, progress, limits)
            if fetched.pop('created'):
                ownership.intend_file(cache_file)
                made.append(cache_file)
            fetched['cache_hit'] = False
        _remove(uploaded)  # a cache hit does not need it
        if os.path.exists(disk_path):
            raise ConflictError('the volume %s already exists on %s' % (disk_path, host_name))
        ownership.intend_file(part_disk)
        made.append(part_disk)
        virtual = int(fetched['virtual_size'])  # a copy or an overlay has the source's virtual size
        # The cache file's format is pinned (-F, or pinned()): never probed again. -u: the size is given, so
        # creating the overlay does not open the cache file at all.
        if mode == 'overlay':
            with clone.VOLUME_LOCK:  # never while a failed job of this host removes the cache entry (remove_own)
                if not os.path.exists(cache_file):
                    raise HostError('the cache entry %s went away before the overlay on it was made' % cache_file)
                qemu_img('create', '-q', '-f', 'qcow2', '-u', '-b', cache_file, '-F', fetched['format'], part_disk,
                         str(virtual))
        elif as_is:
            os.chmod(source, 0o600)
            os.rename(source, part_disk)
        else:
            check_room_for_copy(source, fetched['format'], pool_dir, url)
            qemu_img('convert', '-q', '-O', 'qcow2', pinned(source, fetched['format']), part_disk)
            if source == fetch_part:
                _remove(fetch_part)
        if args.get('disk_size'):
            if args['disk_size'] < virtual:
                raise MaglicaError('disk_size %d is smaller than the image (%d bytes): images are grown, never shrunk'
                                   % (args['disk_size'], virtual))
            if args['disk_size'] > virtual:
                qemu_img('resize', '-q', '-f', 'qcow2', part_disk, str(args['disk_size']))  # the copy or overlay, never the cache
                virtual = args['disk_size']
        settle_disk(conn, name, host_name, part_disk, disk_path, ownership)
        made.append(disk_path)
        pool.refresh(0)
        domain_uuid = str(uuid.uuid4())
        ownership.intend_domain(name, domain_uuid)
        try:
            dom = conn.defineXML(domain_xml(name, disk_path, args, domain_uuid))
            virt.set_image_metadata(dom, {'checksum': checksum, 'source': url, 'disk_mode': mode,
                                          'imported': time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())})
        except lv.libvirtError as e:
            raise HostError('cannot define %s on %s: %s' % (name, host_name, virt.error_text(e)))
    except BaseException as failure:
        _remove(uploaded)
        if dom is not None:
            try:
                dom.undefineFlags(getattr(lv, 'VIR_DOMAIN_UNDEFINE_NVRAM', 0))
            except lv.libvirtError:
                pass
        remove_own(conn, list(reversed(made)), cache_file, pool_dir)
        try:
            pool.refresh(0)
        except lv.libvirtError:
            pass
        if isinstance(failure, OSError):
            if _no_space(failure):
                raise HostError('no space left on %s for %s: %s' % (host_name, name, failure.strerror))
            raise HostError('importing %s on %s failed: %s' % (name, host_name, failure.strerror or failure))
        raise
    if drop_cache and cache_file in made:  # an entry there before this job (kept, or backing overlays) stays
        remove_own(conn, [cache_file], cache_file, pool_dir)
    allocation = os.stat(disk_path).st_blocks * 512
    return {'name': name, 'checksum': checksum, 'url': url, 'path': disk_path, 'cache': cache_file,
            'cache_hit': fetched['cache_hit'], 'cache_kept': os.path.exists(cache_file),
            'fetched_bytes': fetched['bytes'], 'format': fetched['format'],
            'disk_mode': mode, 'capacity': virtual, 'allocation': allocation}
