# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The state of the cloud's hosts: their libvirtd (domains, memory, CPUs) and whether their host worker is alive."""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence, TypedDict

from ..cluster import tls, virt
from ..cluster.config import Config, Host, uri_transport
from ..cluster.virt import Connect
from ..errors import DispatchError, HostError, MaglicaError
from .client import Client, HostStatus
from .waiting import Waiter

WORKER_POLL_S = 0.5


class LibvirtFacts(TypedDict):
    """What a host's libvirtd says of the host and its load."""
    hostname: Optional[str]
    active_domains: Optional[int]
    inactive_domains: Optional[int]
    cpus: Optional[int]
    cpu_model: Optional[str]
    memory_mb: Optional[int]
    free_memory_mb: Optional[int]
    vcpus_in_use: Optional[int]


class TlsFacts(TypedDict):
    """The transport of a host's URI and, over tls, the days left on its server certificate."""
    transport: str
    server_cert_days: Optional[float]
    server_cert_error: Optional[str]


class HostFacts(LibvirtFacts):
    """What is asked of each host: its libvirtd's facts and its TLS facts (TlsFacts; one base only, which pylint
    reads right)."""
    transport: str
    server_cert_days: Optional[float]
    server_cert_error: Optional[str]


class HostEntry(HostFacts):
    """One host in host_info: its configuration, libvirtd facts (None when unreachable), its worker's liveness and
    whether it is in maintenance (None when the client worker does not answer)."""
    name: str
    weight: int
    uri: str
    reachable: bool
    error: Optional[str]
    worker_alive: Optional[bool]
    worker_last_seen_s: Optional[float]
    worker_pid: Optional[int]
    maintenance: Optional[bool]


class HostReport(TypedDict):
    """host_info's result."""
    hosts: List[HostEntry]
    warnings: List[str]


def _libvirt_facts(conn: Connect, host: Host) -> LibvirtFacts:
    lv = virt.libvirt()
    info = conn.getInfo()
    active = conn.listAllDomains(lv.VIR_CONNECT_LIST_DOMAINS_ACTIVE)
    inactive = conn.listAllDomains(lv.VIR_CONNECT_LIST_DOMAINS_INACTIVE)
    return {
        'hostname': conn.getHostname(),
        'active_domains': len(active),
        'inactive_domains': len(inactive),
        'cpus': info[2],
        'cpu_model': info[0],
        'memory_mb': info[1],
        'free_memory_mb': conn.getFreeMemory() // 1048576,
        'vcpus_in_use': sum(dom.info()[3] for dom in active),
    }


def worker_status(config: Config) -> Dict[str, HostStatus]:
    """{host: status from the client worker} or a DispatchError when the client worker does not answer."""
    with Client(config, timeout=min(config.jobs['request_timeout'], 5.0)) as client:
        return {entry['host']: entry for entry in client.hosts()}


def wait_for_workers(config: Config, timeout: float) -> Dict[str, HostStatus]:
    """Poll the client worker until every host worker is alive or `timeout` passes; returns the last status.

    A client worker that does not answer is asked again until the deadline, then its error is raised.
    """
    waiter = Waiter(timeout, first=WORKER_POLL_S, most=WORKER_POLL_S)
    while True:
        try:
            status = worker_status(config)
            if all(s['alive'] for s in status.values()) or waiter.expired():
                return status
        except DispatchError:
            if waiter.expired():
                raise
        waiter.pause()


def _tls_facts(uri: str) -> TlsFacts:
    """The transport of a host's URI and, over tls, the days left on its server certificate."""
    facts: TlsFacts = {'transport': uri_transport(uri)[1] or 'unix', 'server_cert_days': None, 'server_cert_error': None}
    if facts['transport'] == 'tls':
        try:
            days = tls.server_certificate_days(uri)
            facts['server_cert_days'] = None if days is None else round(days, 1)
        except HostError as e:
            facts['server_cert_error'] = str(e)
    return facts


def _no_facts(uri: str) -> HostFacts:
    """The facts of a host whose libvirtd did not answer: None but for the transport of its URI."""
    return {'hostname': None, 'active_domains': None, 'inactive_domains': None, 'cpus': None, 'cpu_model': None,
            'memory_mb': None, 'free_memory_mb': None, 'vcpus_in_use': None,
            'transport': uri_transport(uri)[1] or 'unix', 'server_cert_days': None, 'server_cert_error': None}


def host_info(config: Config, require_workers: bool = False, wait_timeout: float = 0, hosts: Optional[Sequence[str]] = None,
              renew_days: float = 30) -> HostReport:
    """Every host (or those named in `hosts`): weight, libvirtd reachability and load, its worker's liveness,
    the transport and the days until its server certificate expires.

    Returns {hosts: [...], warnings: [...]}. A host whose libvirtd does not answer is
    reported, not fatal; a client worker that does not answer makes `worker_alive` null
    and adds a warning. With `require_workers`, a host whose worker is not alive (after
    waiting up to `wait_timeout` seconds), or whose server certificate expires within
    `renew_days`, raises MaglicaError naming it.
    """
    if hosts:
        config.target_names(hosts)
    warnings: List[str] = []
    workers: Optional[Dict[str, HostStatus]]
    try:
        workers = wait_for_workers(config, wait_timeout if require_workers or wait_timeout else 0)
    except DispatchError as e:
        workers = None
        warnings.append('worker liveness unknown: %s' % e)

    def facts(conn: Connect, host: Host) -> HostFacts:
        return {**_libvirt_facts(conn, host), **_tls_facts(config.uri(host))}

    answers = virt.ask_hosts(config, facts, hosts)
    result: List[HostEntry] = []
    for answer in answers:
        found: HostFacts = answer['result'] or _no_facts(answer['uri'])
        entry: HostEntry = {'name': answer['host'], 'weight': answer['weight'], 'uri': answer['uri'],
                            'reachable': answer['reachable'], 'error': answer['error'],
                            'worker_alive': None, 'worker_last_seen_s': None, 'worker_pid': None, 'maintenance': None, **found}
        if workers is not None:
            status: Mapping[str, Any] = workers.get(answer['host']) or {}
            entry['worker_alive'] = bool(status.get('alive'))
            entry['worker_last_seen_s'] = status.get('last_seen_s')
            entry['worker_pid'] = status.get('pid')
            entry['maintenance'] = bool(status.get('maintenance'))
        result.append(entry)
    if require_workers:
        if workers is None:
            raise MaglicaError('cannot tell whether the host workers are alive: %s' % warnings[-1])
        dead = [h['name'] for h in result if not h['worker_alive']]
        if dead:
            raise MaglicaError('the host worker of %s is not alive%s' % (
                ', '.join(dead), ' after waiting %gs' % wait_timeout if wait_timeout else ''))
        expiring = ['%s (%g days)' % (h['name'], h['server_cert_days']) for h in result
                    if h['server_cert_days'] is not None and h['server_cert_days'] < renew_days]
        if expiring:
            raise MaglicaError('the libvirtd server certificate of %s expires within the renewal window of %d days: re-run '
                               'playbooks/site.yml to renew it' % (', '.join(expiring), renew_days))
    return {'hosts': result, 'warnings': warnings}
