# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What listings and placement know of the hosts (on the controller): the states the host workers pushed to the
client worker, in one request, and a survey of each host's libvirtd only where no pushed state is young enough.

Each answer is virt.ask_hosts's (host, weight, uri, reachable, error, result) with where it came from (`source`:
'pushed' or 'survey') and how old it is (`age_s`). A state older than host_state.max_age is not trusted for anything:
its host is surveyed, and a host that does not answer then counts as unreachable (the name check stays closed)."""

from __future__ import annotations

import logging
from typing import Any, Collection, Dict, List, Optional, Sequence, Tuple

from ..cluster import host_state, virt
from ..cluster.config import Config, Host
from ..cluster.virt import Answer, Connect, DomainInfo
from ..errors import ConflictError, MaglicaError, NotFoundError
from .client import Client, PushedState

LOG = logging.getLogger('maglica.pushed')
# A client worker that does not answer this fast is surveyed around: a listing waits no longer for a cache (with
# no client worker at all, every listing pays this once; host_state.max_age 0 spares it).
STATES_TIMEOUT = 2.0


def _pushed(config: Config, view: str, hosts: Optional[Sequence[str]], images: Collection[str],
            names: Collection[str], fresh: bool) -> Dict[str, PushedState]:
    """{host: pushed state} of the states young enough to use; {} when asked for fresh data or when the client
    worker cannot say (then every host is surveyed, as before pushed states)."""
    max_age = config.host_state['max_age']
    if fresh or config.host_state['fresh'] or max_age <= 0:
        return {}
    try:
        with Client(config, timeout=min(config.jobs['request_timeout'], STATES_TIMEOUT)) as client:
            states = client.states(view, hosts, images, names)
    except MaglicaError as e:
        LOG.info('no pushed states (the hosts are surveyed): %s', e)
        return {}
    return {entry['host']: entry for entry in states if entry['age_s'] <= max_age}


def answers(config: Config, view: str, hosts: Optional[Sequence[str]] = None, images: Collection[str] = (),
            names: Collection[str] = (), fresh: bool = False) -> List[Answer]:
    """Every host's answer (or those in `hosts`), in configuration order. View 'domains': `result` is the host's
    domains with disk sizes, as virt.survey gives them; 'images': those of them that are original images (a
    surveyed host gives all); 'placement': host_state.placement_view of `images` and `names`. `fresh` (as
    host_state.fresh): survey every host."""
    selected = set(config.target_names(hosts))
    pushed = _pushed(config, view, hosts, images, names, fresh)

    def survey(conn: Connect, host: Host) -> Any:
        if view in ('domains', 'images'):
            return virt.list_domains(conn, with_sizes=True)
        return host_state.placement_view(virt.host_resources(conn, host, images), images, names)

    rest = [name for name in selected if name not in pushed]
    surveyed = {answer['host']: answer for answer in virt.ask_hosts(config, survey, rest)} if rest else {}
    result: List[Answer] = []
    for host in config.hosts:
        if host.name in pushed:
            entry = pushed[host.name]
            state = entry['state']
            result.append({'host': host.name, 'weight': host.weight, 'uri': config.uri(host), 'reachable': True,
                           'error': None, 'result': state if view == 'placement' else state['domains'],
                           'source': 'pushed', 'age_s': entry['age_s']})
        elif host.name in surveyed:
            result.append(dict(surveyed[host.name], source='survey', age_s=0.0))
    return result


def state_changed(config: Config, host: str) -> None:
    """Tell the client worker that the library changed `host`'s domains itself (Client.state_changed). When it does
    not answer, listings may show the host as it was for up to host_worker.state_poll_interval: said in the log."""
    try:
        with Client(config, timeout=min(config.jobs['request_timeout'], STATES_TIMEOUT)) as client:
            client.state_changed(host)
    except MaglicaError as e:
        LOG.warning('cannot tell the client worker that %s changed (listings may show it as it was for a few seconds): %s', host, e)


def placement_answers(config: Config, images: Collection[str] = (), names: Collection[str] = (),
                      held: Collection[str] = ()) -> List[Answer]:
    """answers(config, 'placement', ...), asked again of every host when a name of `held` is in none of them and
    some came from pushed states: a domain made a moment ago (by hand, or by another tool) may be in no pushed state
    yet, and is looked for on the hosts before it is taken for absent."""
    found = answers(config, 'placement', images=images, names=names)
    present = set(d['name'] for a in found for d in (a['result'] or {}).get('domains') or [])
    if not set(held) <= present and any(a['source'] == 'pushed' for a in found):
        found = answers(config, 'placement', images=images, names=names, fresh=True)
    return found


def find_vm(config: Config, name: str) -> Tuple[str, DomainInfo]:
    """(host, domain) of the VM called `name`, as virt.find_vm but from the pushed states: one request, not a
    survey of every host (placement_answers: every host is asked for a name no pushed state holds).
    NotFoundError / ConflictError as virt.find_vm."""
    found = [(a['host'], d) for a in placement_answers(config, names=[name], held=[name])
             for d in (a['result'] or {}).get('domains') or [] if d['name'] == name]
    if not found:
        raise NotFoundError('no VM named %s on any reachable host' % name)
    if len(found) > 1:
        raise ConflictError('%s is defined on several hosts: %s' % (name, ', '.join(where for where, _domain in found)))
    return found[0]
