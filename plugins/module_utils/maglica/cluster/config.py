# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Maglica configuration: /etc/maglica.conf (YAML), validated, with defaults.

    hosts:
      - name: host0.example.com
        weight: 10
    client:
      host: client.example.com
      pub_port: 5555
      rep_port: 5556
    libvirt:
      driver: qemu
      transport: tls                       # qemu+tls://HOST/system?pkipath=PKI_PATH
      path: system
      pki_path: /etc/maglica/pki/library   # cacert.pem, clientcert.pem, clientkey.pem
    placement:
      policy: seed                         # or resources
      memory_overcommit: 1.0

Two client workers (one active, one standby) share a job log in PostgreSQL:

    client:
      workers:
        - {name: cw1, host: cw1.example.com}
        - {name: cw2, host: cw2.example.com}
    joblog:
      backend: postgresql
      dsn: host=db1.example.com,db2.example.com dbname=maglica user=maglica target_session_attrs=read-write

`transport: tcp` (no encryption, no authentication), and a host `uri` that is tcp in any case
(`qemu+TCP://`) or turns off the check of the host's identity (`no_verify=1`,
`known_hosts_verify=ignore|auto`), are refused unless `insecure: true` is set in the libvirt
section; URIs of libvirt's test driver are exempt from the tcp rule. URIs are read the way
libvirt reads them (uri_transport, uri_params).
"""

from __future__ import annotations

import copy
import os
import re
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Optional, Tuple
from urllib.parse import quote, unquote, urlsplit

from .. import deps
from ..errors import ConfigError
from ..protocol import curve

DEFAULT_PATH = '/etc/maglica.conf'

# Every section and key the configuration knows, with its default and type. The modules' connection options
# (module_utils/common.py), their documentation (doc_fragments/maglica.py) and the roles' options that write these
# keys (roles/*/meta/argument_specs.yml) are checked against it (tests/unit/plugins/module_utils/test_schema.py).
SCHEMA: Dict[str, Dict[str, Tuple[Any, type]]] = {
    'client': {
        'host': ('localhost', str),
        'pub_port': (5555, int),
        'rep_port': (5556, int),
        'bind': ('*', str),
        # Client workers sharing a PostgreSQL job log, one active at a time: [{name, host, pub_port, rep_port, bind}],
        # the ports and bind address defaulting to the ones above. None: the one client worker at `host`.
        'workers': ([], list),
    },
    'joblog': {
        # sqlite: the file jobs.database, one client worker. postgresql: the database `dsn` (libpq's connection
        # string: a multi-host one with target_session_attrs=read-write follows the primary), one client worker or more.
        'backend': ('sqlite', str),
        'dsn': ('', str),
        # Seconds the active client worker's lease lasts when it stops renewing it (dead, stopped, cut off): then a
        # standby takes over.
        'lease_s': (5.0, float),
    },
    'libvirt': {
        'driver': ('qemu', str),
        'transport': ('tls', str),
        'path': ('system', str),
        'port': (None, int),
        # Client certificate, its key and the CA certificate, in libvirt's file names (the `pkipath` URI parameter).
        'pki_path': ('/etc/maglica/pki/library', str),
        # Required to use transport tcp, which has no encryption and no authentication.
        'insecure': (False, bool),
    },
    'security': {
        'curve': (True, bool),
        'key_dir': ('/etc/maglica/keys', str),
    },
    'jobs': {
        'database': ('/var/lib/maglica/jobs.sqlite', str),
        'ttl': (300, int),
        'republish_interval': (2.0, float),
        'request_timeout': (10.0, float),
        # Jobs that ended longer ago than this are deleted from the job log.
        'retention_days': (30.0, float),
    },
    'placement': {
        # seed: the least loaded host (running domains and reserved clones per weight); resources: hosts
        # without the memory or pool space for the clone are filtered out, the rest scored (see placement.py).
        'policy': ('seed', str),
        # Memory a host may commit to domains, as a multiple of its total (hosts[].memory_mb, else libvirt's).
        'memory_overcommit': (1.0, float),
    },
    'host_worker': {
        'state_dir': ('/var/lib/maglica/host', str),
        'heartbeat_interval': (5.0, float),
        # Independent jobs run at once; clone customisations within batch_window seconds share one appliance.
        'concurrency': (2, int),
        'batch_window': (1.0, float),
        # Spare clones (host/spares.py): for this many of the images cloned last, a disk copy with a libguestfs
        # appliance launched on it waits for the next clone (disk space of one copy, 512 MiB of memory each);
        # removed after spare_idle_s seconds untaken. 0: none, every clone copies and launches.
        'spare_images': (1, int),
        'spare_idle_s': (600.0, float),
        # Directories whose regular files image imports may name as file:// URLs; none by default (image_import).
        'file_url_dirs': ([], list),
        # The host's state is taken from its libvirtd this often (seconds; 0: never, the library surveys the host)
        # and pushed to the client worker on a change, and whole every state_interval.
        'state_poll_interval': (2.0, float),
        'state_interval': (60.0, float),
    },
    'host_state': {
        # Listings and placement read the states the host workers pushed when they are at most this old (seconds);
        # an older one, or none, is surveyed from the host's libvirtd as before. 0 surveys every host.
        'max_age': (15.0, float),
        # Survey every host's libvirtd, whatever the pushed states say.
        'fresh': (False, bool),
    },
}
JOBLOG_BACKENDS = ('sqlite', 'postgresql')
CLIENT_WORKER_KEYS: Dict[str, type] = {'name': str, 'host': str, 'pub_port': int, 'rep_port': int, 'bind': str}


@dataclass(frozen=True)
class ClientWorkerEntry:
    """One client worker: its name (the lease holder's, in logs and standby replies) and its sockets."""
    name: str
    host: str
    pub_port: int
    rep_port: int
    bind: str

    def endpoint(self, which: str) -> str:
        return 'tcp://%s:%d' % (self.host, self.pub_port if which == 'pub' else self.rep_port)

    def bind_endpoint(self, which: str) -> str:
        return 'tcp://%s:%d' % (self.bind, self.pub_port if which == 'pub' else self.rep_port)


# memory_mb: the host's memory for placement, instead of what its libvirtd reports.
HOST_KEYS: Dict[str, type] = {'name': str, 'weight': int, 'address': str, 'uri': str, 'memory_mb': int}
# What a host has when its entry does not say (address: its name).
HOST_DEFAULTS: Dict[str, Any] = {'weight': 10}
HOST_NAME_RE = re.compile(r'[A-Za-z0-9][A-Za-z0-9_.+-]{0,252}')
TRANSPORTS = ('tcp', 'tls', 'ssh', 'libssh2', 'libssh', 'unix', '')
# Names of CURVE key roles (curve.py): a host so named would hold that role's key and rights.
RESERVED_HOST_NAMES = (curve.LIBRARY, curve.SERVER)
# placement.policy: placement.POLICIES (not imported: placement imports nothing of the configuration).
PLACEMENT_POLICIES = ('seed', 'resources')
# libvirt's test driver simulates hosts inside the daemon: no hypervisor is behind it, whatever the transport.
EXEMPT_DRIVERS = ('test',)
# libvirt's URI scheme (libxml2's grammar): DRIVER[+TRANSPORT].
URI_SCHEME_RE = re.compile(r'[A-Za-z][A-Za-z0-9+.-]*')
# Query parameters with which libvirt's client stops checking the host it talks to (remote_driver.c): no_verify
# (TLS: the server's certificate; ssh: StrictHostKeyChecking=no) and known_hosts_verify (libssh, libssh2).
VERIFYING_HOST_KEYS = ('normal',)


def uri_scheme(uri: str) -> Optional[str]:
    """The scheme of a libvirt URI, or None when it has none (libvirt would then look it up as an alias)."""
    scheme, sep, _rest = uri.partition(':')
    return scheme if sep and URI_SCHEME_RE.fullmatch(scheme) else None


def uri_transport(uri: str) -> Tuple[str, str]:
    """(driver, transport) of a libvirt URI, as libvirt splits its scheme: 'qemu+TLS://h/system' gives ('qemu', 'tls');
    a local URI gives transport ''. The transport is lower case (libvirt compares it so), the driver as written."""
    scheme = uri_scheme(uri) or ''
    driver, _sep, transport = scheme.partition('+')
    transport = transport.lower()
    if not transport and urlsplit(uri).hostname:
        transport = 'tls'  # libvirt's default for a remote URI without a transport
    return driver, transport


def uri_params(uri: str) -> List[Tuple[str, str]]:
    """The query parameters of a libvirt URI, split and decoded as libvirt's virURIParseParams does: sections end at
    the next '&' (else ';'), names and values are %-decoded, '=value' is ignored and a bare name has the value ''."""
    query = uri.split('#', 1)[0].partition('?')[2]
    params = []
    while query:
        end = query.find('&')
        if end < 0:
            end = query.find(';')
        if end < 0:
            end = len(query)
        section = query[:end]
        name, sep, value = section.partition('=')
        if section and name:
            params.append((unquote(name), unquote(value) if sep else ''))
        query = query[end + 1:]
    return params


def uri_param(uri: str, name: str) -> Optional[str]:
    """The last value of the query parameter `name` (any case, as libvirt compares names), or None."""
    values = [value for key, value in uri_params(uri) if key.lower() == name]
    return values[-1] if values else None


def uri_problems(uri: str) -> List[str]:
    """Why libvirt over `uri` is insecure: plain tcp, or a parameter that turns off the check of the host's identity."""
    driver, transport = uri_transport(uri)
    problems = []
    if transport == 'tcp' and driver not in EXEMPT_DRIVERS:
        problems.append('plain tcp has neither encryption nor authentication: anyone who reaches its port can destroy '
                        'every VM there')
    for name, value in uri_params(uri):
        key = name.lower()
        if key == 'no_verify' and not _is_zero(value):
            problems.append("%s=%s: libvirt does not check the host's identity (its TLS certificate or SSH host key), so "
                            'anyone on the way can pose as the host' % (name, value))
        elif key == 'known_hosts_verify' and value.lower() not in VERIFYING_HOST_KEYS:
            problems.append("%s=%s: libvirt does not check the host's identity (its SSH host key), so anyone on the way "
                            'can pose as the host' % (name, value))
    return problems


def _is_zero(value: str) -> bool:
    try:
        return int(value.strip(), 10) == 0
    except ValueError:
        return False


def uri_error(uri: str) -> Optional[str]:
    """Why `uri` cannot be read as libvirt will read it, or None."""
    if uri_scheme(uri) is None:
        return ('%r is not a libvirt URI (DRIVER[+TRANSPORT]://[HOST]/PATH); libvirt would look it up as an alias in '
                'its client configuration, which Maglica cannot check' % uri)
    transport = uri_transport(uri)[1]
    if transport not in TRANSPORTS:
        return '%r has the transport %r, which libvirt does not know (known: %s)' % (
            uri, transport, ', '.join(t for t in TRANSPORTS if t))
    return None


def is_insecure_uri(uri: str) -> bool:
    """A URI that reaches a hypervisor over plain TCP, or without checking the host's identity."""
    return bool(uri_problems(uri))


class Host(object):
    """One hypervisor: its name (also its job topic), placement weight and libvirt address."""

    __slots__ = ('name', 'weight', 'address', 'uri', 'memory_mb')

    def __init__(self, name: str, weight: int = 10, address: Optional[str] = None, uri: Optional[str] = None,
                 memory_mb: Optional[int] = None) -> None:
        self.name = name
        self.weight = weight
        self.address = address or name
        self.uri = uri
        self.memory_mb = memory_mb

    def as_dict(self) -> Dict[str, Any]:
        return {'name': self.name, 'weight': self.weight, 'address': self.address, 'uri': self.uri, 'memory_mb': self.memory_mb}


class Config(object):
    """A validated configuration. Sections are plain dicts with every key present."""

    def __init__(self, data: Dict[str, Any], source: Optional[str] = None) -> None:
        self.source = source or 'inline configuration'
        self.hosts = [Host(**h) for h in data['hosts']]
        self.client: Dict[str, Any] = data['client']
        self.libvirt: Dict[str, Any] = data['libvirt']
        self.security: Dict[str, Any] = data['security']
        self.jobs: Dict[str, Any] = data['jobs']
        self.host_worker: Dict[str, Any] = data['host_worker']
        self.placement: Dict[str, Any] = data['placement']
        self.host_state: Dict[str, Any] = data['host_state']
        self.joblog: Dict[str, Any] = data['joblog']
        self.client_workers = [ClientWorkerEntry(**entry) for entry in data['client_workers']]
        # The host whose libvirtd is reached over its local socket: a host worker's own (see use_local_socket).
        self.local_host: Optional[str] = None

    def use_local_socket(self, name: str) -> None:
        """Reach host `name`'s libvirtd over the local socket (the host worker runs beside it) unless its `uri` is set."""
        self.host(name)
        self.local_host = name

    def host(self, name: str) -> Host:
        """Return the Host called `name` or raise ConfigError naming the known ones."""
        for host in self.hosts:
            if host.name == name:
                return host
        raise ConfigError('host %r is not in the configuration (%s); known hosts: %s'
                          % (name, self.source, ', '.join(h.name for h in self.hosts) or 'none'))

    def target_names(self, names: Optional[Iterable[str]] = None) -> List[str]:
        """The hosts a command is aimed at: `names` (each checked with host(), a repeated one once, in order),
        or every configured host when none are named."""
        if not names:
            return [h.name for h in self.hosts]
        for name in names:
            self.host(name)
        return list(dict.fromkeys(names))

    def uri(self, host: Host) -> str:
        """The libvirt URI of a Host: its own `uri`, else built from the libvirt section."""
        if host.uri:
            return host.uri
        lv = self.libvirt
        if lv['transport'] in ('', 'unix') or host.name == self.local_host:
            return '%s:///%s' % (lv['driver'], lv['path'])
        port = ':%d' % lv['port'] if lv['port'] else ''
        query = ''
        if lv['transport'] == 'tls' and lv['pki_path']:
            query = '?pkipath=%s' % quote(lv['pki_path'], safe='/')
        return '%s+%s://%s%s/%s%s' % (lv['driver'], lv['transport'], host.address, port, lv['path'], query)

    def insecure_uris(self) -> Dict[str, str]:
        """{host name: URI} of the hosts reached over plain TCP or without a check of the host's identity."""
        return {h.name: self.uri(h) for h in self.hosts if is_insecure_uri(self.uri(h))}

    def endpoints(self, which: str) -> List[str]:
        """tcp:// addresses of the client workers' PUB (`pub`) or REP (`rep`) sockets, for connecting, in order."""
        return [worker.endpoint(which) for worker in self.client_workers]

    def endpoint(self, which: str) -> str:
        """The first client worker's address of `which` socket."""
        return self.endpoints(which)[0]

    def client_worker(self, name: Optional[str] = None) -> ClientWorkerEntry:
        """The client worker called `name`; without a name, the only one (ConfigError when there are several). Its
        job log must be PostgreSQL's when there are several (the library and the host workers need not say so)."""
        if len(self.client_workers) > 1 and self.joblog['backend'] != 'postgresql':
            raise ConfigError('%s: %d client workers share one job log: set joblog.backend postgresql and its dsn '
                              '(an SQLite job log serves one client worker)' % (self.source, len(self.client_workers)))
        if name is None:
            if len(self.client_workers) > 1:
                raise ConfigError('%s names %d client workers (%s): say which one this is (--name)'
                                  % (self.source, len(self.client_workers), ', '.join(w.name for w in self.client_workers)))
            return self.client_workers[0]
        for worker in self.client_workers:
            if worker.name == name:
                return worker
        raise ConfigError('client worker %r is not in the configuration (%s); client.workers: %s'
                          % (name, self.source, ', '.join(w.name for w in self.client_workers)))

    def bind_endpoint(self, which: str, name: Optional[str] = None) -> str:
        return self.client_worker(name).bind_endpoint(which)


def _check_type(where: str, value: Any, kind: type) -> Any:
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind is int and isinstance(value, bool) or not isinstance(value, kind):
        raise ConfigError('%s must be of type %s, got %r' % (where, kind.__name__, value))
    return value


def validate(data: Any, source: Optional[str] = None) -> Config:
    """Check raw configuration data (a dict) and return a Config with defaults filled in."""
    where = source or 'configuration'
    if not isinstance(data, dict):
        raise ConfigError('%s: the configuration must be a mapping, got %s' % (where, type(data).__name__))
    unknown = set(data) - set(SCHEMA) - {'hosts'}
    if unknown:
        raise ConfigError('%s: unknown section(s) %s; known: hosts, %s'
                          % (where, ', '.join(sorted(unknown)), ', '.join(sorted(SCHEMA))))
    result: Dict[str, Any] = {}
    for section, keys in SCHEMA.items():
        given = data.get(section) or {}
        if not isinstance(given, dict):
            raise ConfigError('%s: section %r must be a mapping' % (where, section))
        bad = set(given) - set(keys)
        if bad:
            raise ConfigError('%s: unknown key(s) %s in section %r; known: %s'
                              % (where, ', '.join(sorted(bad)), section, ', '.join(sorted(keys))))
        result[section] = {}
        for key, (default, kind) in keys.items():
            value = given.get(key, default)
            if value is not None:
                value = _check_type('%s: %s.%s' % (where, section, key), value, kind)
            result[section][key] = value
    for section, key in (('client', 'pub_port'), ('client', 'rep_port'), ('libvirt', 'port')):
        value = result[section][key]
        if value is not None and not 0 < value < 65536:
            raise ConfigError('%s: %s.%s must be a TCP port (1-65535), got %d' % (where, section, key, value))
    if result['client']['pub_port'] == result['client']['rep_port']:
        raise ConfigError('%s: client.pub_port and client.rep_port must differ' % where)
    result['client_workers'] = _validate_client_workers(result['client'], where)
    joblog = result['joblog']
    if joblog['backend'] not in JOBLOG_BACKENDS:
        raise ConfigError('%s: joblog.backend must be one of %s, got %r' % (where, ', '.join(JOBLOG_BACKENDS), joblog['backend']))
    if joblog['backend'] == 'postgresql' and not joblog['dsn'].strip():
        raise ConfigError('%s: joblog.backend postgresql needs joblog.dsn (a libpq connection string or URI)' % where)
    if joblog['lease_s'] <= 0:
        raise ConfigError('%s: joblog.lease_s must be positive seconds, got %g' % (where, joblog['lease_s']))
    if result['libvirt']['transport'] not in TRANSPORTS:
        raise ConfigError('%s: libvirt.transport must be one of %s' % (where, ', '.join(t or "''" for t in TRANSPORTS)))
    if result['jobs']['ttl'] <= 0:
        raise ConfigError('%s: jobs.ttl must be positive' % where)
    if result['jobs']['retention_days'] <= 0:
        raise ConfigError('%s: jobs.retention_days must be positive (days to keep jobs that ended)' % where)
    if result['placement']['policy'] not in PLACEMENT_POLICIES:
        raise ConfigError('%s: placement.policy must be one of %s, got %r'
                          % (where, ', '.join(PLACEMENT_POLICIES), result['placement']['policy']))
    if result['placement']['memory_overcommit'] <= 0:
        raise ConfigError('%s: placement.memory_overcommit must be positive (1.0: commit no more memory than a host has), got %g'
                          % (where, result['placement']['memory_overcommit']))
    for section, key in (('host_worker', 'state_poll_interval'), ('host_worker', 'state_interval'), ('host_state', 'max_age')):
        if result[section][key] < 0:
            raise ConfigError('%s: %s.%s must be 0 or more seconds, got %g' % (where, section, key, result[section][key]))
    dirs = result['host_worker']['file_url_dirs']
    if any(not isinstance(d, str) or not os.path.isabs(d) or d.rstrip('/') == '' for d in dirs):
        raise ConfigError('%s: host_worker.file_url_dirs must be a list of absolute directory paths (not /), got %r'
                          % (where, dirs))
    result['host_worker']['file_url_dirs'] = [str(d) for d in dirs]
    result['hosts'] = _validate_hosts(data.get('hosts'), where)
    config = Config(result, source)
    for host in config.hosts:
        error = uri_error(config.uri(host))
        if error:
            raise ConfigError('%s: host %s: %s' % (where, host.name, error))
    insecure = config.insecure_uris()
    if insecure and not result['libvirt']['insecure']:
        raise ConfigError('%s: insecure libvirt URI(s): %s. Use transport: tls (the default) or ssh, without no_verify or '
                          'known_hosts_verify; to accept the risk, set insecure: true in the libvirt section'
                          % (where, '; '.join('%s (%s): %s' % (name, uri, '; '.join(uri_problems(uri)))
                                              for name, uri in insecure.items())))
    return config


def _validate_client_workers(client: Dict[str, Any], where: str) -> List[Dict[str, Any]]:
    """client.workers as entries with every key, or the one client worker of client.host when none are listed."""
    defaults = {'host': client['host'], 'pub_port': client['pub_port'], 'rep_port': client['rep_port'], 'bind': client['bind']}
    if not client['workers']:
        return [dict(defaults, name=client['host'])]
    result: List[Dict[str, Any]] = []
    for index, entry in enumerate(client['workers']):
        if not isinstance(entry, dict) or not entry.get('name') or not entry.get('host'):
            raise ConfigError('%s: client.workers[%d] needs a name and a host' % (where, index))
        bad = set(entry) - set(CLIENT_WORKER_KEYS)
        if bad:
            raise ConfigError('%s: client.workers[%d] has unknown key(s) %s; known: %s'
                              % (where, index, ', '.join(sorted(bad)), ', '.join(sorted(CLIENT_WORKER_KEYS))))
        worker = dict(defaults)
        for key, kind in CLIENT_WORKER_KEYS.items():
            if entry.get(key) is not None:
                worker[key] = _check_type('%s: client.workers[%d].%s' % (where, index, key), entry[key], kind)
        if not HOST_NAME_RE.fullmatch(worker['name']):
            raise ConfigError('%s: client worker name %r may only hold letters, digits and _.+-' % (where, worker['name']))
        if worker['name'] in (w['name'] for w in result):
            raise ConfigError('%s: client worker %s is listed twice' % (where, worker['name']))
        for key in ('pub_port', 'rep_port'):
            if not 0 < worker[key] < 65536:
                raise ConfigError('%s: client.workers[%d].%s must be a TCP port (1-65535), got %d' % (where, index, key, worker[key]))
        if worker['pub_port'] == worker['rep_port']:
            raise ConfigError('%s: client worker %s: pub_port and rep_port must differ' % (where, worker['name']))
        result.append(worker)
    return result


def _validate_hosts(hosts: Any, where: str) -> List[Dict[str, Any]]:
    if not isinstance(hosts, list) or not hosts:
        raise ConfigError('%s: hosts must be a non-empty list of {name, weight}' % where)
    seen = set()
    result = []
    for index, entry in enumerate(hosts):
        if isinstance(entry, str):
            entry = {'name': entry}
        if not isinstance(entry, dict) or not entry.get('name'):
            raise ConfigError('%s: hosts[%d] needs a name' % (where, index))
        bad = set(entry) - set(HOST_KEYS)
        if bad:
            raise ConfigError('%s: hosts[%d] has unknown key(s) %s; known: %s'
                              % (where, index, ', '.join(sorted(bad)), ', '.join(sorted(HOST_KEYS))))
        host: Dict[str, Any] = dict(HOST_DEFAULTS)
        for key, kind in HOST_KEYS.items():
            if entry.get(key) is not None:
                host[key] = _check_type('%s: hosts[%d].%s' % (where, index, key), entry[key], kind)
        if not HOST_NAME_RE.fullmatch(host['name']):
            raise ConfigError('%s: host name %r may only hold letters, digits and _.+- (it is also a job topic)' % (where, host['name']))
        if host['name'] in RESERVED_HOST_NAMES:
            raise ConfigError('%s: host name %r is reserved: it names the CURVE key of the %s; give the host another name'
                              % (where, host['name'], 'library (modules, CLI)' if host['name'] == curve.LIBRARY else 'client worker'))
        if host['weight'] <= 0:
            raise ConfigError('%s: host %s: weight must be a positive integer' % (where, host['name']))
        if host.get('memory_mb') is not None and host['memory_mb'] <= 0:
            raise ConfigError('%s: host %s: memory_mb must be a positive number of MiB, got %d' % (where, host['name'], host['memory_mb']))
        if host['name'] in seen:
            raise ConfigError('%s: host %s is listed twice' % (where, host['name']))
        seen.add(host['name'])
        result.append(host)
    return result


def load(path: Optional[str] = None, inline: Optional[Dict[str, Any]] = None) -> Config:
    """Load the configuration from `inline` data (a dict) or a YAML file (default /etc/maglica.conf).

    Inline settings win over the file's where both are given.
    """
    data: Any = {}
    source = None
    if path or not inline or 'hosts' not in inline:
        path = path or os.environ.get('MAGLICA_CONFIG') or DEFAULT_PATH
        source = path
        yaml = deps.load('yaml')
        try:
            with open(path) as handle:
                data = yaml.safe_load(handle) or {}
        except (IOError, OSError) as e:
            raise ConfigError('cannot read the configuration %s: %s' % (path, e.strerror or e))
        except yaml.YAMLError as e:
            raise ConfigError('the configuration %s is not valid YAML: %s' % (path, e))
    if inline:
        data = merge(data, inline)
        source = '%s with inline settings' % source if source else 'inline configuration'
    return validate(data, source)


def merge(base: Any, override: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    """Merge two raw configurations section by section (hosts are replaced, not merged)."""
    result = copy.deepcopy(base) if isinstance(base, dict) else {}
    for key, value in (override or {}).items():
        if value is None:
            continue
        if isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = dict(result[key], **{k: v for k, v in value.items() if v is not None})
        else:
            result[key] = value
    return result
