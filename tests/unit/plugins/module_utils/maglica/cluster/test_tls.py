# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""pki.py: which files a tls URI uses, the client checks made before connecting (each naming the host, the
file or DN and the check), and libvirt's TLS messages explained. Real certificates, made with cryptography."""

from __future__ import annotations

import os
import re
import sys

import pytest

from maglica.cluster import tls
from maglica.errors import HostError

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..', '..', '..', '..')))  # tests/
import certificates  # noqa: E402  pylint: disable=wrong-import-position


@pytest.fixture
def ca():
    return certificates.new_ca('Unit CA')


def client_dir(tmp_path, ca, common_name='library@client', **validity):
    cert, key = certificates.issue(ca, common_name, **validity)
    return certificates.write_client_dir(str(tmp_path / common_name.replace('@', '_')), ca[0], cert, key)


def files(path):
    return tls.client_files('qemu+tls://h/system?pkipath=%s' % path)


def test_client_files_of_a_uri():
    assert tls.client_files('qemu+tls://h/system?pkipath=/p%20k') == tls.ClientFiles(
        '/p k/cacert.pem', '/p k/clientcert.pem', '/p k/clientkey.pem', '/p k/allowed_dns')
    assert tls.client_files('qemu://h/system').ca == '/etc/pki/CA/cacert.pem', "libvirt's defaults, tls being the default"
    for uri in ('qemu+ssh://h/system', 'qemu:///system', 'test+tcp://h/default', 'qemu+tcp://h/system'):
        assert tls.client_files(uri) is None, uri


def test_a_good_client_passes_and_its_dn_is_in_libvirts_order(tmp_path, ca):
    path = client_dir(tmp_path, ca)
    assert tls.check_client(files(path), 'kvm1') == 'O=maglica.cloud,CN=library@client'


@pytest.mark.parametrize('damage, message', [
    (lambda p: os.remove(os.path.join(p, 'cacert.pem')), r'^kvm1: the CA certificate {p}/cacert\.pem is missing$'),
    (lambda p: os.remove(os.path.join(p, 'clientcert.pem')), r'^kvm1: the client certificate {p}/clientcert\.pem is missing$'),
    (lambda p: os.remove(os.path.join(p, 'clientkey.pem')), r'^kvm1: the client key {p}/clientkey\.pem is missing$'),
    (lambda p: open(os.path.join(p, 'cacert.pem'), 'w').write('junk'),
     r'^kvm1: the CA certificate {p}/cacert\.pem is not a PEM certificate'),
])
def test_missing_or_broken_files_are_named(tmp_path, ca, damage, message):
    path = client_dir(tmp_path, ca)
    damage(path)
    with pytest.raises(HostError, match=message.format(p=re.escape(path))):
        tls.check_client(files(path), 'kvm1')


def test_expired_and_not_yet_valid_certificates(tmp_path, ca):
    path = client_dir(tmp_path, ca, 'old@client', not_before=-10, not_after=-1)
    with pytest.raises(HostError, match=r'^kvm1: the client certificate %s/clientcert\.pem \(DN O=maglica\.cloud,CN=old@client\) '
                                        r'expired on .* \(check: expiry date\)$' % re.escape(path)):
        tls.check_client(files(path), 'kvm1')
    path = client_dir(tmp_path, ca, 'early@client', not_before=2, not_after=10)
    with pytest.raises(HostError, match=r'is not valid before .* \(check: start date\)$'):
        tls.check_client(files(path), 'kvm1')


def test_a_certificate_of_another_ca_and_a_key_of_another_certificate(tmp_path, ca):
    path = client_dir(tmp_path, certificates.new_ca('Other CA'))
    certificates.write_client_dir(path, ca[0])  # our CA, their certificate
    with pytest.raises(HostError, match=r'\(DN O=maglica\.cloud,CN=library@client\) was not issued by the CA in %s/cacert\.pem '
                                        r'\(DN O=maglica\.cloud,CN=Unit CA\) \(check: issuer\)$' % re.escape(path)):
        tls.check_client(files(path), 'kvm1')
    path = client_dir(tmp_path, ca)
    other = client_dir(tmp_path, ca, 'other@client')
    os.replace(os.path.join(other, 'clientkey.pem'), os.path.join(path, 'clientkey.pem'))
    with pytest.raises(HostError, match=r'the client key %s/clientkey\.pem does not belong to the client certificate .* '
                                        r'\(check: key pair\)$' % re.escape(path)):
        tls.check_client(files(path), 'kvm1')


def test_a_dn_outside_the_roles_allow_list_is_found_before_connecting(tmp_path, ca):
    path = client_dir(tmp_path, ca, 'intruder')
    with open(os.path.join(path, 'allowed_dns'), 'w') as handle:
        handle.write('# the tls_allowed_dn_list of every libvirtd\nO=maglica.cloud,CN=library@*\n')
    with pytest.raises(HostError, match=r'^kvm1: the client certificate .*/clientcert\.pem has DN O=maglica\.cloud,CN=intruder, '
                                        r'which is not in the allow list the roles gave the hosts \(.*/allowed_dns: '
                                        r'O=maglica\.cloud,CN=library@\*\) \(check: allowed DN\)$'):
        tls.check_client(files(path), 'kvm1')
    allowed = client_dir(tmp_path, ca, 'library@client')
    os.replace(os.path.join(path, 'allowed_dns'), os.path.join(allowed, 'allowed_dns'))
    assert tls.check_client(files(allowed), 'kvm1') == 'O=maglica.cloud,CN=library@client'


def test_a_reset_after_the_handshake_is_explained_as_a_refused_client(tmp_path, ca):
    path = client_dir(tmp_path, ca)
    uri = 'qemu+tls://192.0.2.1/system?pkipath=%s' % path
    message = tls.explain(uri, 'kvm1', 'Unable to read TLS confirmation: Input/output error', 'O=maglica.cloud,CN=library@client')
    assert message.startswith('kvm1: libvirtd at 192.0.2.1 closed the TLS connection: it refused the client certificate '
                              '%s/clientcert.pem (DN O=maglica.cloud,CN=library@client)' % path)
    assert '(check: server refused the client)' in message
    assert tls.explain('qemu+ssh://h/system', 'kvm1', 'Connection reset', None) is None, 'not tls: libvirt says it all'
