# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""config.py: defaults, YAML files, inline settings, every validation message, libvirt URIs."""

from __future__ import annotations

import re

import pytest

from maglica.cluster import config
from maglica.errors import ConfigError
from unit_helpers import write_yaml


def test_defaults_are_filled_in():
    cfg = config.validate({'hosts': ['kvm1']})
    for section, keys in config.SCHEMA.items():
        assert getattr(cfg, section) == {key: default for key, (default, _kind) in keys.items()}, section
    # The seed's ports and URI parts.
    assert cfg.client == dict(cfg.client, host='localhost', pub_port=5555, rep_port=5556, bind='*')
    assert cfg.libvirt == {'driver': 'qemu', 'transport': 'tls', 'path': 'system', 'port': None,
                           'pki_path': '/etc/maglica/pki/library', 'insecure': False}
    assert cfg.security['curve'] is True, 'CURVE is on unless turned off'
    assert [h.as_dict() for h in cfg.hosts] == [{'name': 'kvm1', 'weight': 10, 'address': 'kvm1', 'uri': None, 'memory_mb': None}]
    assert cfg.source == 'inline configuration'


def test_given_values_replace_defaults_key_by_key():
    cfg = config.validate({'hosts': ['kvm1'], 'jobs': {'ttl': 42}, 'security': None})
    assert cfg.jobs == dict(cfg.jobs, ttl=42) and cfg.jobs['database'] == config.SCHEMA['jobs']['database'][0]
    assert cfg.security['key_dir'] == config.SCHEMA['security']['key_dir'][0], 'an empty section gets its defaults'


def test_placement_settings():
    cfg = config.validate({'hosts': [{'name': 'a', 'memory_mb': 2048}, 'b'],
                           'placement': {'policy': 'resources', 'memory_overcommit': 2}})
    assert cfg.placement == {'policy': 'resources', 'memory_overcommit': 2.0}
    assert [h.memory_mb for h in cfg.hosts] == [2048, None], 'a host without memory_mb takes what its libvirtd reports'
    assert config.validate({'hosts': ['a']}).placement['policy'] == 'seed', 'seed stays the default'


def test_int_is_accepted_for_float_settings():
    cfg = config.validate({'hosts': ['a'], 'jobs': {'republish_interval': 3}})
    assert cfg.jobs['republish_interval'] == 3.0 and isinstance(cfg.jobs['republish_interval'], float)


def test_yaml_file_is_loaded(tmp_path):
    path = write_yaml(tmp_path / 'maglica.conf', {
        'hosts': [{'name': 'host0.example.com', 'weight': 20, 'address': '127.0.0.11'}, 'host1'],
        'client': {'host': 'client.example.com', 'rep_port': 7000},
    })
    cfg = config.load(path)
    assert cfg.source == path
    assert [(h.name, h.weight, h.address) for h in cfg.hosts] == [('host0.example.com', 20, '127.0.0.11'), ('host1', 10, 'host1')]
    assert cfg.client['host'] == 'client.example.com'
    assert cfg.client['rep_port'] == 7000 and cfg.client['pub_port'] == 5555


def test_inline_settings_win_over_the_file(tmp_path):
    path = write_yaml(tmp_path / 'maglica.conf', {
        'hosts': ['from-file'],
        'client': {'host': 'file-client', 'pub_port': 6000},
        'libvirt': {'transport': 'ssh'},
    })
    cfg = config.load(path, {'client': {'host': 'inline-client', 'rep_port': None}, 'hosts': [{'name': 'inline-host'}]})
    assert cfg.client['host'] == 'inline-client'
    assert cfg.client['pub_port'] == 6000, 'keys the inline section does not set stay from the file'
    assert cfg.client['rep_port'] == 5556, 'an inline None does not override'
    assert cfg.libvirt['transport'] == 'ssh'
    assert [h.name for h in cfg.hosts] == ['inline-host'], 'hosts are replaced, not merged'
    assert cfg.source == '%s with inline settings' % path


def test_inline_only_does_not_read_a_file(tmp_path, monkeypatch):
    monkeypatch.setenv('MAGLICA_CONFIG', str(tmp_path / 'absent.conf'))
    assert [h.name for h in config.load(None, {'hosts': ['x']}).hosts] == ['x']


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match=r'cannot read the configuration .*absent\.conf: No such file'):
        config.load(str(tmp_path / 'absent.conf'))
    bad = tmp_path / 'bad.conf'
    bad.write_text('hosts: [a\n')
    with pytest.raises(ConfigError, match=r'the configuration .*bad\.conf is not valid YAML'):
        config.load(str(bad))


def test_config_from_environment_variable(tmp_path, monkeypatch):
    monkeypatch.setenv('MAGLICA_CONFIG', write_yaml(tmp_path / 'env.conf', {'hosts': ['from-env']}))
    assert config.load().hosts[0].name == 'from-env'


@pytest.mark.parametrize('data, message', [
    ([], r'the configuration must be a mapping, got list'),
    ({'hosts': ['a'], 'clients': {}},
     r"unknown section\(s\) clients; known: hosts, client, host_state, host_worker, joblog, jobs, libvirt, placement, security"),
    ({'hosts': ['a'], 'client': {'hots': 'x'}}, r"unknown key\(s\) hots in section 'client'; known: bind, host, pub_port, rep_port"),
    ({'hosts': ['a'], 'client': ['x']}, r"section 'client' must be a mapping"),
    ({'hosts': ['a'], 'client': {'pub_port': '5555'}}, r"client\.pub_port must be of type int, got '5555'"),
    ({'hosts': ['a'], 'client': {'pub_port': True}}, r'client\.pub_port must be of type int, got True'),
    ({'hosts': ['a'], 'security': {'curve': 1}}, r'security\.curve must be of type bool, got 1'),
    ({'hosts': ['a'], 'jobs': {'request_timeout': False}}, r'jobs\.request_timeout must be of type float, got False'),
    ({'hosts': ['a'], 'jobs': {'ttl': 0}}, r'jobs\.ttl must be positive'),
    ({'hosts': ['a'], 'client': {'pub_port': 0}}, r'client\.pub_port must be a TCP port \(1-65535\), got 0'),
    ({'hosts': ['a'], 'client': {'rep_port': 65536}}, r'client\.rep_port must be a TCP port \(1-65535\), got 65536'),
    ({'hosts': ['a'], 'libvirt': {'transport': 'http'}}, r"libvirt\.transport must be one of tcp, tls, ssh, libssh2, libssh, unix, ''"),
    ({}, r'hosts must be a non-empty list'),
    ({'hosts': []}, r'hosts must be a non-empty list'),
    ({'hosts': 'kvm1'}, r'hosts must be a non-empty list'),
    ({'hosts': [{'weight': 3}]}, r'hosts\[0\] needs a name'),
    ({'hosts': ['a', 5]}, r'hosts\[1\] needs a name'),
    ({'hosts': ['a'], 'placement': {'policy': 'fastest'}}, r"placement.policy must be one of seed, resources, got 'fastest'"),
    ({'hosts': ['a'], 'placement': {'memory_overcommit': 0}}, r"placement.memory_overcommit must be positive"),
    ({'hosts': ['a'], 'placement': {'memory_overcommit': 'lots'}}, r"placement.memory_overcommit must be of type float, got 'lots'"),
    ({'hosts': ['a'], 'placement': {'spread': True}}, r"unknown key\(s\) spread in section 'placement'; known: memory_overcommit, policy"),
    ({'hosts': [{'name': 'a', 'memory_mb': 0}]}, r"host a: memory_mb must be a positive number of MiB, got 0"),
    ({'hosts': [{'name': 'a', 'memory_mb': '4G'}]}, r"hosts\[0\].memory_mb must be of type int, got '4G'"),
    ({'hosts': [{'name': 'a', 'wieght': 3}]}, r"hosts\[0\] has unknown key\(s\) wieght; known: address, memory_mb, name, uri, weight"),
    ({'hosts': [{'name': 'a', 'weight': '10'}]}, r"hosts\[0\]\.weight must be of type int, got '10'"),
    ({'hosts': [{'name': 'a', 'weight': True}]}, r'hosts\[0\]\.weight must be of type int, got True'),
    ({'hosts': [{'name': 'a', 'weight': 0}]}, r'host a: weight must be a positive integer'),
    ({'hosts': [{'name': 'a', 'weight': -5}]}, r'host a: weight must be a positive integer'),
    ({'hosts': [{'name': 5}]}, r'hosts\[0\]\.name must be of type str, got 5'),
    ({'hosts': ['a', {'name': 'b'}, {'name': 'a', 'weight': 3}]}, r'host a is listed twice'),
])
def test_validation_errors(data, message):
    with pytest.raises(ConfigError, match=message):
        config.validate(data, 'test.conf')


def test_validation_error_names_the_source(tmp_path):
    path = write_yaml(tmp_path / 'named.conf', {'hosts': []})
    with pytest.raises(ConfigError) as caught:
        config.load(path)
    assert str(caught.value).startswith(path + ': ')


def test_libvirt_port_out_of_range_is_refused():
    with pytest.raises(ConfigError, match='libvirt.port'):
        config.validate({'hosts': ['a'], 'libvirt': {'port': 70000}})


def test_host_lookup():
    cfg = config.validate({'hosts': ['a', 'b']}, 'x.conf')
    assert cfg.host('b').name == 'b'
    with pytest.raises(ConfigError, match=r"host 'c' is not in the configuration \(x\.conf\); known hosts: a, b"):
        cfg.host('c')


def test_uri_tls_by_default_port_unix_and_explicit():
    hosts = [{'name': 'kvm1', 'address': '10.0.0.1'}, {'name': 'kvm2'}, {'name': 'kvm3', 'uri': 'test:///default'}]
    cfg = config.validate({'hosts': hosts})
    assert cfg.uri(cfg.host('kvm1')) == 'qemu+tls://10.0.0.1/system?pkipath=/etc/maglica/pki/library'
    assert cfg.uri(cfg.host('kvm2')) == 'qemu+tls://kvm2/system?pkipath=/etc/maglica/pki/library', 'the address defaults to the name'
    assert cfg.uri(cfg.host('kvm3')) == 'test:///default', 'an explicit uri wins'
    cfg = config.validate({'hosts': hosts, 'libvirt': {'port': 16510, 'path': 'session', 'pki_path': '/p k&i'}})
    assert cfg.uri(cfg.host('kvm1')) == 'qemu+tls://10.0.0.1:16510/session?pkipath=/p%20k%26i'
    for transport in ('unix', ''):
        cfg = config.validate({'hosts': hosts, 'libvirt': {'transport': transport}})
        assert cfg.uri(cfg.host('kvm1')) == 'qemu:///system'
    cfg = config.validate({'hosts': hosts, 'libvirt': {'driver': 'lxc', 'transport': 'ssh'}})
    assert cfg.uri(cfg.host('kvm2')) == 'lxc+ssh://kvm2/system'
    cfg = config.validate({'hosts': hosts, 'libvirt': {'transport': 'tcp', 'insecure': True}})
    assert cfg.uri(cfg.host('kvm1')) == 'qemu+tcp://10.0.0.1/system'


def test_the_host_worker_reaches_its_own_libvirtd_over_the_local_socket():
    cfg = config.validate({'hosts': [{'name': 'kvm1', 'address': '10.0.0.1'}, {'name': 'kvm2', 'address': '10.0.0.2'}]})
    cfg.use_local_socket('kvm1')
    assert cfg.uri(cfg.host('kvm1')) == 'qemu:///system'
    assert cfg.uri(cfg.host('kvm2')) == 'qemu+tls://10.0.0.2/system?pkipath=/etc/maglica/pki/library', 'other hosts: tls'
    with pytest.raises(ConfigError, match='host .kvm9. is not in the configuration'):
        cfg.use_local_socket('kvm9')


def test_tcp_is_refused_unless_insecure_is_set():
    with pytest.raises(ConfigError, match=r'kvm1 \(qemu\+tcp://kvm1/system\): plain tcp has neither encryption nor authentication: '
                                          r'anyone who reaches its port can destroy every VM there.*insecure: true'):
        config.validate({'hosts': ['kvm1'], 'libvirt': {'transport': 'tcp'}})
    with pytest.raises(ConfigError, match=r'kvm2 \(qemu\+tcp://h2/system\)'):
        config.validate({'hosts': ['kvm1', {'name': 'kvm2', 'uri': 'qemu+tcp://h2/system'}]})
    cfg = config.validate({'hosts': ['kvm1'], 'libvirt': {'transport': 'tcp', 'insecure': True}})
    assert cfg.insecure_uris() == {'kvm1': 'qemu+tcp://kvm1/system'}
    # The test driver simulates hosts: no hypervisor behind it, so its tcp URIs are not refused.
    cfg = config.validate({'hosts': [{'name': 'sim', 'uri': 'test+tcp://127.0.0.1/default'}]})
    assert cfg.insecure_uris() == {}


def test_endpoints():
    cfg = config.validate({'hosts': ['a'], 'client': {'host': 'cw.example', 'pub_port': 6001, 'rep_port': 6002, 'bind': '127.0.0.1'}})
    assert cfg.endpoint('pub') == 'tcp://cw.example:6001'
    assert cfg.endpoint('rep') == 'tcp://cw.example:6002'
    assert cfg.bind_endpoint('pub') == 'tcp://127.0.0.1:6001'
    assert config.validate({'hosts': ['a']}).bind_endpoint('rep') == 'tcp://*:5556'


def test_two_client_workers_on_postgresql():
    cfg = config.validate({'hosts': ['a'], 'client': {'pub_port': 6001, 'rep_port': 6002, 'workers': [
        {'name': 'cw1', 'host': 'h1'}, {'name': 'cw2', 'host': 'h2', 'rep_port': 7002, 'bind': '10.0.0.2'}]},
        'joblog': {'backend': 'postgresql', 'dsn': 'host=db1,db2 dbname=maglica target_session_attrs=read-write'}})
    assert cfg.endpoints('rep') == ['tcp://h1:6002', 'tcp://h2:7002']
    assert cfg.endpoints('pub') == ['tcp://h1:6001', 'tcp://h2:6001']
    assert cfg.bind_endpoint('rep', 'cw2') == 'tcp://10.0.0.2:7002'
    with pytest.raises(ConfigError, match=r'names 2 client workers \(cw1, cw2\): say which one this is'):
        cfg.client_worker()
    with pytest.raises(ConfigError, match=r"client worker 'cw3' is not in the configuration"):
        cfg.client_worker('cw3')
    # One client worker, as before: named by its host.
    assert config.validate({'hosts': ['a'], 'client': {'host': 'cw'}}).client_worker().name == 'cw'


def test_several_client_workers_need_postgresql_in_the_client_worker_only():
    # The library and the host workers only connect: their configuration names the client workers, not the job log.
    cfg = config.validate({'hosts': ['a'], 'client': {'workers': [{'name': 'cw1', 'host': 'h1'}, {'name': 'cw2', 'host': 'h2'}]}})
    assert cfg.endpoints('rep') == ['tcp://h1:5556', 'tcp://h2:5556']
    with pytest.raises(ConfigError, match=r'2 client workers share one job log: set joblog.backend postgresql'):
        cfg.client_worker('cw1')


@pytest.mark.parametrize('data, message', [
    ({'joblog': {'backend': 'postgresql'}}, r'joblog.backend postgresql needs joblog.dsn'),
    ({'joblog': {'backend': 'mysql'}}, r"joblog.backend must be one of sqlite, postgresql, got 'mysql'"),
    ({'joblog': {'lease_s': 0}}, r'joblog.lease_s must be positive'),
    ({'client': {'workers': [{'name': 'cw1'}]}}, r'client.workers\[0\] needs a name and a host'),
    ({'client': {'workers': [{'name': 'cw1', 'host': 'h', 'port': 1}]}}, r'client.workers\[0\] has unknown key\(s\) port'),
    ({'client': {'workers': [{'name': 'c w', 'host': 'h'}]}}, r"client worker name 'c w' may only hold"),
    ({'client': {'workers': [{'name': 'a', 'host': 'h', 'rep_port': 70000}]}}, r'client.workers\[0\].rep_port must be a TCP port'),
    ({'client': {'workers': [{'name': 'a', 'host': 'h', 'rep_port': 5555}]}}, r'client worker a: pub_port and rep_port must differ'),
    ({'client': {'workers': [{'name': 'a', 'host': 'h'}, {'name': 'a', 'host': 'i'}]},
      'joblog': {'backend': 'postgresql', 'dsn': 'dbname=x'}}, r'client worker a is listed twice'),
])
def test_client_worker_and_joblog_errors(data, message):
    with pytest.raises(ConfigError, match=message):
        config.validate(dict(data, hosts=['a']))


def test_merge_does_not_change_its_inputs():
    base = {'client': {'host': 'a'}, 'hosts': ['x']}
    override = {'client': {'pub_port': 1}}
    merged = config.merge(base, override)
    assert merged == {'client': {'host': 'a', 'pub_port': 1}, 'hosts': ['x']}
    assert base == {'client': {'host': 'a'}, 'hosts': ['x']} and override == {'client': {'pub_port': 1}}


def test_inline_settings_without_hosts_still_read_the_default_file(tmp_path, monkeypatch):
    monkeypatch.setenv('MAGLICA_CONFIG', write_yaml(tmp_path / 'default.conf', {'hosts': ['from-default']}))
    cfg = config.load(None, {'client': {'host': 'inline-client'}})
    assert [h.name for h in cfg.hosts] == ['from-default'] and cfg.client['host'] == 'inline-client'


def test_target_names_checks_each_host_and_names_a_repeated_one_once():
    cfg = config.load(inline={'hosts': ['kvm1', 'kvm2', 'kvm3']})
    assert cfg.target_names() == ['kvm1', 'kvm2', 'kvm3'] and cfg.target_names([]) == ['kvm1', 'kvm2', 'kvm3']
    assert cfg.target_names(['kvm3', 'kvm1', 'kvm3']) == ['kvm3', 'kvm1']
    with pytest.raises(ConfigError, match="host 'kvm9' is not in the configuration .*known hosts: kvm1, kvm2, kvm3"):
        cfg.target_names(['kvm1', 'kvm9'])


# Issue 18, item 11: URIs are read the way libvirt reads them (viruri.c, remote_driver.c): the transport after the
# first '+' of the scheme, in any case; query parameters split at '&' (else ';'), %-decoded, names in any case.
@pytest.mark.parametrize('uri', ['qemu+TCP://kvm1/system', 'QEMU+Tcp://kvm1/system', 'qemu+tCp://kvm1:16509/system?x=1'])
def test_tcp_in_any_case_is_refused_unless_insecure_is_set(uri):
    with pytest.raises(ConfigError, match=r'kvm1 \(%s\).*neither encryption nor authentication.*insecure: true' % re.escape(uri)):
        config.validate({'hosts': [{'name': 'kvm1', 'uri': uri}]})
    cfg = config.validate({'hosts': [{'name': 'kvm1', 'uri': uri}], 'libvirt': {'insecure': True}})
    assert cfg.insecure_uris() == {'kvm1': uri}
    assert config.uri_transport(uri)[1] == 'tcp'


@pytest.mark.parametrize('query', ['no_verify=1', 'NO_VERIFY=1', 'No_Verify=2', 'no_verify=-1', 'no_verify=+1', 'no_verify=%31',
                                   'no%5Fverify=1', 'pkipath=/etc/p&no_verify=1', 'pkipath=/etc/p;no_verify=1',
                                   'no_verify=1&no_verify=0&no_verify=1', 'no_verify=yes', 'no_verify'])
def test_no_verify_is_refused_unless_insecure_is_set(query):
    uri = 'qemu+tls://kvm1/system?' + query
    with pytest.raises(ConfigError, match=r"(?i)kvm1 \(%s\).*no_verify.*does not check the host's identity.*insecure: true"
                                          % re.escape(uri)):
        config.validate({'hosts': [{'name': 'kvm1', 'uri': uri}]})
    cfg = config.validate({'hosts': [{'name': 'kvm1', 'uri': uri}], 'libvirt': {'insecure': True}})
    assert cfg.insecure_uris() == {'kvm1': uri}


@pytest.mark.parametrize('uri', ['qemu+libssh://kvm1/system?known_hosts_verify=ignore',
                                 'qemu+libssh2://kvm1/system?Known_Hosts_Verify=AUTO', 'qemu+ssh://kvm1/system?no_verify=1'])
def test_ssh_without_host_key_checking_is_refused_unless_insecure_is_set(uri):
    with pytest.raises(ConfigError, match=r"does not check the host's identity"):
        config.validate({'hosts': [{'name': 'kvm1', 'uri': uri}]})
    assert config.validate({'hosts': [{'name': 'kvm1', 'uri': uri}], 'libvirt': {'insecure': True}}).insecure_uris() == {'kvm1': uri}


@pytest.mark.parametrize('uri', ['qemu+tls://kvm1/system?no_verify=0', 'qemu+tls://kvm1/system?no_verify=00',
                                 'qemu+tls://kvm1/system?pkipath=/p&x_no_verify=1', 'qemu+ssh://kvm1/system?keyfile=/k',
                                 'qemu+libssh://kvm1/system?known_hosts_verify=normal', 'qemu://kvm1/system',
                                 'qemu+tls://kvm1/system#no_verify=1'])
def test_uris_that_check_the_host_are_accepted(uri):
    assert config.validate({'hosts': [{'name': 'kvm1', 'uri': uri}]}).insecure_uris() == {}


@pytest.mark.parametrize('uri', ['qemu+udp://kvm1/system', 'qemu+tls+tcp://kvm1/system', 'kvm1', 'qemu tls://kvm1/system'])
def test_a_uri_libvirt_would_not_read_as_written_is_refused(uri):
    with pytest.raises(ConfigError, match='kvm1'):
        config.validate({'hosts': [{'name': 'kvm1', 'uri': uri}], 'libvirt': {'insecure': True}})


def test_the_test_driver_is_exempt_only_by_its_exact_name():
    assert config.validate({'hosts': [{'name': 's', 'uri': 'test+TCP://127.0.0.1/default'}]}).insecure_uris() == {}
    with pytest.raises(ConfigError, match='neither encryption'):
        config.validate({'hosts': [{'name': 's', 'uri': 'TEST+tcp://127.0.0.1/default'}]})
