# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Whatever the validator accepts, every guest file we write parses back to exactly the given settings (issue 10, item 3).

Each file is read by its real consumer, or the closest thing that runs here:
bash `source` for ifcfg, `ifquery` (Debian's ifupdown) for /etc/network/interfaces,
PyYAML for netplan, an INI reader for NetworkManager keyfiles, and the field
layout of /etc/shadow and /etc/hosts. No value may add a line, a key or a field.

Values are drawn from the validator's own grammar and, one field at a time,
from hostile variants of it (newlines, quotes, `$(...)`, scope ids, IPv6,
any text): those the validator refuses are counted and skipped.
"""

from __future__ import annotations

import configparser
import ipaddress
import os
import shutil
import subprocess
import tempfile

import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings, strategies as st

from maglica.host import customize
from maglica.protocol import messages
from maglica.errors import MessageError
from maglica.host import guest_network
from maglica.host import guest

settings.register_profile('maglica-unit', deadline=None, max_examples=50, database=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
settings.load_profile('maglica-unit')
IFQUERY = shutil.which('ifquery') or '/usr/sbin/ifquery'
JOB_ID = '0123456789abcdef0123456789abcdef'

IFCFG_BEFORE = ('TYPE=Ethernet\nBOOTPROTO=dhcp\nNAME="System eth0"\nDEVICE=eth0\nONBOOT=no\nHWADDR=52:54:00:12:34:56\n'
                'UUID=5fb06bd0-0bb0-7ffb-45f1-d6edd65f3e03\n')
NM_BEFORE = """[connection]
id=Wired connection 1
uuid=5fb06bd0-0bb0-7ffb-45f1-d6edd65f3e03
type=ethernet
interface-name=eth0

[ethernet]
mac-address=52:54:00:12:34:56

[ipv4]
method=auto

[ipv6]
addr-gen-mode=default
method=auto
"""
INTERFACES_BEFORE = """source /etc/network/interfaces.d/*

auto lo
iface lo inet loopback

allow-hotplug eth0
iface eth0 inet dhcp
"""
SHADOW_BEFORE = 'root:*:19000:0:99999:7:::\ndaemon:*:19000:0:99999:7:::\nuser:$6$abc$def:19000:0:99999:7:::\n'
HOSTS_BEFORE = '127.0.0.1\tlocalhost\n127.0.1.1\tdebian-image.example.com debian-image\n::1\tlocalhost ip6-localhost ip6-loopback\n'
# What a hostile user appends to, or puts around, a value the grammar made.
HOSTILE = ['\n', '\n up touch /pwned', '\r', '\0', ' ', '\t', '"', "'", '$(reboot)', '`id`', ';', '#', ':', '%eth0', '%x\n up sh',
           '\\', '\x0b', '\u2028', '\u0085', ',', '/', '=', '[x]', '{a: b}', '- x']


# -- strategies: the validator's grammar, and hostile variants of it ----------

names = st.from_regex(messages.NAME_RE, fullmatch=True).filter(lambda s: len(s) <= 253)
devices = st.from_regex(r'[A-Za-z0-9][A-Za-z0-9_.+-]{0,14}', fullmatch=True)
label = st.from_regex(r'[A-Za-z0-9]([A-Za-z0-9-]{0,10}[A-Za-z0-9])?', fullmatch=True)
domains = st.builds(lambda labels, dot: '.'.join(labels) + dot, st.lists(label, min_size=1, max_size=4), st.sampled_from(['', '.']))
ipv4 = st.ip_addresses(v=4).map(str)
hashes = st.from_regex(messages.PASSWORD_HASH_RE, fullmatch=True)
keys = st.from_regex(messages.ONE_LINE_RE, fullmatch=True)


def hostile(grammar):
    """Values near the grammar: a grammar value with something hostile before, inside or after it, or any text."""
    def spoil(value, bad, where):
        cut = {'before': 0, 'after': len(value), 'inside': len(value) // 2}[where]
        return value[:cut] + bad + value[cut:]
    # A trailing newline gets a branch of its own: `^...$` patterns let exactly that through.
    return st.one_of(grammar, grammar.map(lambda value: value + '\n'),
                     st.builds(spoil, grammar, st.sampled_from(HOSTILE), st.sampled_from(['before', 'after', 'inside'])),
                     st.text(max_size=30))


addresses_hostile = st.one_of(hostile(ipv4), st.ip_addresses(v=6).map(str),
                              st.builds(lambda a, scope: '%s%%%s' % (a, scope), st.ip_addresses(v=6).map(str), st.text(max_size=20)),
                              st.ip_addresses(v=6).map(lambda a: a.exploded.upper()))


@st.composite
def clone_args(draw, hostile_field=None):
    """vm.clone arguments from the grammar; `hostile_field` (if given) drawn from its hostile variants."""
    def pick(field, grammar, spoiled=None):
        return draw(spoiled if spoiled is not None and field == hostile_field else grammar)
    mode = draw(st.sampled_from(['dhcp', 'static']))
    network = {'mode': mode}
    if draw(st.booleans()) or hostile_field == 'device':
        network['device'] = pick('device', devices, hostile(devices))
    if mode == 'static':
        network['address'] = pick('address', ipv4, addresses_hostile)
        network['prefix'] = draw(st.integers(0, 32) if hostile_field != 'prefix' else st.integers(-5, 200))
        if draw(st.booleans()) or hostile_field == 'gateway':
            network['gateway'] = pick('gateway', ipv4, addresses_hostile)
        if draw(st.booleans()) or hostile_field == 'dns':
            network['dns'] = draw(st.lists(ipv4 if hostile_field != 'dns' else addresses_hostile, min_size=1, max_size=3))
    if draw(st.booleans()) or hostile_field == 'domain':
        network['domain'] = pick('domain', domains, hostile(domains))
    args = {'image': 'debian', 'hostname': pick('hostname', names, hostile(names)), 'clone_mode': 'full', 'start': True,
            'network': network}
    if draw(st.booleans()) or hostile_field == 'root_password_hash':
        args['root_password_hash'] = pick('root_password_hash', hashes, hostile(hashes))
    if draw(st.booleans()) or hostile_field == 'ssh_authorized_keys':
        args['ssh_authorized_keys'] = draw(st.lists(keys if hostile_field != 'ssh_authorized_keys' else hostile(keys), min_size=1, max_size=3))
    return args


def accepted(args):
    """The arguments as the validator hands them on, or None when it refuses them."""
    try:
        return messages.validate_job({'id': JOB_ID, 'host': 'kvm1', 'action': 'vm.clone', 'args': args})['args']
    except MessageError:
        return None


# -- the real consumers -------------------------------------------------------

def write_temp(text):
    handle = tempfile.NamedTemporaryFile('w', suffix='.guestfile', delete=False, encoding='utf-8')
    with handle:
        handle.write(text)
    return handle.name


BASH_ENV = None


def bash_source(text):
    """The variables `source FILE` sets or changes in a bare bash; it must run cleanly (no error, nothing on stderr)."""
    global BASH_ENV
    script = 'set -a; source "$1" || exit 99; set +a; env -0'

    def run(path):
        done = subprocess.run(['bash', '--noprofile', '--norc', '-c', script, 'bash', path], env={'PATH': '/usr/bin:/bin'},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=False)
        assert done.returncode == 0 and done.stderr == b'', done.stderr
        return dict(item.decode('utf-8', 'surrogateescape').split('=', 1) for item in done.stdout.split(b'\0') if item)
    if BASH_ENV is None:
        empty = write_temp('')
        try:
            BASH_ENV = run(empty)
        finally:
            os.unlink(empty)
    path = write_temp(text)
    try:
        variables = run(path)
    finally:
        os.unlink(path)
    return {k: v for k, v in variables.items() if BASH_ENV.get(k) != v}


def ifquery(text, device):
    """(auto interfaces, {option: value} of DEVICE) as ifupdown reads the file."""
    path = write_temp(text)
    try:
        listed = subprocess.run([IFQUERY, '-i', path, '--list'], stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=False)
        query = subprocess.run([IFQUERY, '-i', path, device], stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=False)
    finally:
        os.unlink(path)
    assert listed.returncode == 0 and query.returncode == 0, (listed.stderr, query.stderr)
    options = {}
    for line in query.stdout.decode('utf-8').splitlines():
        key, value = line.split(': ', 1)
        assert key not in options, 'option %s twice' % key
        options[key] = value
    return listed.stdout.decode('utf-8').split(), options


def ini(text):
    """A NetworkManager keyfile as {section: {key: value}}: duplicate sections or keys are errors, as in GKeyFile."""
    parser = configparser.RawConfigParser(delimiters=('=',), comment_prefixes=('#',), inline_comment_prefixes=None,
                                          strict=True, empty_lines_in_values=False, interpolation=None)
    parser.optionxform = str
    parser.read_string(text)
    return {name: dict(parser[name]) for name in parser.sections()}


# -- the property -------------------------------------------------------------

def check_guest_files(args):
    settings_ = guest.GuestSettings(args['hostname'], args.get('network'), args.get('root_password_hash'),
                                    args.get('ssh_authorized_keys'))
    net = settings_.network
    static = net['mode'] == 'static'
    prefix = net.get('prefix', 24)
    device = net.get('device') or 'eth0'

    # RHEL ifcfg, sourced by bash: exactly the image's kept keys and ours.
    expected = {'TYPE': 'Ethernet', 'NAME': 'System eth0', 'DEVICE': 'eth0', 'ONBOOT': 'yes'}
    if static:
        expected.update(BOOTPROTO='none', IPADDR=net['address'], PREFIX=str(prefix))
        if net.get('gateway'):
            expected['GATEWAY'] = net['gateway']
        expected.update(('DNS%d' % i, server) for i, server in enumerate(net.get('dns') or [], 1))
    else:
        expected.update(BOOTPROTO='dhcp', DHCP_HOSTNAME=args['hostname'])
    assert bash_source(guest_network.ifcfg(IFCFG_BEFORE, settings_)) == expected

    # NetworkManager keyfile.
    keyfile = ini(guest_network.nm_keyfile(NM_BEFORE, settings_))
    if static:
        gateway = ',%s' % net['gateway'] if net.get('gateway') else ''
        ipv4 = {'method': 'manual', 'address1': '%s/%d%s' % (net['address'], prefix, gateway)}
        if net.get('dns'):
            ipv4['dns'] = ';'.join(net['dns']) + ';'
        if net.get('domain'):
            ipv4['dns-search'] = net['domain'] + ';'
    else:
        ipv4 = {'method': 'auto', 'dhcp-hostname': args['hostname'], 'dhcp-send-hostname': 'true'}
    before = ini(NM_BEFORE)
    assert keyfile == dict(before, ethernet={}, ipv4=ipv4)

    # Debian ifupdown, read by ifquery.
    interfaces = guest_network.debian_interfaces(INTERFACES_BEFORE, settings_, device)
    auto, options = ifquery(interfaces, device)
    assert sorted(auto) == sorted(set(['lo', device])), interfaces
    if static:
        network = ipaddress.ip_network('%s/%d' % (net['address'], prefix), strict=False)
        want = {'address': net['address'], 'netmask': str(network.netmask)}
        if net.get('gateway'):
            want['gateway'] = net['gateway']
        if net.get('dns'):
            want['dns-nameservers'] = ' '.join(net['dns'])
        if net.get('domain'):
            want['dns-search'] = net['domain']
        options.pop('broadcast', None)  # ifupdown's own, computed from address and netmask
        assert options == want, interfaces
    else:
        assert options == {'hostname': settings_.short}, interfaces

    # /etc/shadow: root's hash set, every line keeps its 9 fields, no line added.
    if args.get('root_password_hash'):
        after = customize.shadow(SHADOW_BEFORE, args['root_password_hash']).split('\n')
        assert after[-1] == '' and len(after) - 1 == len(SHADOW_BEFORE.splitlines())
        rows = [line.split(':') for line in after[:-1]]
        assert all(len(row) == 9 for row in rows)
        assert rows[0][:2] == ['root', args['root_password_hash']] and rows[0][2:] == SHADOW_BEFORE.splitlines()[0].split(':')[2:]
        assert [':'.join(row) for row in rows[1:]] == SHADOW_BEFORE.splitlines()[1:]

    # /etc/hosts: one line names the clone, with its address; every other line is one the file had.
    hosts = customize.hosts_file(HOSTS_BEFORE, settings_, 'debian-image.example.com').split('\n')
    assert hosts[-1] == ''
    ours = [line.split() for line in hosts[:-1] if args['hostname'] in line.split()[1:]]
    names = [args['hostname']] if settings_.short == args['hostname'] else [args['hostname'], settings_.short]
    assert ours == [[net['address'] if static else '127.0.1.1'] + names]
    others = [line for line in hosts[:-1] if args['hostname'] not in line.split()[1:]]
    assert set(others) <= set(HOSTS_BEFORE.splitlines()) | {'127.0.0.1\tlocalhost'}

    # authorized_keys: sshd reads one key a line.
    if args.get('ssh_authorized_keys'):
        text = '\n'.join(k.strip() for k in args['ssh_authorized_keys']) + '\n'
        assert text.split('\n')[:-1] == [k.strip() for k in args['ssh_authorized_keys']]
        assert all(k.strip() for k in args['ssh_authorized_keys']), 'a blank key line'


def check_netplan(args):
    settings_ = guest.GuestSettings(args['hostname'], args.get('network'))
    net = settings_.network
    device = net.get('device') or 'eth0'
    loaded = yaml.safe_load(guest_network.netplan(settings_, device))
    assert loaded['network']['version'] == 2 and list(loaded['network']['ethernets']) == [device]
    ethernet = loaded['network']['ethernets'][device]
    if net['mode'] == 'static':
        assert ethernet['addresses'] == ['%s/%d' % (net['address'], net.get('prefix', 24))]
        assert [r['via'] for r in ethernet.get('routes', [])] == ([net['gateway']] if net.get('gateway') else [])
        assert (ethernet.get('nameservers') or {}).get('addresses', []) == (net.get('dns') or [])
    else:
        assert ethernet['dhcp4'] is True and ethernet['dhcp4-overrides']['hostname'] == args['hostname']


FIELDS = ['hostname', 'device', 'address', 'prefix', 'gateway', 'dns', 'domain', 'root_password_hash', 'ssh_authorized_keys']


@given(clone_args())
def test_accepted_settings_parse_back_exactly_from_every_guest_file(args):
    valid = accepted(args)
    assert valid is not None, 'the grammar made a value the validator refuses: %r' % (args,)
    check_guest_files(valid)


@pytest.mark.parametrize('field', FIELDS)
@given(data=st.data())
def test_hostile_values_are_refused_or_parse_back_exactly(field, data):
    args = data.draw(clone_args(hostile_field=field))
    valid = accepted(args)
    event('refused' if valid is None else 'accepted')
    if valid is not None:
        check_guest_files(valid)


@given(clone_args())
def test_accepted_settings_parse_back_exactly_from_netplan(args):
    valid = accepted(args)
    assert valid is not None
    check_netplan(valid)
