# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Getting images in: a cloud image (a URL) becomes an original image on the hosts chosen.

The controller side plans per target host (which have the image with the same checksum, which would fetch),
refuses bad input before anything is submitted, then submits one `image.import` job per host; the jobs run at
once and each host worker fetches the file itself. The host worker's side streams the URL in chunks, hashes
it as it goes, writes it sparse (seeks over all-zero blocks) into a cache keyed by the checksum beside its
storage pool, and renames it into the cache only once verified. The image's disk is a copy of the cached file
(or a qcow2 overlay on it), grown with qemu-img resize - never the cache. Then it defines the inactive domain
from XML made here, marked with the image metadata (virt.IMAGE_METADATA_NS). Any failure removes what the job
made: part files, the cache entry it fetched, the disk, the domain.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

from . import clone, images, messages, virt
from .client import Client
from .errors import ConflictError, HostError, JobFailed, MaglicaError, MessageError

CHUNK = 1024 * 1024
BLOCK = 4096
ZERO_BLOCK = bytes(BLOCK)
ZERO_CHUNK = bytes(CHUNK)
CACHE_DIR = '.maglica-image-cache'
DISK_MODES = messages.ACTIONS['image.import']['disk_mode'].choices
FIRMWARES = messages.ACTIONS['image.import']['firmware'].choices
DOMAIN_TYPES = messages.ACTIONS['image.import']['domain_type'].choices
# Formats qemu-img recognises that are disk images. Anything else it calls `raw`: accepted as a raw disk only
# when its size is whole sectors and at least MIN_RAW_BYTES (an HTML error page or a text file is neither).
IMAGE_FORMATS = ('qcow2', 'raw', 'vmdk', 'vdi', 'vhdx', 'vpc', 'qed')
MIN_RAW_BYTES = 1024 * 1024
FETCH_TIMEOUT = 60
QEMU_IMG_TIMEOUT = 3600
Progress = Callable[[int, int], None]


# -- what both sides check ----------------------------------------------------------------------

def parse_checksum(text: str) -> str:
    """`sha256:HEX` (or the 64 hex digits alone) -> 'sha256:hex'. Other algorithms are refused by name."""
    try:
        return messages.sha256_checksum('checksum', text)
    except MessageError as e:
        raise MaglicaError(str(e))


def check_url(where: str, value: str) -> None:
    """A URL a host worker may fetch: http, https or file:///path."""
    try:
        messages.fetch_url(where, value)
    except MessageError as e:
        raise MaglicaError(str(e))


# -- the controller's side ------------------------------------------------------------------------

def plan_import(config, name: str, checksum: str, targets: Optional[List[str]] = None) -> Dict[str, Any]:
    """Per target host: `present` (the image with this checksum is there) or `fetch`. Changes nothing.

    Refuses, before anything is submitted: a target that is not configured, a target that cannot be reached,
    and a name taken there by a VM or by an image made from something else.
    """
    names = config.target_names(targets)  # ConfigError naming the known hosts
    plan: Dict[str, Any] = {'present': [], 'fetch': [], 'targets': names}
    for answer in virt.survey(config, hosts=names):
        host = answer['host']
        if not answer['reachable']:
            raise HostError('target %s cannot be reached: %s' % (host, answer['error']))
        domain = next((d for d in answer['result'] or [] if d['name'] == name), None)
        if domain is None:
            plan['fetch'].append(host)
            continue
        if not virt.is_image(domain):
            raise ConflictError('%s is taken on %s by a VM (%s): choose another name for the image'
                                % (name, host, 'running' if domain['active'] else 'a clone of %s' % domain['clone_of']))
        made_from = (domain.get('image') or {}).get('checksum')
        if made_from != checksum:
            raise ConflictError('%s on %s is an image made from %s, not %s: remove it first or choose another name'
                                % (name, host, made_from or 'something else (not imported by maglica)', checksum))
        plan['present'].append(host)
    plan['present'].sort(key=names.index)
    plan['fetch'].sort(key=names.index)
    return plan


def job_args(name: str, checksum: str, url: Optional[str], settings: Dict[str, Any]) -> Dict[str, Any]:
    """The image.import job's arguments: settings without the unset ones."""
    args = {'name': name, 'checksum': checksum, 'url': url}
    args.update({k: v for k, v in settings.items() if v is not None})
    return {k: v for k, v in args.items() if v is not None}


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    try:
        with open(path, 'rb') as handle:
            for block in iter(lambda: handle.read(CHUNK), b''):
                digest.update(block)
    except OSError as e:
        raise MaglicaError('cannot read %s: %s' % (path, e.strerror or e))
    return 'sha256:' + digest.hexdigest()


def import_image(config, name: str, url: Optional[str], checksum: Optional[str], targets: Optional[List[str]] = None,
                 settings: Optional[Dict[str, Any]] = None, timeout: int = 3600, check_mode: bool = False,
                 progress: Optional[Callable[[Dict[str, Any]], None]] = None, path: Optional[str] = None) -> Dict[str, Any]:
    """Make the original image `name` from `url` on every target that lacks it; one job per host, run at once.
    With `path` instead of `url`: a local file, uploaded to each host through libvirt storage streams (sparse);
    its checksum is computed here (and must equal `checksum` when that is given).

    settings: vcpus, memory_mb, disk_size (bytes), network | bridge, firmware, disk_mode, domain_type.
    Returns {changed, name, checksum, present, fetch, jobs: {host: job}, imported: {host: data}}.
    """
    if (url is None) == (path is None):
        raise MaglicaError('give url or path (one of them)')
    if url is not None:
        if not checksum:
            raise MaglicaError('checksum is required with url (sha256:<64 hex digits>)')
        checksum = parse_checksum(checksum)
        check_url('url', url)
    else:
        if not os.path.isfile(path or ''):
            raise MaglicaError('path %s is not a file' % path)
        actual = file_sha256(path or '')
        if checksum and parse_checksum(checksum) != actual:
            raise MaglicaError('checksum mismatch for %s: expected %s, got %s' % (path, parse_checksum(checksum), actual))
        checksum = actual
    settings = dict(settings or {})
    if settings.get('network') and settings.get('bridge'):
        raise MaglicaError('give network or bridge, not both')
    plan = plan_import(config, name, checksum, targets)
    result: Dict[str, Any] = {'changed': bool(plan['fetch']), 'name': name, 'checksum': checksum, 'url': url, 'path': path,
                              'present': plan['present'], 'fetch': plan['fetch'], 'jobs': {}, 'imported': {}}
    if check_mode or not plan['fetch']:
        return result
    args = job_args(name, checksum, url, settings)
    jobs = []
    for host in plan['fetch']:
        job_id = messages.new_job_id()
        extra = {'upload': upload_volume_name(job_id), 'origin': os.path.abspath(path)[:2048]} if path else {}
        jobs.append(messages.validate_job({'id': job_id, 'host': host, 'action': 'image.import', 'args': dict(args, **extra),
                                           'ttl': max(1, int(timeout))}))
    if path:
        upload_all(config, path, jobs, settings.get('pool') or 'default')
    with Client(config) as client:
        waiting, refused = [], []
        for job in jobs:
            logged = client.submit(job)
            if logged['id'] != job['id']:  # the client worker holds the name for that job: this one is not logged
                if path:
                    _delete_upload(config, job, settings.get('pool') or 'default')  # no job of ours will take it
                if (logged['action'], logged['host']) != ('image.import', job['host']):
                    refused.append('%s is being made on %s by job %s (%s)' % (name, logged['host'], logged['id'], logged['action']))
                    continue
            # The import of this name on this host already under way (an earlier run that timed out) is this run's.
            waiting.append(logged['id'])
        if refused:
            others = ', '.join(waiting)
            raise ConflictError('%s: wait for it to end%s' % ('; '.join(refused), '; the jobs %s for the other hosts go on' % others
                                                              if others else ''))
        finished = wait_all(client, waiting, timeout, progress)
    failures = []
    for job in finished:
        result['jobs'][job['host']] = job
        if job['state'] == 'succeeded':
            result['imported'][job['host']] = job['data']
        else:
            failures.append('%s: %s' % (job['host'], job['message'] or job['state']))
    if failures:
        done = sorted(result['imported'])
        note = '; it was imported on %s' % ', '.join(done) if done else ''
        raise JobFailed('importing %s failed on %s%s' % (name, '; '.join(failures), note), {'jobs': result['jobs']})
    return result


def upload_volume_name(job_id: str) -> str:
    """The pool volume a `path` import uploads to; the job moves it into its cache (or removes it)."""
    return '.maglica-upload-%s' % job_id


def upload_all(config, path: str, jobs: List[Dict[str, Any]], pool_name: str) -> None:
    """Upload `path` to each job's host at once; on any failure, every volume uploaded is deleted again."""
    with ThreadPoolExecutor(max_workers=min(virt.MAX_PARALLEL, len(jobs))) as pool:
        outcomes = list(pool.map(lambda job: _upload_one(config, path, job, pool_name), jobs))
    failures = [str(error) for _job, error in outcomes if error is not None]
    if failures:
        for job, error in outcomes:
            if error is None:
                _delete_upload(config, job, pool_name)
        raise HostError('uploading %s failed: %s' % (path, '; '.join(failures)))


def _upload_one(config, path: str, job: Dict[str, Any], pool_name: str) -> Tuple[Dict[str, Any], Optional[Exception]]:
    try:
        upload(config, job['host'], path, job['args']['upload'], pool_name)
    except MaglicaError as e:
        return job, e
    return job, None


def _delete_upload(config, job: Dict[str, Any], pool_name: str) -> None:
    lv = virt.libvirt()
    try:
        with virt.Connection(config, config.host(job['host'])) as conn:
            conn.storagePoolLookupByName(pool_name).storageVolLookupByName(job['args']['upload']).delete(0)
    except (lv.libvirtError, MaglicaError):
        pass  # gone already, or the host went away: the host worker never saw a job for it


def upload(config, host_name: str, path: str, volume: str, pool_name: str = 'default') -> int:
    """Upload the local file `path` into a new volume of `host_name`'s pool through a libvirt storage stream,
    holes as holes (SEEK_DATA/SEEK_HOLE). Returns the bytes of data sent; the volume is deleted on failure."""
    lv = virt.libvirt()
    with virt.Connection(config, config.host(host_name)) as conn:
        try:
            pool = conn.storagePoolLookupByName(pool_name)
            vol = pool.createXML('<volume><name>%s</name><capacity>0</capacity><target><format type="raw"/></target>'
                                 '</volume>' % volume, 0)
        except lv.libvirtError as e:
            raise HostError('cannot make the upload volume on %s: %s' % (host_name, virt.error_text(e)))
        stream = conn.newStream(0)
        try:
            vol.upload(stream, 0, 0, lv.VIR_STORAGE_VOL_UPLOAD_SPARSE_STREAM)
            sent = send_sparse(stream, path)
            stream.finish()
        except BaseException as failure:
            try:
                stream.abort()
            except Exception:  # a finished or broken stream: the volume goes all the same
                pass
            try:
                vol.delete(0)
            except lv.libvirtError:
                pass
            if isinstance(failure, lv.libvirtError):
                raise HostError('uploading %s to %s failed: %s' % (path, host_name, virt.error_text(failure)))
            if isinstance(failure, OSError):
                raise HostError('uploading %s to %s failed: %s' % (path, host_name, failure.strerror or failure))
            raise
    return sent


def send_sparse(stream, path: str) -> int:
    """Send a file's data extents and holes down a sparse libvirt stream. Returns the bytes of data sent."""
    fd = os.open(path, os.O_RDONLY)
    sent = 0
    try:
        size = os.fstat(fd).st_size
        position = 0
        while position < size:
            try:
                data_at = os.lseek(fd, position, os.SEEK_DATA)
            except OSError as e:
                if e.errno != errno.ENXIO:
                    raise
                data_at = size  # only a hole is left
            if data_at > position:
                stream.sendHole(data_at - position, 0)
                position = data_at
                continue
            hole_at = os.lseek(fd, position, os.SEEK_HOLE)
            os.lseek(fd, position, os.SEEK_SET)
            while position < hole_at:
                data = os.read(fd, min(CHUNK, hole_at - position))
                if not data:
                    raise HostError('%s got shorter while it was uploaded' % path)
                images.send_all(stream, data, 'the upload stream')
                position += len(data)
                sent += len(data)
    finally:
        os.close(fd)
    return sent


def wait_all(client: Client, job_ids: List[str], timeout: float,
             progress: Optional[Callable[[Dict[str, Any]], None]] = None) -> List[Dict[str, Any]]:
    """Poll every job until each has ended or `timeout` passes; returns them in the given order."""
    deadline = time.monotonic() + timeout
    jobs: Dict[str, Dict[str, Any]] = {}
    interval = 0.05
    while True:
        for job_id in job_ids:
            if job_id in jobs and jobs[job_id]['state'] in messages.FINAL_STATES:
                continue
            jobs[job_id] = client.status(job_id)
            if progress:
                progress(jobs[job_id])
        if all(job['state'] in messages.FINAL_STATES for job in jobs.values()):
            return [jobs[i] for i in job_ids]
        if time.monotonic() > deadline:
            late = [j for j in jobs.values() if j['state'] not in messages.FINAL_STATES]
            raise JobFailed('image jobs did not finish within %gs: %s' % (timeout, ', '.join(
                '%s on %s is %s' % (j['id'], j['host'], j['state']) for j in late)), {'jobs': {j['host']: j for j in jobs.values()}})
        time.sleep(interval)
        interval = min(interval * 2, 0.2)  # status requests are cheap; a finished import is seen soon


# -- the host worker's side --------------------------------------------------------------------------

def write_sparse(chunks: Iterable[bytes], handle, progress: Optional[Callable[[int], None]] = None) -> Tuple[int, str]:
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


def open_url(url: str) -> Tuple[Any, int]:
    """Open `url` for reading: (stream, total bytes or 0 when unknown). Errors say what and where."""
    try:
        # The standard library's opener (schemes checked by check_url): this library imports nothing from Ansible.
        response = urllib.request.build_opener().open(url, timeout=FETCH_TIMEOUT)
    except urllib.error.HTTPError as e:
        raise HostError('fetching %s failed: HTTP %d %s' % (url, e.code, e.reason))
    except urllib.error.URLError as e:
        reason = getattr(e.reason, 'strerror', None) or str(e.reason)
        raise HostError('cannot fetch %s: %s' % (url, reason))
    except OSError as e:
        raise HostError('cannot fetch %s: %s' % (url, e.strerror or e))
    length = response.headers.get('Content-Length') if hasattr(response, 'headers') and response.headers else None
    try:
        total = int(length) if length is not None else 0
    except ValueError:
        total = 0
    return response, total


def read_chunks(stream, url: str) -> Iterable[bytes]:
    while True:
        try:
            chunk = stream.read(CHUNK)
        except OSError as e:
            raise HostError('reading %s failed: %s' % (url, e.strerror or e))
        if not chunk:
            return
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


def image_info(path: str, url: str) -> Dict[str, Any]:
    """qemu-img info of a fetched file; refuses what is not a disk image, saying what qemu-img found."""
    try:
        info = json.loads(qemu_img('info', '--output=json', path))
    except HostError as e:
        raise MaglicaError('%s is not a disk image: %s' % (url, e))
    fmt = info.get('format')
    size = os.path.getsize(path)
    if fmt not in IMAGE_FORMATS:
        raise MaglicaError('%s is not a disk image: qemu-img info says its format is %s' % (url, fmt))
    if fmt == 'raw' and (size % 512 or size < MIN_RAW_BYTES):
        raise MaglicaError('%s is not a disk image: qemu-img info finds no image format in it (it says raw data of '
                           '%d bytes, not whole 512-byte sectors of at least %d)' % (url, size, MIN_RAW_BYTES))
    if info.get('backing-filename'):
        raise MaglicaError('%s is a %s image with a backing file (%s): only self-contained images are imported'
                           % (url, fmt, info['backing-filename']))
    return info


def domain_xml(name: str, disk_path: str, args: Dict[str, Any], domain_uuid: str) -> str:
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


def _pool(conn, name: str):
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


def fetch_to_cache(url: str, checksum: str, cache_file: str, part: str, progress: Optional[Progress] = None) -> Dict[str, Any]:
    """Fetch `url` into `part` (sparse, hashed), check it, and rename it to `cache_file`. Returns what was fetched.
    `part` is removed on any failure; the caller records it before."""
    expected = checksum.split(':', 1)[1]
    stream, total = open_url(url)
    try:
        with open(part, 'wb') as handle:
            os.chmod(part, 0o600)
            size, actual = write_sparse(read_chunks(stream, url), handle,
                                        (lambda done: progress(done, total)) if progress else None)
            os.fsync(handle.fileno())
        if actual != expected:
            raise MaglicaError('checksum mismatch for %s: expected sha256:%s, got sha256:%s (%d bytes fetched)'
                               % (url, expected, actual, size))
        info = image_info(part, url)
        os.chmod(part, 0o444)  # the cache is a read-only base
        created = settle(part, cache_file)
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
    return {'bytes': size, 'format': info['format'], 'virtual_size': info.get('virtual-size'), 'created': created}


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


def adopt_upload(uploaded: str, checksum: str, cache_file: str, label: str, progress: Optional[Progress] = None) -> Dict[str, Any]:
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
    info = image_info(uploaded, label)
    os.chmod(uploaded, 0o444)
    created = settle(uploaded, cache_file)
    return {'bytes': size, 'format': info['format'], 'virtual_size': info.get('virtual-size'), 'created': created}


def settle_disk(conn, name: str, host_name: str, part_disk: str, disk_path: str, ownership: clone.Ownership) -> None:
    """Give the finished disk its name - never over a file that is there (another job's, or a clone's disk of the same
    name): checked and linked under the lock every clone's disk-making takes, so nothing appears in between."""
    with clone.VOLUME_LOCK:
        if clone.lookup(conn, name) is not None:
            raise ConflictError('%s was defined on %s while this job ran: this job did not make it' % (name, host_name))
        if os.path.lexists(disk_path) or clone.in_pool(conn, disk_path):
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


def cache_users(conn, cache_file: str, pool_dir: str) -> List[str]:
    """What depends on a cache entry: domains whose disks it backs, and the pool's files backed by it (overlays of
    images being imported, not yet defined)."""
    users = list(clone.disk_users(conn, [cache_file]).get(cache_file, []))
    try:
        entries = sorted(os.listdir(pool_dir))
    except OSError:
        entries = []
    for entry in entries:
        path = os.path.join(pool_dir, entry)
        if os.path.isfile(path) and qcow2_backing(path) in (cache_file, os.path.relpath(cache_file, pool_dir)):
            users.append(path)
    return users


def remove_own(conn, paths: List[str], cache_file: str, pool_dir: str) -> None:
    """Remove files this job made (rollback) or recorded (reconcile): never a disk a domain uses, and the cache entry
    only while nothing depends on it - under the lock an overlay on it is made under."""
    for path in paths:
        if path == cache_file:
            with clone.VOLUME_LOCK:
                if not cache_users(conn, cache_file, pool_dir):
                    _remove(path)
        elif not (os.path.lexists(path) and clone.disk_users(conn, [path])):
            _remove(path)


def run_import(conn, host_name: str, job_id: str, args: Dict[str, Any], reconcile: bool = False,
               ownership: Optional[clone.Ownership] = None, progress: Optional[Progress] = None) -> Dict[str, Any]:
    """The host worker's image.import: cache (fetching on a miss), the disk, the domain. Leaves nothing on failure."""
    lv = virt.libvirt()
    ownership = ownership if ownership is not None else clone.Ownership()
    name, checksum = args['name'], args['checksum']
    # What the image was made from: the URL, or the uploaded file's path on the machine that uploaded it.
    url = args.get('url') or 'upload:%s' % (args.get('origin') or args['upload'])
    pool, pool_dir = _pool(conn, args.get('pool') or 'default')
    # A `path` import: the library uploaded the file into the pool; this job takes it into the cache or removes it.
    uploaded = os.path.join(pool_dir, args['upload']) if args.get('upload') else None
    there = clone.lookup(conn, name)
    if there is not None:
        if uploaded:
            _remove(uploaded)
            pool.refresh(0)
        if reconcile and ownership.owns_domain(there):
            return {'name': name, 'reconciled': True}
        if virt.image_metadata_of(ET.fromstring(there.XMLDesc(0))).get('checksum') == checksum and not there.isActive():
            return {'name': name, 'present': True}  # made meanwhile by another job of the same image
        raise ConflictError('%s is already defined on %s and this job did not make it' % (name, host_name))
    cache_dir = os.path.join(pool_dir, CACHE_DIR)
    cache_file = os.path.join(cache_dir, '%s.img' % checksum.split(':', 1)[1])
    disk_path = os.path.join(pool_dir, '%s.qcow2' % name)
    part_disk = disk_path + '.part-' + job_id
    part_cache = cache_file + '.part-' + job_id
    made: List[str] = []  # files this job made, removed on failure (the cache entry only if this job fetched it)
    dom = None
    if uploaded:
        ownership.intend_file(uploaded)
    if reconcile:  # a restarted job: what it recorded and left half done goes, then it starts over
        remove_own(conn, [path for path in sorted(ownership.files) if path != uploaded], cache_file, pool_dir)
    try:
        os.makedirs(cache_dir, mode=0o755, exist_ok=True)
        fetched: Dict[str, Any] = {}
        if os.path.exists(cache_file):
            info = image_info(cache_file, url)
            fetched = {'bytes': 0, 'format': info['format'], 'virtual_size': info.get('virtual-size'), 'cache_hit': True}
        elif uploaded:
            fetched = adopt_upload(uploaded, checksum, cache_file, url, progress)
            if fetched.pop('created'):  # recorded once made: a crash before leaves a verified entry, never a loss
                ownership.intend_file(cache_file)
                made.append(cache_file)
            fetched['cache_hit'] = False
        else:
            ownership.intend_file(part_cache)
            fetched = fetch_to_cache(url, checksum, cache_file, part_cache, progress)
            if fetched.pop('created'):
                ownership.intend_file(cache_file)
                made.append(cache_file)
            fetched['cache_hit'] = False
        _remove(uploaded)  # a cache hit does not need it
        if os.path.exists(disk_path):
            raise ConflictError('the volume %s already exists on %s' % (disk_path, host_name))
        ownership.intend_file(part_disk)
        made.append(part_disk)
        mode = args.get('disk_mode') or 'copy'
        if mode == 'overlay':
            with clone.VOLUME_LOCK:  # never while a failed job of this host removes the cache entry (remove_own)
                if not os.path.exists(cache_file):
                    raise HostError('the cache entry %s went away before the overlay on it was made' % cache_file)
                qemu_img('create', '-q', '-f', 'qcow2', '-b', cache_file, '-F', fetched['format'], part_disk)
        else:
            qemu_img('convert', '-q', '-f', fetched['format'], '-O', 'qcow2', cache_file, part_disk)
        virtual = int(fetched['virtual_size'])  # a copy or an overlay has the source's virtual size
        if args.get('disk_size'):
            if args['disk_size'] < virtual:
                raise MaglicaError('disk_size %d is smaller than the image (%d bytes): images are grown, never shrunk'
                                   % (args['disk_size'], virtual))
            if args['disk_size'] > virtual:
                qemu_img('resize', '-q', part_disk, str(args['disk_size']))  # the copy or overlay, never the cache
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
    allocation = os.stat(disk_path).st_blocks * 512
    return {'name': name, 'checksum': checksum, 'url': url, 'path': disk_path, 'cache': cache_file,
            'cache_hit': fetched['cache_hit'], 'fetched_bytes': fetched['bytes'], 'format': fetched['format'],
            'disk_mode': mode, 'capacity': virtual, 'allocation': allocation}
