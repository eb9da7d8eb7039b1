# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""customize.py: the pure text rewrites of guest files (no appliance needed)."""

from __future__ import annotations

import pytest

from maglica import customize
from maglica.errors import MaglicaError

STATIC = {'mode': 'static', 'address': '192.0.2.10', 'prefix': 26, 'gateway': '192.0.2.1', 'dns': ['192.0.2.53', '192.0.2.54'],
          'domain': 'example.com'}


def dhcp(hostname='web1.example.com'):
    return customize.GuestSettings(hostname)


def static(hostname='web1.example.com', **network):
    return customize.GuestSettings(hostname, dict(STATIC, **network))


def test_guest_settings():
    settings = dhcp()
    assert settings.short == 'web1' and not settings.static and settings.network == {'mode': 'dhcp'}
    assert static().static and settings.ssh_authorized_keys == []


# -- /etc/hosts ------------------------------------------------------------

HOSTS = """127.0.0.1\tlocalhost
127.0.1.1\tdebian-image.example.com debian-image
10.1.1.1\tdebian-image
10.1.1.2\tdebian-image.lan
192.0.2.99\tgateway.example.com   # kept
::1\tlocalhost ip6-localhost ip6-loopback
"""


def test_hosts_file_dhcp():
    out = customize.hosts_file(HOSTS, dhcp(), 'debian-image.example.com')
    lines = out.splitlines()
    assert lines[0] == '127.0.0.1\tlocalhost'
    assert lines[1] == '127.0.1.1\tweb1.example.com web1'
    assert 'debian-image.example.com' not in out and '\tdebian-image\n' not in out, \
        'every line naming the old host (long or short name) is gone'
    assert '10.1.1.2\tdebian-image.lan' in lines, 'another name that only starts like the old one is kept'
    assert '192.0.2.99\tgateway.example.com   # kept' in lines
    assert '::1\tlocalhost ip6-localhost ip6-loopback' in lines
    assert out.endswith('\n')


def test_hosts_file_static_uses_the_address():
    before = HOSTS + '192.0.2.10\told-user-of-the-address\n'
    lines = customize.hosts_file(before, static(), None).splitlines()
    assert lines[1] == '192.0.2.10\tweb1.example.com web1'
    assert not any('old-user-of-the-address' in l for l in lines)
    assert not any(l.startswith('127.0.1.1') for l in lines)


def test_hosts_file_short_name_and_empty_file():
    assert customize.hosts_file(None, dhcp('web1'), None) == '127.0.0.1\tlocalhost\n127.0.1.1\tweb1\n'
    assert customize.hosts_file('', dhcp('web1'), 'unknown-old') == '127.0.0.1\tlocalhost\n127.0.1.1\tweb1\n'


# -- Debian ifupdown and dhclient --------------------------------------------------

INTERFACES = """# interfaces(5) file
source /etc/network/interfaces.d/*

auto lo eth0
iface lo inet loopback

allow-hotplug eth0
iface eth0 inet static
    address 10.0.0.5/24
    gateway 10.0.0.1

iface eth1 inet dhcp
"""


def test_debian_interfaces_dhcp():
    out = customize.debian_interfaces(INTERFACES, dhcp(), 'eth0')
    lines = out.splitlines()
    assert 'auto lo' in lines, 'the other interface of an `auto lo eth0` line is kept'
    assert 'auto lo eth0' not in lines and 'allow-hotplug eth0' not in lines
    assert 'iface lo inet loopback' in lines and 'iface eth1 inet dhcp' in lines
    assert 'source /etc/network/interfaces.d/*' in lines and '# interfaces(5) file' in lines
    assert '10.0.0.5' not in out and '10.0.0.1' not in out, "the old eth0 stanza's options are gone"
    assert out.endswith('\nauto eth0\niface eth0 inet dhcp\n    hostname web1\n')
    assert out.count('iface eth0') == 1


def test_debian_interfaces_static():
    out = customize.debian_interfaces(INTERFACES, static(), 'eth0')
    assert out.endswith('\n\nauto eth0\niface eth0 inet static\n    address 192.0.2.10/26\n    gateway 192.0.2.1\n'
                        '    dns-nameservers 192.0.2.53 192.0.2.54\n    dns-search example.com\n')
    assert out.count('iface eth0') == 1 and 'iface eth1 inet dhcp' in out


def test_debian_interfaces_static_minimal_and_new_device():
    settings = customize.GuestSettings('h', {'mode': 'static', 'address': '192.0.2.7'})
    out = customize.debian_interfaces('auto lo\niface lo inet loopback\n', settings, 'ens3')
    assert out == 'auto lo\niface lo inet loopback\n\nauto ens3\niface ens3 inet static\n    address 192.0.2.7/24\n'


def test_debian_interfaces_auto_line_with_only_the_device_is_dropped():
    out = customize.debian_interfaces('auto eth0 eth1\nauto eth0\niface eth0 inet6 auto\n', dhcp(), 'eth0')
    assert out.splitlines()[0] == 'auto eth1'
    assert out.count('auto eth0') == 1 and 'inet6' not in out


def test_debian_interfaces_is_idempotent():
    once = customize.debian_interfaces(INTERFACES, static(), 'eth0')
    assert customize.debian_interfaces(once, static(), 'eth0') == once


def test_dhclient_conf_replaces_the_host_name():
    before = 'option rfc3442 code 121 = array of integer 8;\nsend host-name = gethostname();\nrequest subnet-mask;\n'
    out = customize.dhclient_conf(before, dhcp())
    assert out == 'option rfc3442 code 121 = array of integer 8;\nsend host-name = "web1.example.com";\nrequest subnet-mask;\n'


def test_dhclient_conf_appends_when_missing():
    assert customize.dhclient_conf('request subnet-mask;', dhcp()) == 'request subnet-mask;\nsend host-name = "web1.example.com";\n'
    assert customize.dhclient_conf(None, dhcp()) == 'send host-name = "web1.example.com";\n'


# -- RHEL ifcfg and NetworkManager ---------------------------------------------------

IFCFG = """TYPE=Ethernet
BOOTPROTO=dhcp
DEVICE=eth0
HWADDR=52:54:00:aa:bb:cc
UUID=5fb06bd0-0bb0-7ffb-45f1-d6edd65f3e03
ONBOOT=no
"""


def test_ifcfg_dhcp():
    out = customize.ifcfg(IFCFG, dhcp())
    lines = out.splitlines()
    assert 'HWADDR' not in out and 'UUID' not in out
    assert 'ONBOOT=yes' in lines and 'ONBOOT=no' not in lines
    assert 'BOOTPROTO=dhcp' in lines and 'DHCP_HOSTNAME=web1.example.com' in lines
    assert 'DEVICE=eth0' in lines and 'TYPE=Ethernet' in lines


def test_ifcfg_static():
    before = IFCFG + 'DHCP_HOSTNAME=old\nIPADDR=10.0.0.5\nNETMASK=255.255.255.0\nDNS1=10.0.0.53\nMACADDR=52:54:00:00:00:01\n'
    out = customize.ifcfg(before, static())
    lines = out.splitlines()
    for expected in ('BOOTPROTO=none', 'IPADDR=192.0.2.10', 'PREFIX=26', 'GATEWAY=192.0.2.1', 'DNS1=192.0.2.53',
                     'DNS2=192.0.2.54', 'ONBOOT=yes', 'DEVICE=eth0'):
        assert expected in lines, expected
    for gone in ('DHCP_HOSTNAME', 'NETMASK', '10.0.0.5', '10.0.0.53', 'HWADDR', 'UUID', 'MACADDR'):
        assert gone not in out, gone
    assert out.count('IPADDR=') == 1


KEYFILE = """[connection]
id=Wired connection 1
uuid=3c1c6ad2-8c0e-4b09-9e4b-2d8a2f7a8e3b
type=ethernet
interface-name=eth0

[ethernet]
mac-address=52:54:00:AA:BB:CC
mtu=1500

[ipv4]
method=manual
address1=10.0.0.5/24,10.0.0.1
dns=10.0.0.53;

[ipv6]
method=auto
"""


def test_nm_keyfile_dhcp():
    out = customize.nm_keyfile(KEYFILE, dhcp())
    assert 'mac-address' not in out and 'mtu=1500' in out
    ipv4 = section(out, 'ipv4')
    assert 'method=auto' in ipv4 and 'dhcp-hostname=web1.example.com' in ipv4
    assert section(out, 'ipv6') == ['method=auto']
    assert 'id=Wired connection 1' in section(out, 'connection')
    assert [l for l in out.splitlines() if l.startswith('[')] == ['[connection]', '[ethernet]', '[ipv4]', '[ipv6]']


def test_nm_keyfile_static():
    ipv4 = section(customize.nm_keyfile(KEYFILE, static()), 'ipv4')
    assert sorted(ipv4) == sorted(['method=manual', 'address1=192.0.2.10/26,192.0.2.1', 'dns=192.0.2.53;192.0.2.54;'])


def test_nm_keyfile_adds_ipv4_and_keeps_leading_lines():
    out = customize.nm_keyfile('# made by hand\n[connection]\nid=x\n[802-3-ethernet]\nmac-address=aa\n', dhcp('h'))
    assert out.startswith('# made by hand\n')
    assert 'mac-address' not in out
    assert section(out, 'ipv4') == ['method=auto', 'dhcp-hostname=h']


def section(text, name):
    """The non-empty lines of an ini section."""
    lines, inside = [], False
    for line in text.splitlines():
        if line.startswith('['):
            inside = line == '[%s]' % name
        elif inside and line.strip():
            lines.append(line)
    return lines


# -- shadow, keys, netplan ---------------------------------------------------------

SHADOW = 'root:*:19000:0:99999:7:::\ndaemon:*:19000:0:99999:7:::\n'


def test_shadow_sets_the_root_hash():
    out = customize.shadow(SHADOW, '$6$salt$abc')
    assert out == 'root:$6$salt$abc:19000:0:99999:7:::\ndaemon:*:19000:0:99999:7:::\n'


def test_shadow_without_root_is_an_error():
    with pytest.raises(MaglicaError, match='no root entry'):
        customize.shadow('daemon:*:19000:0:99999:7:::\nrootless:*:1::::::\n', '$6$x')


def test_set_key():
    assert customize.set_key('A=1\nB=2\n', 'B', '3') == 'A=1\nB=3\n'
    assert customize.set_key('A=1', 'B', '3') == 'A=1\nB=3\n'
    assert customize.set_key('', 'B', '3') == 'B=3\n'
    assert customize.set_key('  B = old\n', 'B', 'x', quote='"') == 'B="x"\n'
    assert customize.set_key('AB=1\n', 'B', '2') == 'AB=1\nB=2\n', 'a key that ends with the name is another key'
    assert customize.set_key('B=1\n', 'B', r'a\1b') == 'B=a\\1b\n', 'backslashes are written as they are'
    assert customize.set_key('B=1\nB=2\n', 'B', '3') == 'B=3\nB=2\n'


def test_drop_keys():
    assert customize.drop_keys('A=1\nHWADDR=x\n  UUID = y\nHWADDRESS_NOTE=z\n', ('HWADDR', 'UUID')) == 'A=1\nHWADDRESS_NOTE=z\n'


def test_netplan_dhcp_and_static():
    assert customize.netplan(dhcp(), 'ens3') == (
        '# Written by maglica for web1.example.com\nnetwork:\n  version: 2\n  ethernets:\n    ens3:\n'
        '      dhcp4: true\n      dhcp4-overrides: {hostname: web1.example.com}\n')
    out = customize.netplan(static(), 'eth0')
    assert out.endswith('    eth0:\n      addresses: [192.0.2.10/26]\n      routes: [{to: default, via: 192.0.2.1}]\n'
                        '      nameservers: {addresses: [192.0.2.53, 192.0.2.54]}\n')
    assert 'dhcp4' not in out


def test_netplan_is_valid_yaml():
    yaml = pytest.importorskip('yaml')
    data = yaml.safe_load(customize.netplan(static(), 'eth0'))
    assert data['network']['ethernets']['eth0']['addresses'] == ['192.0.2.10/26']
    assert data['network']['ethernets']['eth0']['routes'] == [{'to': 'default', 'via': '192.0.2.1'}]


def test_interface_name():
    assert customize.interface_name(None, customize.GuestSettings('h', {'mode': 'dhcp', 'device': 'ens5'}), ['eth0']) == 'ens5'
    assert customize.interface_name(None, dhcp(), ['lo', 'enp1s0']) == 'enp1s0'
    assert customize.interface_name(None, dhcp(), ['lo']) == 'eth0'
