# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""customize.py: the pure text rewrites of guest files (no appliance needed)."""

from __future__ import annotations

import pytest

from maglica.host import cloudinit
from maglica.host import customize
from maglica.errors import MaglicaError
from maglica.host import guest_network
from maglica.host import guest

STATIC = {'mode': 'static', 'address': '192.0.2.10', 'prefix': 26, 'gateway': '192.0.2.1', 'dns': ['192.0.2.53', '192.0.2.54'],
          'domain': 'example.com'}


def dhcp(hostname='web1.example.com'):
    return guest.GuestSettings(hostname)


def static(hostname='web1.example.com', **network):
    return guest.GuestSettings(hostname, dict(STATIC, **network))


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
    out = guest_network.debian_interfaces(INTERFACES, dhcp(), 'eth0')
    lines = out.splitlines()
    assert 'auto lo' in lines, 'the other interface of an `auto lo eth0` line is kept'
    assert 'auto lo eth0' not in lines and 'allow-hotplug eth0' not in lines
    assert 'iface lo inet loopback' in lines and 'iface eth1 inet dhcp' in lines
    assert 'source /etc/network/interfaces.d/*' in lines and '# interfaces(5) file' in lines
    assert '10.0.0.5' not in out and '10.0.0.1' not in out, "the old eth0 stanza's options are gone"
    assert out.endswith('\nauto eth0\niface eth0 inet dhcp\n    hostname web1\n')
    assert out.count('iface eth0') == 1


def test_debian_interfaces_static():
    out = guest_network.debian_interfaces(INTERFACES, static(), 'eth0')
    assert out.endswith('\n\nauto eth0\niface eth0 inet static\n    address 192.0.2.10/26\n    gateway 192.0.2.1\n'
                        '    dns-nameservers 192.0.2.53 192.0.2.54\n    dns-search example.com\n')
    assert out.count('iface eth0') == 1 and 'iface eth1 inet dhcp' in out


def test_debian_interfaces_static_minimal_and_new_device():
    settings = guest.GuestSettings('h', {'mode': 'static', 'address': '192.0.2.7'})
    out = guest_network.debian_interfaces('auto lo\niface lo inet loopback\n', settings, 'ens3')
    assert out == 'auto lo\niface lo inet loopback\n\nauto ens3\niface ens3 inet static\n    address 192.0.2.7/24\n'


def test_debian_interfaces_auto_line_with_only_the_device_is_dropped():
    out = guest_network.debian_interfaces('auto eth0 eth1\nauto eth0\niface eth0 inet6 auto\n', dhcp(), 'eth0')
    assert out.splitlines()[0] == 'auto eth1'
    assert out.count('auto eth0') == 1 and 'inet6' not in out


def test_debian_interfaces_is_idempotent():
    once = guest_network.debian_interfaces(INTERFACES, static(), 'eth0')
    assert guest_network.debian_interfaces(once, static(), 'eth0') == once


def test_dhclient_conf_replaces_the_host_name():
    before = 'option rfc3442 code 121 = array of integer 8;\nsend host-name = gethostname();\nrequest subnet-mask;\n'
    out = guest_network.dhclient_conf(before, dhcp())
    assert out == 'option rfc3442 code 121 = array of integer 8;\nsend host-name = "web1.example.com";\nrequest subnet-mask;\n'


def test_dhclient_conf_appends_when_missing():
    assert guest_network.dhclient_conf('request subnet-mask;', dhcp()) == 'request subnet-mask;\nsend host-name = "web1.example.com";\n'
    assert guest_network.dhclient_conf(None, dhcp()) == 'send host-name = "web1.example.com";\n'


# -- RHEL ifcfg and NetworkManager ---------------------------------------------------

IFCFG = """TYPE=Ethernet
BOOTPROTO=dhcp
DEVICE=eth0
HWADDR=52:54:00:aa:bb:cc
UUID=5fb06bd0-0bb0-7ffb-45f1-d6edd65f3e03
ONBOOT=no
"""


def test_ifcfg_dhcp():
    out = guest_network.ifcfg(IFCFG, dhcp())
    lines = out.splitlines()
    assert 'HWADDR' not in out and 'UUID' not in out
    assert 'ONBOOT=yes' in lines and 'ONBOOT=no' not in lines
    assert 'BOOTPROTO=dhcp' in lines and 'DHCP_HOSTNAME=web1.example.com' in lines
    assert 'DEVICE=eth0' in lines and 'TYPE=Ethernet' in lines


def test_ifcfg_static():
    before = IFCFG + 'DHCP_HOSTNAME=old\nIPADDR=10.0.0.5\nNETMASK=255.255.255.0\nDNS1=10.0.0.53\nMACADDR=52:54:00:00:00:01\n'
    out = guest_network.ifcfg(before, static())
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
    out = guest_network.nm_keyfile(KEYFILE, dhcp())
    assert 'mac-address' not in out and 'mtu=1500' in out
    ipv4 = section(out, 'ipv4')
    assert 'method=auto' in ipv4 and 'dhcp-hostname=web1.example.com' in ipv4
    assert section(out, 'ipv6') == ['method=auto']
    assert 'id=Wired connection 1' in section(out, 'connection')
    assert [l for l in out.splitlines() if l.startswith('[')] == ['[connection]', '[ethernet]', '[ipv4]', '[ipv6]']


def test_nm_keyfile_static():
    ipv4 = section(guest_network.nm_keyfile(KEYFILE, static()), 'ipv4')
    assert sorted(ipv4) == sorted(['method=manual', 'address1=192.0.2.10/26,192.0.2.1', 'dns=192.0.2.53;192.0.2.54;',
                                   'dns-search=example.com;'])


def test_nm_keyfile_dhcp_drops_a_static_address_and_sends_the_name():
    ipv4 = section(guest_network.nm_keyfile(KEYFILE, dhcp()), 'ipv4')
    assert sorted(ipv4) == sorted(['method=auto', 'dhcp-hostname=web1.example.com', 'dhcp-send-hostname=true', 'dns=10.0.0.53;'])


def test_new_keyfile_for_a_device_is_a_complete_profile():
    out = guest_network.nm_keyfile(guest_network.new_keyfile('ens3'), dhcp())
    connection = section(out, 'connection')
    assert 'type=ethernet' in connection and 'interface-name=ens3' in connection and 'id=ens3' in connection
    assert any(l.startswith('uuid=') and len(l) == 41 for l in connection)
    assert section(out, 'ipv4') == ['method=auto', 'dhcp-hostname=web1.example.com', 'dhcp-send-hostname=true']
    assert guest_network.keyfile_device(out) == ('ens3', 'ethernet')
    assert guest_network.new_keyfile('ens3') != guest_network.new_keyfile('ens3'), 'every profile gets its own uuid'


def test_nm_keyfile_adds_ipv4_and_keeps_leading_lines():
    out = guest_network.nm_keyfile('# made by hand\n[connection]\nid=x\n[802-3-ethernet]\nmac-address=aa\n', dhcp('h'))
    assert out.startswith('# made by hand\n')
    assert 'mac-address' not in out
    assert section(out, 'ipv4') == ['method=auto', 'dhcp-hostname=h', 'dhcp-send-hostname=true']


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
    assert guest.set_key('A=1\nB=2\n', 'B', '3') == 'A=1\nB=3\n'
    assert guest.set_key('A=1', 'B', '3') == 'A=1\nB=3\n'
    assert guest.set_key('', 'B', '3') == 'B=3\n'
    assert guest.set_key('  B = old\n', 'B', 'x', quote='"') == 'B="x"\n'
    assert guest.set_key('AB=1\n', 'B', '2') == 'AB=1\nB=2\n', 'a key that ends with the name is another key'
    assert guest.set_key('B=1\n', 'B', r'a\1b') == 'B=a\\1b\n', 'backslashes are written as they are'
    assert guest.set_key('B=1\nB=2\n', 'B', '3') == 'B=3\nB=2\n'


def test_drop_keys():
    assert guest.drop_keys('A=1\nHWADDR=x\n  UUID = y\nHWADDRESS_NOTE=z\n', ('HWADDR', 'UUID')) == 'A=1\nHWADDRESS_NOTE=z\n'


def test_netplan_dhcp_and_static():
    yaml = pytest.importorskip('yaml')
    text = guest_network.netplan(dhcp(), 'ens3')
    assert text.startswith('# Written by maglica for web1.example.com\n')
    assert yaml.safe_load(text) == {'network': {'version': 2, 'ethernets': {'ens3': {
        'dhcp4': True, 'dhcp4-overrides': {'hostname': 'web1.example.com'}}}}}
    data = yaml.safe_load(guest_network.netplan(static(), 'eth0'))
    assert data == {'network': {'version': 2, 'ethernets': {'eth0': {
        'addresses': ['192.0.2.10/26'], 'routes': [{'to': '0.0.0.0/0', 'via': '192.0.2.1'}],
        'nameservers': {'addresses': ['192.0.2.53', '192.0.2.54'], 'search': ['example.com']}}}}}


def test_netplan_static_ipv6_gateway_and_minimal():
    yaml = pytest.importorskip('yaml')
    settings = guest.GuestSettings('h', {'mode': 'static', 'address': '2001:db8::5', 'prefix': 64, 'gateway': '2001:db8::1'})
    eth = yaml.safe_load(guest_network.netplan(settings, 'eth0'))['network']['ethernets']['eth0']
    assert eth == {'addresses': ['2001:db8::5/64'], 'routes': [{'to': '::/0', 'via': '2001:db8::1'}]}
    minimal = guest.GuestSettings('h', {'mode': 'static', 'address': '192.0.2.7'})
    assert yaml.safe_load(guest_network.netplan(minimal, 'eth0'))['network']['ethernets']['eth0'] == {'addresses': ['192.0.2.7/24']}


@pytest.mark.parametrize('hostname', ['null', 'on', 'yes', 'no', 'off', 'true', '1e3', '010', '0x1f', '1_000', 'y', 'n',
                                      'nan', 'inf', '12', '1.5', 'null.example.com', 'on.off'])
def test_netplan_and_cloud_init_files_keep_a_hostname_yaml_would_misread(hostname):
    """A hostname the validator accepts must read back as the same string (the old hand-written YAML made `null` None)."""
    yaml = pytest.importorskip('yaml')
    settings = guest.GuestSettings(hostname)
    netplan = yaml.safe_load(guest_network.netplan(settings, 'eth0'))
    assert netplan['network']['ethernets']['eth0']['dhcp4-overrides']['hostname'] == hostname
    meta = yaml.safe_load(cloudinit.meta_data(settings, 'iid-1'))
    assert meta == {'instance-id': 'iid-1', 'local-hostname': hostname}
    user = yaml.safe_load(cloudinit.user_data(settings))
    assert user['fqdn'] == hostname and user['hostname'] == hostname.split('.')[0]


def test_network_config_is_the_netplan_of_the_same_settings():
    """cloud-init's network-config and the offline netplan file come from one function: they cannot disagree."""
    yaml = pytest.importorskip('yaml')
    for settings in (dhcp(), static()):
        config = guest_network.netplan_config(settings, 'eth0')
        assert yaml.safe_load(guest_network.netplan(settings, 'eth0')) == {'network': config}
        assert config['version'] == 2 and list(config['ethernets']) == ['eth0']


def test_netplan_without_removes_only_the_device():
    yaml = pytest.importorskip('yaml')
    text = 'network:\n  version: 2\n  renderer: NetworkManager\n  ethernets:\n    eth0: {dhcp4: true}\n    eth1: {dhcp4: false}\n'
    assert yaml.safe_load(guest_network.netplan_without(text, 'eth0')) == {
        'network': {'version': 2, 'renderer': 'NetworkManager', 'ethernets': {'eth1': {'dhcp4': False}}}}
    assert guest_network.netplan_without(text, 'eth9') is None, 'a file without the device is left alone'
    assert guest_network.netplan_without('network: [unclosed', 'eth0') is None, 'an unreadable file is left alone'
    assert guest_network.netplan_without('- a list\n', 'eth0') is None


# -- ifupdown with cloud-init ------------------------------------------------------------

def test_debian_interfaces_without_the_stanza():
    out = guest_network.debian_interfaces(INTERFACES, dhcp(), 'eth0', stanza=False)
    assert 'eth0' not in out and 'iface lo inet loopback' in out and 'iface eth1 inet dhcp' in out
    assert guest_network.debian_interfaces('auto eth0\niface eth0 inet dhcp\n', dhcp(), 'eth0', stanza=False) == ''


def test_debian_interfaces_of_an_empty_file_has_no_leading_blank_line():
    assert guest_network.debian_interfaces('', dhcp('h'), 'eth0') == 'auto eth0\niface eth0 inet dhcp\n    hostname h\n'


def test_interfaces_devices_and_sources():
    assert guest_network.interfaces_devices(INTERFACES) == ['lo', 'eth0', 'eth1']
    assert guest_network.interfaces_devices('iface eth0 inet6 auto\n') == ['eth0']
    assert guest_network.interfaces_devices(None) == []
    assert guest_network.sources_interfaces_d('source /etc/network/interfaces.d/*\n')
    assert guest_network.sources_interfaces_d('auto lo\n  source-directory /etc/network/interfaces.d\n')
    assert not guest_network.sources_interfaces_d('# source /etc/network/interfaces.d/*\nauto lo\n')
    assert not guest_network.sources_interfaces_d(None)


# -- the old hostname, secrets ------------------------------------------------------------

def test_replace_hostname_whole_words_only():
    settings = dhcp('web1.example.com')
    assert customize.replace_hostname('original\n', 'original', settings) == 'web1.example.com\n', 'the name as it was given'
    assert customize.replace_hostname('original.lan\n', 'original.lan', settings) == 'web1.example.com\n'
    text = 'myhostname = original.lan\nmydestination = $myhostname, original, originally, unoriginal, localhost\n'
    assert customize.replace_hostname(text, 'original.lan', settings) == \
        'myhostname = web1.example.com\nmydestination = $myhostname, web1, originally, unoriginal, localhost\n'
    assert customize.replace_hostname('localhost\n', 'localhost', settings) == 'localhost\n', 'a generic name is no identity'


def test_is_secret():
    for path in ('/etc/shadow', '/etc/gshadow', '/etc/ssh/ssh_host_rsa_key', '/etc/ssh/ssh_host_ed25519_key',
                 '/var/lib/systemd/random-seed', '/var/lib/cloud/seed/nocloud/user-data', '/var/lib/systemd/credential.secret'):
        assert guest.is_secret(path), path
    for path in ('/etc/ssh/ssh_host_rsa_key.pub', '/etc/hostname', '/var/lib/cloud/seed/nocloud/meta-data',
                 '/etc/ssh/sshd_config', '/etc/ssh/ssh_host_rsa_key-cert.pub'):
        assert not guest.is_secret(path), path


def test_keyfile_secrets_are_masked_in_diffs():
    text = '[wifi-security]\nkey-mgmt=wpa-psk\npsk=hunter22\n[802-1x]\npassword=s3cret\nprivate-key-password=pk\n[vpn-secrets]\nsecret=x\n'
    out = guest.diff_text(guest.NM_DIR + '/wifi.nmconnection', text)
    for secret in ('hunter22', 's3cret', '=pk', '=x\n'):
        assert secret not in out, secret
    assert 'psk=(secret)' in out and 'key-mgmt=wpa-psk' in out
    assert guest.diff_text('/etc/hostname', 'psk=1\n') == 'psk=1\n'
    assert guest.diff_text('/etc/hostname', None) == ''


def test_guest_settings_repr_has_no_secrets():
    settings = guest.GuestSettings('h', root_password_hash='$6$salt$hash', cloud_init_user_data='#cloud-config\npassword: pw\n')
    assert '$6$' not in repr(settings) and 'pw' not in repr(settings)


def test_interface_name():
    assert guest_network.interface_name(None, guest.GuestSettings('h', {'mode': 'dhcp', 'device': 'ens5'}), ['eth0']) == 'ens5'
    assert guest_network.interface_name(None, dhcp(), ['lo', 'enp1s0']) == 'enp1s0'
    assert guest_network.interface_name(None, dhcp(), ['lo']) == 'eth0'
