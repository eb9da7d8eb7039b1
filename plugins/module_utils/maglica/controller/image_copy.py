# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Copying an original image to another host, as the controller asks: where it comes from (plan_copy), then one
`image.copy` job in the destination's host worker, which does the copy (host/image_copy.py).
"""

from __future__ import annotations

from typing import Any, Dict, Optional, TypedDict

from ..cluster import virt
from ..cluster.config import Config
from ..errors import ConflictError, NotFoundError
from ..protocol import messages
from .client import Client, Job, Progress


class CopyPlan(TypedDict):
    """plan_copy's answer: whether `dest` has the image already, else the host it is copied from."""
    exists: bool
    source: Optional[str]
    dest: str


class CopyResult(TypedDict):
    """copy's result."""
    changed: bool
    name: str
    source: Optional[str]
    dest: str
    job_id: Optional[str]
    job: Optional[Job]
    result: Dict[str, Any]


def plan_copy(config: Config, name: str, dest: str, source: Optional[str] = None) -> CopyPlan:
    """Where the image comes from, or that the destination has it already. Changes nothing.

    Returns {exists, source, dest}.
    """
    config.target_names([dest] + ([source] if source is not None else []))
    if source is not None:
        if source == dest:
            raise ConflictError('the source and the destination are both %s' % dest)
    answers = virt.survey(config)
    found = virt.locate(answers, name)
    at_dest = [d for host, d in found if host == dest]
    if at_dest:
        if not virt.is_image(at_dest[0]):
            raise ConflictError('%s on %s is a VM, not an original image: it cannot be replaced by a copy' % (name, dest))
        return {'exists': True, 'source': None, 'dest': dest}
    holders = [(host, d) for host, d in found if host != dest]
    if source is not None:
        holders = [(host, d) for host, d in holders if host == source]
    if not holders:
        unreachable = [a['error'] for a in answers if not a['reachable']]
        extra = '; unreachable: %s' % '; '.join(unreachable) if unreachable else ''
        raise NotFoundError('image %s is not on %s%s' % (name, source or 'any host', extra))
    images = [(host, d) for host, d in holders if virt.is_image(d)]
    if not images:
        host, domain = holders[0]
        why = 'it runs' if domain['active'] else 'it is a clone'
        raise ConflictError('%s on %s is not an original image (%s): only inactive images are copied' % (name, host, why))
    return {'exists': False, 'source': images[0][0], 'dest': dest}


def copy(config: Config, name: str, dest: str, source: Optional[str] = None, timeout: float = 3600, check_mode: bool = False,
         progress: Optional[Progress] = None) -> CopyResult:
    """Copy the image `name` to host `dest` (from `source` or any host holding it). Idempotent on the destination.

    Returns {changed, source, dest, job_id, job, result}.
    """
    plan = plan_copy(config, name, dest, source)
    result: CopyResult = {'changed': False, 'name': name, 'source': plan['source'], 'dest': dest, 'job_id': None, 'job': None, 'result': {}}
    if plan['exists']:
        return result
    result['changed'] = True
    if check_mode:
        return result
    job = messages.new_job(dest, 'image.copy', {'image': name, 'source': plan['source']}, ttl=max(1, int(timeout)))
    with Client(config) as client:
        client.submit(job)
        result['job_id'] = job['id']
        result['job'] = finished = client.wait(job['id'], timeout, progress=progress)
    result['result'] = finished['data']
    return result
