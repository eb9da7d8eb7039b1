# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Getting images in, as the controller asks: a cloud image (a URL, or a local file uploaded) becomes an original
image on the hosts chosen. Plans per target host (which have the image with the same checksum, which would
fetch), refuses bad input before anything is submitted, then submits one `image.import` job per host, run at once;
each host worker fetches the file itself (host/image_fetch.py).
"""

from __future__ import annotations

import errno
import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Dict, List, Optional, Tuple, TypedDict

from ..cluster import virt
from ..cluster.config import Config
from ..cluster.virt import Stream
from ..errors import ConflictError, HostError, JobFailed, MaglicaError
from ..protocol import messages
from ..protocol.import_job import CHUNK, check_url, parse_checksum
from .client import Client, Job, Progress
from .waiting import Waiter


class ImportPlan(TypedDict):
    """plan_import's answer: the targets, in configuration order, that have the image and that would fetch it."""
    present: List[str]
    fetch: List[str]
    targets: List[str]


class ImportResult(TypedDict):
    """import_image's result: `jobs` {host: finished job}, `imported` {host: its job's data}."""
    changed: bool
    name: str
    checksum: str
    url: Optional[str]
    path: Optional[str]
    present: List[str]
    fetch: List[str]
    jobs: Dict[str, Job]
    imported: Dict[str, Dict[str, Any]]


# -- the controller's side ------------------------------------------------------------------------

def plan_import(config: Config, name: str, checksum: str, targets: Optional[List[str]] = None) -> ImportPlan:
    """Per target host: `present` (the image with this checksum is there) or `fetch`. Changes nothing.

    Refuses, before anything is submitted: a target that is not configured, a target that cannot be reached,
    and a name taken there by a VM or by an image made from something else.
    """
    names = config.target_names(targets)  # ConfigError naming the known hosts
    plan: ImportPlan = {'present': [], 'fetch': [], 'targets': names}
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


def import_image(config: Config, name: str, url: Optional[str], checksum: Optional[str], targets: Optional[List[str]] = None,
                 settings: Optional[Dict[str, Any]] = None, timeout: int = 3600, check_mode: bool = False,
                 progress: Optional[Progress] = None, path: Optional[str] = None) -> ImportResult:
    """Make the original image `name` from `url` on every target that lacks it; one job per host, run at once.
    With `path` instead of `url`: a local file, uploaded to each host through libvirt storage streams (sparse);
    its checksum is computed here (and must equal `checksum` when that is given).

    settings: vcpus, memory_mb, disk_size (bytes), network | bridge, firmware, disk_mode, keep_cache, domain_type.
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
    result: ImportResult = {'changed': bool(plan['fetch']), 'name': name, 'checksum': checksum, 'url': url, 'path': path,
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


def upload_all(config: Config, path: str, jobs: List[Job], pool_name: str) -> None:
    """Upload `path` to each job's host at once; on any failure, every volume uploaded is deleted again."""
    with ThreadPoolExecutor(max_workers=min(virt.MAX_PARALLEL, len(jobs))) as pool:
        outcomes = list(pool.map(lambda job: _upload_one(config, path, job, pool_name), jobs))
    failures = [str(error) for _job, error in outcomes if error is not None]
    if failures:
        for job, error in outcomes:
            if error is None:
                _delete_upload(config, job, pool_name)
        raise HostError('uploading %s failed: %s' % (path, '; '.join(failures)))


def _upload_one(config: Config, path: str, job: Job, pool_name: str) -> Tuple[Job, Optional[Exception]]:
    try:
        upload(config, job['host'], path, job['args']['upload'], pool_name)
    except MaglicaError as e:
        return job, e
    return job, None


def _delete_upload(config: Config, job: Job, pool_name: str) -> None:
    lv = virt.libvirt()
    try:
        with virt.Connection(config, config.host(job['host'])) as conn:
            conn.storagePoolLookupByName(pool_name).storageVolLookupByName(job['args']['upload']).delete(0)
    except (lv.libvirtError, MaglicaError):
        pass  # gone already, or the host went away: the host worker never saw a job for it


def upload(config: Config, host_name: str, path: str, volume: str, pool_name: str = 'default') -> int:
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


def send_sparse(stream: Stream, path: str) -> int:
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
                virt.send_all(stream, data, 'the upload stream')
                position += len(data)
                sent += len(data)
    finally:
        os.close(fd)
    return sent


def wait_all(client: Client, job_ids: List[str], timeout: float,
             progress: Optional[Progress] = None) -> List[Job]:
    """Poll every job until each has ended or `timeout` passes; returns them in the given order."""
    # Status requests are cheap: a finished import is seen soon.
    waiter = Waiter(timeout, first=0.05, most=0.2)
    jobs: Dict[str, Job] = {}
    while True:
        for job_id in job_ids:
            if job_id in jobs and jobs[job_id]['state'] in messages.FINAL_STATES:
                continue
            jobs[job_id] = client.status(job_id)
            if progress:
                progress(jobs[job_id])
        if all(job['state'] in messages.FINAL_STATES for job in jobs.values()):
            return [jobs[i] for i in job_ids]
        if waiter.expired():
            late = [j for j in jobs.values() if j['state'] not in messages.FINAL_STATES]
            raise JobFailed('image jobs did not finish within %gs: %s' % (timeout, ', '.join(
                '%s on %s is %s' % (j['id'], j['host'], j['state']) for j in late)), {'jobs': {j['host']: j for j in jobs.values()}})
        waiter.pause()
