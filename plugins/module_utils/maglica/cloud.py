# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What Maglica does, as functions: the one place that modules and the `maglica` command call."""

from __future__ import annotations

from . import hostkeys, messages, placement, reach, virt
from .client import Client
from .errors import ConflictError, MaglicaError, NotFoundError

CLONE_MODES = ('full', 'linked')


def image_list(config, patterns=None, hosts=None):
    """Original images (inactive domains that are not clones) on every host, asked in parallel.

    Returns {images: [...], hosts: [{host, reachable, error, images}]}; a host that
    cannot be reached is reported in `hosts` and does not stop the others.
    """
    def select(domain, host):
        return dict(domain, host=host) if virt.is_image(domain) and virt.matches(domain['name'], patterns) else None
    images, report = virt.collect(config, select, 'images', hosts)
    return {'images': images, 'hosts': report}


def locate(answers, name):
    """[(host, domain info)] of every domain called `name` in a survey."""
    return [(a['host'], d) for a in answers for d in a['result'] or [] if d['name'] == name]


def plan_clone(config, image, hostname, host=None):
    """Decide where a clone goes, without changing anything.

    Returns {exists, host, candidates, unreachable}: `exists` when a domain called
    `hostname` is already defined (then `host` is where it is).
    """
    if host is not None:
        config.host(host)
    answers = virt.survey(config)
    unreachable = [a['error'] for a in answers if not a['reachable']]
    existing = locate(answers, hostname)
    if len(existing) > 1:
        raise ConflictError('%s is defined on several hosts (%s): remove all but one' % (hostname, ', '.join(where for where, _domain in existing)))
    if existing:
        where, domain = existing[0]
        if virt.is_image(domain):
            raise ConflictError('the hostname %s is already used by an image on %s' % (hostname, where))
        return {'exists': True, 'host': where, 'domain': domain, 'candidates': [], 'unreachable': unreachable}
    holders = []
    for answer in answers:
        for domain in answer['result'] or []:
            if domain['name'] == image:
                if domain['active']:
                    raise ConflictError('image %s is running on %s; an original image must be an inactive domain' % (image, answer['host']))
                if not virt.is_image(domain):
                    raise ConflictError('%s on %s is a clone, not an original image' % (image, answer['host']))
                active = sum(1 for d in answer['result'] if d['active'])
                holders.append({'host': answer['host'], 'weight': answer['weight'], 'active': active})
    if not holders:
        asked = ', '.join(a['host'] for a in answers if a['reachable']) or 'none reachable'
        extra = '; unreachable: %s' % '; '.join(unreachable) if unreachable else ''
        raise NotFoundError('image %s is not on any host (asked: %s%s)' % (image, asked, extra))
    candidates = placement.rank(holders)
    if host is not None:
        if host not in [c['host'] for c in candidates]:
            raise ConflictError('host %s does not hold image %s; hosts that do: %s' % (host, image, ', '.join(c['host'] for c in candidates)))
        chosen = host
    else:
        chosen = candidates[0]['host']
    return {'exists': False, 'host': chosen, 'candidates': candidates, 'unreachable': unreachable}


def clone_args(image, hostname, clone_mode='full', start=True, network=None, root_password_hash=None, ssh_authorized_keys=None,
               cloud_init_user_data=None):
    args = {'image': image, 'hostname': hostname, 'clone_mode': clone_mode, 'start': start}
    if network:
        args['network'] = {k: v for k, v in network.items() if v is not None}
    if root_password_hash:
        args['root_password_hash'] = root_password_hash
    if ssh_authorized_keys:
        args['ssh_authorized_keys'] = list(ssh_authorized_keys)
    if cloud_init_user_data:
        args['cloud_init_user_data'] = cloud_init_user_data
    return args


def clone(config, image, hostname, host=None, clone_mode='full', start=True, network=None, root_password_hash=None,
          ssh_authorized_keys=None, wait=True, timeout=600, check_mode=False, progress=None, wait_for='none',
          wait_for_timeout=300, cloud_init_user_data=None):
    """Clone `image` to a VM called `hostname` on the best host. Idempotent on `hostname`.

    With `wait_for` ip or ssh, also waits (up to `wait_for_timeout` seconds, apart from the job's `timeout`)
    until the started clone has an address, or answers SSH with the host key it was given; a clone that
    does not get there is kept and reach.NotReachable is raised.
    Returns {changed, host, candidates, job_id, job, result, ip, ssh_host_keys, known_hosts}.
    """
    args = clone_args(image, hostname, clone_mode, start, network, root_password_hash, ssh_authorized_keys, cloud_init_user_data)
    # Every argument is checked before anything is asked or submitted (the host name is a placeholder here).
    messages.validate_job({'id': messages.new_job_id(), 'host': config.hosts[0].name, 'action': 'vm.clone', 'args': args})
    if wait_for not in reach.WAIT_FOR:
        raise MaglicaError('wait_for must be one of %s, not %r' % (', '.join(reach.WAIT_FOR), wait_for))
    if wait_for != 'none' and not (start and wait):
        raise MaglicaError('wait_for=%s needs start=true and wait=true: only a started clone can answer' % wait_for)
    plan = plan_clone(config, image, hostname, host)
    result = {'changed': False, 'host': plan['host'], 'candidates': plan['candidates'], 'unreachable': plan['unreachable'],
              'job_id': None, 'job': None, 'result': {}, 'ip': None, 'ssh_host_keys': [], 'known_hosts': []}
    if plan['exists']:
        result['domain'] = plan['domain']
        result['ssh_host_keys'] = plan['domain'].get('ssh_host_keys') or []
    else:
        job = messages.new_job(plan['host'], 'vm.clone', args, ttl=max(1, int(timeout)))
        result['changed'] = True
        if check_mode:
            return result
        with Client(config) as client:
            result['job'] = client.submit(job)
            result['job_id'] = result['job']['id']
            if result['job_id'] != job['id']:
                # The client worker holds the name for a clone already in flight (an earlier run that timed out or
                # did not wait): that job is this task's, and this run changes nothing itself.
                result.update(changed=False, host=result['job']['host'],
                              message='a clone of %s is already under way as job %s on %s'
                              % (hostname, result['job_id'], result['job']['host']))
            if not wait:
                return result
            result['job'] = client.wait(result['job_id'], timeout, progress=progress)
            result['result'] = result['job']['data']
        result['ssh_host_keys'] = (result['result'].get('ssh_host_keys')
                                   or (result['result'].get('domain') or {}).get('ssh_host_keys') or [])
    if wait_for != 'none' and not check_mode:
        seen = reach.wait(config, result['host'], hostname, wait_for, result['ssh_host_keys'], wait_for_timeout,
                          console=lambda: console(config, result['host'], hostname))
        result['ip'] = seen.ip
    result['known_hosts'] = hostkeys.known_hosts_lines(reach.clone_names(hostname, result['ip']), result['ssh_host_keys'])
    return result


CONSOLE_TIMEOUT = 30


def console(config, host, name, lines=40):
    """The last lines of a VM's serial console, read by its host's worker (the log is a file of that host)."""
    job = messages.new_job(host, 'vm.console', {'name': name, 'lines': lines}, ttl=CONSOLE_TIMEOUT)
    with Client(config) as client:
        client.submit(job)
        return client.wait(job['id'], CONSOLE_TIMEOUT)['data'].get('lines') or []


def job_info(config, job_id=None, limit=20, host=None):
    """One job by id, or the most recent ones."""
    with Client(config) as client:
        if job_id:
            return [client.status(job_id)]
        return client.recent(limit, host)


def find_vm(config, name):
    """(host, domain info) of the VM called `name`, or NotFoundError / ConflictError."""
    answers = virt.survey(config)
    found = locate(answers, name)
    if not found:
        raise NotFoundError('no VM named %s on any reachable host' % name)
    if len(found) > 1:
        raise ConflictError('%s is defined on several hosts: %s' % (name, ', '.join(where for where, _domain in found)))
    return found[0]
