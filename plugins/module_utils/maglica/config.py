# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Maglica configuration: the seed's /etc/maglica.conf YAML, validated, with defaults.

    hosts:
      - name: host0.example.com
        weight: 10
    client:
      host: client.example.com
      pub_port: 5555
      rep_port: 5556
    libvirt:
      driver: qemu
      transport: tcp
      path: system
"""

from __future__ import annotations

import copy
import os
import re

from . import deps
from .errors import ConfigError

DEFAULT_PATH = '/etc/maglica.conf'

# Every section and key the configuration knows, with its default and type.
SCHEMA = {
    'client': {
        'host': ('localhost', str),
        'pub_port': (5555, int),
        'rep_port': (5556, int),
        'bind': ('*', str),
    },
    'libvirt': {
        'driver': ('qemu', str),
        'transport': ('tcp', str),
        'path': ('system', str),
        'port': (None, int),
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
    'host_worker': {
        'state_dir': ('/var/lib/maglica/host', str),
        'heartbeat_interval': (5.0, float),
        # Independent jobs run at once; clone customisations within batch_window seconds share one appliance.
        'concurrency': (4, int),
        'batch_window': (1.0, float),
    },
}
HOST_KEYS = {'name': str, 'weight': int, 'address': str, 'uri': str}
HOST_NAME_RE = re.compile(r'^[A-Za-z0-9][A-Za-z0-9_.+-]{0,252}$')
TRANSPORTS = ('tcp', 'tls', 'ssh', 'libssh2', 'unix', '')


class Host(object):
    """One hypervisor: its name (also its job topic), placement weight and libvirt address."""

    __slots__ = ('name', 'weight', 'address', 'uri')

    def __init__(self, name, weight=10, address=None, uri=None):
        self.name = name
        self.weight = weight
        self.address = address or name
        self.uri = uri

    def as_dict(self):
        return {'name': self.name, 'weight': self.weight, 'address': self.address, 'uri': self.uri}


class Config(object):
    """A validated configuration. Sections are plain dicts with every key present."""

    def __init__(self, data, source=None):
        self.source = source or 'inline configuration'
        self.hosts = [Host(**h) for h in data['hosts']]
        self.client = data['client']
        self.libvirt = data['libvirt']
        self.security = data['security']
        self.jobs = data['jobs']
        self.host_worker = data['host_worker']

    def host(self, name):
        """Return the Host called `name` or raise ConfigError naming the known ones."""
        for host in self.hosts:
            if host.name == name:
                return host
        raise ConfigError('host %r is not in the configuration (%s); known hosts: %s'
                          % (name, self.source, ', '.join(h.name for h in self.hosts) or 'none'))

    def uri(self, host):
        """The libvirt URI of a Host: its own `uri`, else built from the libvirt section."""
        if host.uri:
            return host.uri
        lv = self.libvirt
        if lv['transport'] in ('', 'unix'):
            return '%s:///%s' % (lv['driver'], lv['path'])
        port = ':%d' % lv['port'] if lv['port'] else ''
        return '%s+%s://%s%s/%s' % (lv['driver'], lv['transport'], host.address, port, lv['path'])

    def endpoint(self, which):
        """tcp:// address of the client worker's PUB (`pub`) or REP (`rep`) socket, for connecting."""
        return 'tcp://%s:%d' % (self.client['host'], self.client['%s_port' % which])

    def bind_endpoint(self, which):
        return 'tcp://%s:%d' % (self.client['bind'], self.client['%s_port' % which])


def _check_type(where, value, kind):
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind is int and isinstance(value, bool) or not isinstance(value, kind):
        raise ConfigError('%s must be of type %s, got %r' % (where, kind.__name__, value))
    return value


def validate(data, source=None):
    """Check raw configuration data (a dict) and return a Config with defaults filled in."""
    where = source or 'configuration'
    if not isinstance(data, dict):
        raise ConfigError('%s: the configuration must be a mapping, got %s' % (where, type(data).__name__))
    unknown = set(data) - set(SCHEMA) - {'hosts'}
    if unknown:
        raise ConfigError('%s: unknown section(s) %s; known: hosts, %s'
                          % (where, ', '.join(sorted(unknown)), ', '.join(sorted(SCHEMA))))
    result = {}
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
    if result['libvirt']['transport'] not in TRANSPORTS:
        raise ConfigError('%s: libvirt.transport must be one of %s' % (where, ', '.join(t or "''" for t in TRANSPORTS)))
    if result['jobs']['ttl'] <= 0:
        raise ConfigError('%s: jobs.ttl must be positive' % where)
    if result['jobs']['retention_days'] <= 0:
        raise ConfigError('%s: jobs.retention_days must be positive (days to keep jobs that ended)' % where)
    result['hosts'] = _validate_hosts(data.get('hosts'), where)
    return Config(result, source)


def _validate_hosts(hosts, where):
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
        host = {'weight': 10}
        for key, kind in HOST_KEYS.items():
            if entry.get(key) is not None:
                host[key] = _check_type('%s: hosts[%d].%s' % (where, index, key), entry[key], kind)
        if not HOST_NAME_RE.match(host['name']):
            raise ConfigError('%s: host name %r may only hold letters, digits and _.+- (it is also a job topic)' % (where, host['name']))
        if host['weight'] <= 0:
            raise ConfigError('%s: host %s: weight must be a positive integer' % (where, host['name']))
        if host['name'] in seen:
            raise ConfigError('%s: host %s is listed twice' % (where, host['name']))
        seen.add(host['name'])
        result.append(host)
    return result


def load(path=None, inline=None):
    """Load the configuration from `inline` data (a dict) or a YAML file (default /etc/maglica.conf).

    Inline settings win over the file's where both are given.
    """
    data = {}
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


def merge(base, override):
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
