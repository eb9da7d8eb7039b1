# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Talking to each host's libvirtd: connections, domain descriptions, asking every host at once."""

from __future__ import annotations

import atexit
import fnmatch
import logging
import threading
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from types import TracebackType
from typing import (
    Any,
    Callable,
    Collection,
    Dict,
    Iterable,
    List,
    Mapping,
    Optional,
    Tuple,
    Type,
    TypeVar,
)

from .. import deps
from ..errors import HostError
from . import tls
from .config import Config, Host, uri_problems

LOG = logging.getLogger('maglica.virt')

# Clones carry this element in their libvirt metadata, so a stopped clone is never taken for an image.
METADATA_NS = 'https://maglica.cloud/xmlns/clone/1'
METADATA_PREFIX = 'maglica'
# Original images made by Maglica (maglica_image) carry this element instead: what they were made from (source,
# checksum). It is never the clone element, so no listing takes an image for a clone.
IMAGE_METADATA_NS = 'https://maglica.cloud/xmlns/image/1'
IMAGE_METADATA_PREFIX = 'maglica-image'
MAX_PARALLEL = 64
# Domains of one host described at once, on its one connection.
DOMAIN_PARALLEL = 8

# libvirt's objects, by name: python3-libvirt has no type stubs, so to mypy each is Any.
Connect = Any  # libvirt.virConnect
Domain = Any  # libvirt.virDomain
Pool = Any  # libvirt.virStoragePool
Volume = Any  # libvirt.virStorageVol
Stream = Any  # libvirt.virStream
# A domain as describe() gives it (name, state, disks...), and one host's answer in ask_hosts.
DomainInfo = Dict[str, Any]
Answer = Dict[str, Any]
T = TypeVar('T')

STATE_NAMES = {0: 'nostate', 1: 'running', 2: 'blocked', 3: 'paused', 4: 'shutdown', 5: 'shutoff', 6: 'crashed', 7: 'pmsuspended'}


def libvirt() -> deps.Library:
    module = deps.load('libvirt')
    if not getattr(module, '_maglica_quiet', False):
        # libvirt prints every error to stderr by default; we raise them as exceptions instead.
        module.registerErrorHandler(lambda context, error: None, None)
        module._maglica_quiet = True
    return module


def error_text(error: BaseException) -> str:
    message = getattr(error, 'get_error_message', lambda: None)()
    return message or str(error)


def connect(uri: str, readonly: bool = False, host: Optional[str] = None) -> Connect:
    """Open a libvirt connection. Over tls the client's certificate files are checked first, and a failure
    names the host (`host`, else the URI's address), the file or DN, and the check that found it."""
    lv = libvirt()
    name = host or uri
    _warn_if_insecure(uri)
    files = tls.client_files(uri)
    dn = tls.check_client(files, name) if files else None
    try:
        return lv.openReadOnly(uri) if readonly else lv.open(uri)
    except lv.libvirtError as e:
        text = error_text(e)
        raise HostError(tls.explain(uri, name, text, dn) or 'cannot connect to libvirtd at %s: %s' % (uri, text))


def _warn_if_insecure(uri: str) -> None:
    problems = uri_problems(uri)
    if problems:
        LOG.warning('libvirt connection to %s is insecure (libvirt.insecure: true): %s', uri, '; '.join(problems))


# Read-only connections are kept, one per URI, and reused: over TLS, opening one (certificate files loaded and
# checked on both sides, a handshake, libvirt's confirmation) costs more than a host's whole listing
# (benchmarks/list.py, tls_vs_tcp). libvirt connections may be used by several threads at once.
_kept: Dict[str, Connect] = {}
_kept_lock = threading.Lock()


def _kept_connection(uri: str, host: str) -> Connect:
    with _kept_lock:
        conn = _kept.get(uri)
    if conn is not None:
        _warn_if_insecure(uri)
        return conn
    conn = connect(uri, readonly=True, host=host)
    with _kept_lock:
        if uri in _kept:  # another thread opened one meanwhile: keep one
            conn.close()
        return _kept.setdefault(uri, conn)


def _drop_kept(uri: str, conn: Connect) -> None:
    with _kept_lock:
        if _kept.get(uri) is conn:
            del _kept[uri]
    try:
        conn.close()
    except Exception:  # a connection whose daemon went away may not close cleanly; it is dropped all the same
        pass


def forget_connections() -> None:
    """Close every kept connection."""
    with _kept_lock:
        kept = list(_kept.items())
    for uri, conn in kept:
        _drop_kept(uri, conn)


# Before the interpreter takes the libvirt module apart, or closing them then fails noisily.
atexit.register(forget_connections)


class Connection(object):
    """Context manager: a libvirt connection to one configured host. Read-write connections are closed on exit;
    read-only ones are kept for the next use, unless the connection died (then `stale` is set)."""

    def __init__(self, config: Config, host: Host, readonly: bool = False) -> None:
        self.uri = config.uri(host)
        self.host = host.name
        self.readonly = readonly
        self.conn: Connect = None
        self.stale = False

    def __enter__(self) -> Connect:
        self.conn = _kept_connection(self.uri, self.host) if self.readonly else connect(self.uri, False, self.host)
        return self.conn

    def __exit__(self, exc_type: Optional[Type[BaseException]], exc: Optional[BaseException],
                 traceback: Optional[TracebackType]) -> None:
        if self.readonly:
            if exc_type is not None and not _alive(self.conn):
                self.stale = True  # its libvirtd restarted or went away since it was opened
                _drop_kept(self.uri, self.conn)
            return
        try:
            self.conn.close()
        except Exception:  # closing a connection whose daemon died must not hide the real error
            pass


def _alive(conn: Connect) -> bool:
    try:
        return conn.isAlive() == 1
    except Exception:  # a broken connection may fail to answer even this
        return False


def describe(dom: Domain, with_sizes: bool = True) -> DomainInfo:
    """A domain as a plain dict: name, state, vcpus, memory, disks (with sizes), MACs, VNC port, clone metadata."""
    lv = libvirt()
    root = ET.fromstring(dom.XMLDesc(0))
    state = dom.state()[0]
    info: DomainInfo = {
        'name': dom.name(),
        'uuid': dom.UUIDString(),
        'active': bool(dom.isActive()),
        'state': STATE_NAMES.get(state, 'unknown'),
        'vcpus': int(root.findtext('vcpu') or 1),
        'disks': [],
        'interfaces': [],
        'vnc_port': None,
        'clone_of': None,
    }
    memory = root.find('memory')
    info['memory_mb'] = _to_mib(int(memory.text or 0), memory.get('unit') or 'KiB') if memory is not None else 0
    for disk in root.findall('./devices/disk'):
        source = disk.find('source')
        target = disk.find('target')
        driver = disk.find('driver')
        path = None
        if source is not None:
            path = source.get('file') or source.get('dev') or source.get('volume')
        entry = {
            'device': disk.get('device', 'disk'),
            'target': target.get('dev') if target is not None else None,
            'path': path,
            'format': driver.get('type') if driver is not None else None,
            'capacity': None,
            'allocation': None,
        }
        if with_sizes and path and entry['device'] == 'disk':
            try:
                entry['capacity'], entry['allocation'], _physical = dom.blockInfo(entry['target'] or path)
            except lv.libvirtError:
                pass
        info['disks'].append(entry)
    for iface in root.findall('./devices/interface'):
        mac = iface.find('mac')
        info['interfaces'].append({'type': iface.get('type'), 'mac': mac.get('address') if mac is not None else None})
    graphics = root.find("./devices/graphics[@type='vnc']")
    port = graphics.get('port') if graphics is not None else None
    if port is not None and port != '-1':
        info['vnc_port'] = int(port)
    meta = clone_metadata(dom)
    info['clone_of'] = meta.get('image')
    info['clone_mode'] = meta.get('mode')  # full or linked (a linked clone's disks are overlays of its image's)
    info['ssh_host_keys'] = meta.get('host_keys', [])
    # The spread group a clone was placed in: kept in its metadata, so it outlives every worker.
    info['spread_group'] = meta.get('spread-group')
    info['image'] = image_metadata_of(root) or None
    return info


def _to_mib(value: int, unit: str) -> int:
    factors = {'b': 1.0 / 1048576, 'bytes': 1.0 / 1048576, 'kib': 1.0 / 1024, 'k': 1.0 / 1024, 'kb': 1000.0 / 1048576,
               'mib': 1, 'm': 1, 'mb': 1e6 / 1048576, 'gib': 1024, 'g': 1024, 'gb': 1e9 / 1048576}
    return int(value * factors.get(unit.lower(), 1.0 / 1024))


def clone_metadata(dom: Domain) -> Dict[str, Any]:
    """Maglica's clone metadata on a domain: its attributes and `host_keys` ({} when it is not a clone)."""
    lv = libvirt()
    try:
        text = dom.metadata(lv.VIR_DOMAIN_METADATA_ELEMENT, METADATA_NS, lv.VIR_DOMAIN_AFFECT_CONFIG)
    except lv.libvirtError:
        return {}
    element = ET.fromstring(text)
    meta: Dict[str, Any] = dict(element.attrib)
    # The public SSH host keys written into the clone, for known_hosts lines on every later run.
    meta['host_keys'] = [key.text.strip() for key in element.findall('host-key') if key.text]
    return meta


def image_metadata_of(root: ET.Element) -> Dict[str, str]:
    """The attributes of Maglica's image element in a domain's XML (already parsed), {} when there is none."""
    element = root.find('./metadata/{%s}image' % IMAGE_METADATA_NS)
    return dict(element.attrib) if element is not None else {}


def set_image_metadata(dom: Domain, attributes: Dict[str, str]) -> None:
    """Mark a domain as an original image made by Maglica, with these attributes (strings), in its persistent config."""
    lv = libvirt()
    element = ET.Element('image', {key: str(value) for key, value in attributes.items()})
    dom.setMetadata(lv.VIR_DOMAIN_METADATA_ELEMENT, ET.tostring(element, encoding='unicode'),
                    IMAGE_METADATA_PREFIX, IMAGE_METADATA_NS, lv.VIR_DOMAIN_AFFECT_CONFIG)


def is_image(info: Mapping[str, Any]) -> bool:
    """An original image: an inactive domain that is not a Maglica clone."""
    return not info['active'] and not info.get('clone_of')


def list_domains(conn: Connect, with_sizes: bool = False) -> List[DomainInfo]:
    """Every domain of a connection, described. Each description takes several libvirt calls, each a round
    trip to the host; the remote driver carries concurrent calls on one connection, so domains are described
    side by side (DOMAIN_PARALLEL at a time) and a host costs a few round trips, not a few per domain."""
    lv = libvirt()
    try:
        domains = conn.listAllDomains(0)
        if len(domains) < 2:
            return [describe(dom, with_sizes=with_sizes) for dom in domains]
        with ThreadPoolExecutor(max_workers=min(DOMAIN_PARALLEL, len(domains))) as pool:
            return list(pool.map(lambda dom: describe(dom, with_sizes=with_sizes), domains))
    except lv.libvirtError as e:
        raise HostError('cannot list domains: %s' % error_text(e))


def ask_hosts(config: Config, query: Callable[[Connect, Host], Any],
              hosts: Optional[Collection[str]] = None) -> List[Answer]:
    """Run query(conn, host) on every host at once, each on its own connection.

    Returns one dict per host, in configuration order: {host, weight, reachable, error, result}.
    A host whose libvirtd cannot be reached is reported, never fatal.
    """
    if hosts is None:
        selected = list(config.hosts)
    else:
        # An unknown name is a ConfigError naming the known hosts, never a host silently left out.
        named = set(config.target_names(hosts)) if hosts else set()
        selected = [h for h in config.hosts if h.name in named]

    def one(host: Host) -> Answer:
        entry: Answer = {'host': host.name, 'weight': host.weight, 'uri': config.uri(host), 'reachable': True, 'error': None, 'result': None}
        try:
            connection = Connection(config, host, readonly=True)
            try:
                with connection as conn:
                    entry['result'] = query(conn, host)
            except Exception:
                if not connection.stale:
                    raise
                with Connection(config, host, readonly=True) as conn:  # a kept connection had died: once more, fresh
                    entry['result'] = query(conn, host)
        except HostError as e:
            message = str(e)
            entry.update(reachable=False, error=message if message.startswith(host.name + ': ') else '%s: %s' % (host.name, message))
        except Exception as e:  # a libvirt error mid-query: report this host, keep the others
            entry.update(reachable=False, error='%s: %s' % (host.name, error_text(e)))
        return entry

    if not selected:
        return []
    with ThreadPoolExecutor(max_workers=min(MAX_PARALLEL, len(selected))) as pool:
        return list(pool.map(one, selected))


def survey(config: Config, hosts: Optional[Collection[str]] = None, with_sizes: bool = False) -> List[Answer]:
    """Every host's domains, asked in parallel."""
    return ask_hosts(config, lambda conn, host: list_domains(conn, with_sizes=with_sizes), hosts)


def collect(config: Config, select: Callable[[DomainInfo, str], Optional[Dict[str, Any]]], count_key: str,
            hosts: Optional[Collection[str]] = None,
            answers: Optional[List[Answer]] = None) -> Tuple[List[Dict[str, Any]], List[Dict[str, Any]]]:
    """Domains of every host (or of those named in `hosts`), asked in parallel - or taken from `answers` (the
    library's pushed states, with `source` and `age_s` each): select(domain, host) gives an item or None. Returns
    (items sorted by name and host, one report per host {host, reachable, error, count_key[, source, age_s]})."""
    if hosts:
        config.target_names(hosts)
    items: List[Dict[str, Any]] = []
    report: List[Dict[str, Any]] = []
    for answer in survey(config, hosts=hosts, with_sizes=True) if answers is None else answers:
        found = [item for item in (select(domain, answer['host']) for domain in answer['result'] or []) if item is not None]
        items.extend(found)
        entry = {'host': answer['host'], 'reachable': answer['reachable'], 'error': answer['error'], count_key: len(found)}
        entry.update((key, answer[key]) for key in ('source', 'age_s') if key in answer)
        report.append(entry)
    items.sort(key=lambda item: (item['name'], item['host']))
    return items, report


def matches(name: str, patterns: Optional[Iterable[str]]) -> bool:
    return not patterns or any(fnmatch.fnmatchcase(name, p) for p in patterns)


def image_storage(conn: Connect, domain: DomainInfo) -> Dict[str, Any]:
    """{disk_bytes, pool, pool_free_bytes} of an image: the allocation of its disks (what a full clone copies) and
    the free space of the pool holding its first disk; pool None when no libvirt pool holds its disks."""
    lv = libvirt()
    total, pool_name, pool_free = 0, None, None
    for disk in domain['disks']:
        if disk['device'] != 'disk' or not disk['path']:
            continue
        try:
            vol = conn.storageVolLookupByPath(disk['path'])
            total += vol.info()[2]
            if pool_name is None:
                pool = vol.storagePoolLookupByVolume()
                pool_name, pool_free = pool.name(), pool.info()[3]
        except lv.libvirtError:
            continue  # a disk outside every pool: its size is unknown to libvirt's storage side
    return {'disk_bytes': total, 'pool': pool_name, 'pool_free_bytes': pool_free}


def memory_and_cpus(conn: Connect) -> Tuple[int, int]:
    """The host's memory (MiB) and CPUs, as its libvirtd counts them."""
    try:
        info = conn.getInfo()
        return int(info[1]), int(info[2])
    except libvirt().libvirtError as e:
        raise HostError('cannot read the host information: %s' % error_text(e))


def host_resources(conn: Connect, host: Host, images: Collection[str] = ()) -> Dict[str, Any]:
    """What placement needs of one host: its domains, its memory (MiB) and CPUs, and the storage of `images`."""
    domains = list_domains(conn, with_sizes=False)
    memory_mb, cpus = memory_and_cpus(conn)
    storage = {d['name']: image_storage(conn, d) for d in domains if d['name'] in images and is_image(d)}
    return {'domains': domains, 'memory_mb': memory_mb, 'cpus': cpus, 'storage': storage}


def placement_survey(config: Config, images: Iterable[str] = ()) -> List[Answer]:
    """host_resources of every host, asked in parallel (answers as ask_hosts gives them)."""
    wanted = frozenset(images)
    return ask_hosts(config, lambda conn, host: host_resources(conn, host, wanted))


def call(what: str, function: Callable[..., T], *args: Any) -> T:
    lv = libvirt()
    try:
        return function(*args)
    except lv.libvirtError as e:
        raise HostError('%s: %s' % (what, error_text(e)))


def send_all(stream: Stream, data: bytes, what: str) -> None:
    """Write all of `data` to a libvirt stream (send() may take less than it is given)."""
    view = memoryview(data)
    while view:
        written = stream.send(view.tobytes())
        if written < 0:
            raise HostError('writing %s failed (%d)' % (what, written))
        view = view[written:]


def locate(answers: Iterable[Answer], name: str) -> List[Tuple[str, DomainInfo]]:
    """[(host, domain info)] of every domain called `name` in a survey."""
    return [(a['host'], d) for a in answers for d in a['result'] or [] if d['name'] == name]
