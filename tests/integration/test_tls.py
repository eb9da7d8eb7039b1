# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""No one reaches a hypervisor without a certificate: the testbed's libvirtds listen on TLS only, with the
certificates roles/maglica_pki made. Every refusal test asserts that the host refused (libvirtd itself, seen
through a raw TLS handshake and through libvirt), that the library's message names the host and the file or DN,
and that nothing changed on the host. Then: renewal by the role, and libvirt over ssh with strict host keys.
"""

from __future__ import annotations

import datetime
import os
import shutil
import signal
import socket
import ssl
import subprocess

import libvirt
import pytest
import yaml
from cryptography import x509

from maglica_testbed import ROOT, TESTBED, run_playbook, virt, wait_until
import certificates  # noqa: E402  (tests/, on the path through maglica_testbed)
from maglica.controller import cloud as maglica_cloud
from maglica.cluster import config as maglica_config
from maglica.cluster import tls
from maglica.errors import HostError

HOST = 'host0'
INTRUDER_XML = "<domain type='qemu'><name>intruder</name><memory unit='MiB'>64</memory><os><type>hvm</type></os></domain>"


def tls_uri(address, pki_path):
    return 'qemu+tls://%s/system?pkipath=%s' % (address, pki_path)


def server_accepts(address, pki_path):
    """A raw TLS handshake with the client files of `pki_path`, bypassing libvirt's and the library's own checks.

    libvirtd sends one byte (1) once it has accepted the client's certificate; it closes the connection when it refuses it.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    if os.path.exists(os.path.join(pki_path, 'clientcert.pem')):
        context.load_cert_chain(os.path.join(pki_path, 'clientcert.pem'), os.path.join(pki_path, 'clientkey.pem'))
    with socket.create_connection((address, tls.TLS_PORT), timeout=10) as sock:
        try:
            with context.wrap_socket(sock) as stream:
                return stream.recv(1) == b'\x01'
        except (ssl.SSLError, ConnectionError):
            return False


class HostState(object):
    """What a refused client must not change: the host's domains and the files of its pool."""

    def __init__(self, testbed, host):
        self.testbed, self.host = testbed, host
        self.before = self.now()

    def now(self):
        return self.testbed.domains(self.host), self.testbed.host_files(self.host)

    def unchanged(self):
        after = self.now()
        assert after == self.before, 'the host changed: %r -> %r' % (self.before, after)
        assert 'intruder' not in after[0]
        return True


def refused_by_libvirt(uri):
    """libvirt itself (no Maglica check in between) cannot connect, so cannot define anything: its message."""
    with pytest.raises(libvirt.libvirtError) as refused:
        conn = libvirt.open(uri)
        try:
            conn.defineXML(INTRUDER_XML)
        finally:
            conn.close()
    return str(refused.value)


def refused_by_library(testbed, pki_path, address=None, host=HOST):
    """The library with these client files: its HostError's message (an attempt to define a domain, never reached)."""
    config = maglica_config.validate({'hosts': [{'name': host, 'address': address or testbed.hosts[host]}],
                                      'libvirt': {'pki_path': pki_path}})
    with pytest.raises(HostError) as refused:
        with virt.Connection(config, config.host(host)) as conn:
            conn.defineXML(INTRUDER_XML)
    return str(refused.value)


@pytest.fixture(scope='module')
def testbed_ca(testbed):
    return certificates.load_ca(testbed.ca_dir)


def test_the_testbed_allows_its_own_certificates_over_tls_only(testbed):
    for host, address in testbed.hosts.items():
        assert server_accepts(address, testbed.pki_path), host
        assert server_accepts(address, testbed.host_pki_path(host)), 'host workers have client certificates of their own'
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((address, 16509), timeout=5).close()  # no plain TCP listener
    assert HOST in virt.connect(testbed.uri(HOST), readonly=True).getHostname()


def refused_everywhere(testbed, pki_path, libvirt_says, why):
    """Assert that the host's libvirtd refuses the client files in pki_path (a TLS handshake, then libvirt's own
    client says `libvirt_says`), and return the library's message for the same files."""
    address = testbed.hosts[HOST]
    assert not server_accepts(address, pki_path), why
    assert libvirt_says in refused_by_libvirt(tls_uri(address, pki_path))
    return refused_by_library(testbed, pki_path)


def test_refused_a_client_without_a_certificate(testbed, tmp_path):
    state = HostState(testbed, HOST)
    pki_path = certificates.write_client_dir(str(tmp_path / 'none'), certificates.load_ca(testbed.ca_dir)[0])
    message = refused_everywhere(testbed, pki_path, 'Unable to read TLS confirmation', 'libvirtd must refuse a client without a certificate')
    assert message == '%s: the client certificate %s/clientcert.pem is missing' % (HOST, pki_path)
    assert state.unchanged()


def test_refused_a_client_certificate_from_another_ca(testbed, testbed_ca, tmp_path):
    state = HostState(testbed, HOST)
    other = certificates.new_ca('Another CA')
    cert, key = certificates.issue(other, 'library@testbed')
    pki_path = certificates.write_client_dir(str(tmp_path / 'other-ca'), testbed_ca[0], cert, key)
    message = refused_everywhere(testbed, pki_path, 'failed validation', 'libvirtd must refuse a certificate of another CA')
    assert message.startswith('%s: the client certificate %s/clientcert.pem (DN O=maglica.cloud,CN=library@testbed) was not '
                              'issued by the CA in %s/cacert.pem' % (HOST, pki_path, pki_path)), message
    assert message.endswith('(check: issuer)')
    assert state.unchanged()


def test_refused_an_expired_client_certificate(testbed, testbed_ca, tmp_path):
    state = HostState(testbed, HOST)
    cert, key = certificates.issue(testbed_ca, 'library@testbed', not_before=-30, not_after=-1)
    pki_path = certificates.write_client_dir(str(tmp_path / 'expired'), testbed_ca[0], cert, key)
    message = refused_everywhere(testbed, pki_path, 'has expired', 'libvirtd must refuse an expired certificate')
    assert message.startswith('%s: the client certificate %s/clientcert.pem (DN O=maglica.cloud,CN=library@testbed) expired on '
                              % (HOST, pki_path)), message
    assert message.endswith('(check: expiry date)')
    assert state.unchanged()


def test_refused_a_valid_certificate_whose_dn_is_not_allowed(testbed, testbed_ca, tmp_path):
    state = HostState(testbed, HOST)
    cert, key = certificates.issue(testbed_ca, 'intruder')
    pki_path = certificates.write_client_dir(str(tmp_path / 'intruder'), testbed_ca[0], cert, key)
    # libvirt shows only a closed connection: the library names the certificate, its DN and the check.
    message = refused_everywhere(testbed, pki_path, 'Unable to read TLS confirmation', 'libvirtd must refuse a DN outside tls_allowed_dn_list')
    assert message.startswith('%s: libvirtd at %s closed the TLS connection: it refused the client certificate '
                              '%s/clientcert.pem (DN O=maglica.cloud,CN=intruder)' % (HOST, testbed.hosts[HOST], pki_path)), message
    assert '(check: server refused the client)' in message
    # With the allow list the roles write beside a client certificate, the library finds it before connecting.
    with open(os.path.join(pki_path, 'allowed_dns'), 'w') as handle:
        handle.write('O=maglica.cloud,CN=library@*\nO=maglica.cloud,CN=host-worker@*\n')
    message = refused_by_library(testbed, pki_path)
    assert message == ('%s: the client certificate %s/clientcert.pem has DN O=maglica.cloud,CN=intruder, which is not in the '
                       'allow list the roles gave the hosts (%s/allowed_dns: O=maglica.cloud,CN=library@*; '
                       'O=maglica.cloud,CN=host-worker@*) (check: allowed DN)' % (HOST, pki_path, pki_path))
    assert state.unchanged()


def test_a_host_workers_certificate_opens_only_the_hosts_it_copies_images_from(testbed):
    """Issue 18, item 12: one hypervisor's certificate must not open every other hypervisor. host0's libvirtd allows
    the library, its own host worker and host2's (host2 copies images from host0, see test_image_copy.py), as the
    role gives it for host_worker_image_copy_from; host1's host worker never copies from host0: refused."""
    state = HostState(testbed, HOST)
    intruder = testbed.host_pki_path('host1')
    assert not server_accepts(testbed.hosts[HOST], intruder), "libvirtd must refuse another host's worker"
    assert 'Unable to read TLS confirmation' in refused_by_libvirt(tls_uri(testbed.hosts[HOST], intruder))
    message = refused_by_library(testbed, intruder)
    assert message.startswith('%s: libvirtd at %s closed the TLS connection: it refused the client certificate %s/clientcert.pem '
                              '(DN O=maglica.cloud,CN=host-worker@host1)' % (HOST, testbed.hosts[HOST], intruder)), message
    assert state.unchanged()
    assert server_accepts(testbed.hosts[HOST], testbed.host_pki_path('host2')), 'host2 copies images from host0'
    assert server_accepts(testbed.hosts[HOST], testbed.host_pki_path(HOST)), 'its own host worker'
    assert server_accepts(testbed.hosts[HOST], testbed.pki_path), 'the library'


def test_refused_a_server_certificate_whose_name_does_not_match(testbed, testbed_ca, tmp_path):
    """A host whose libvirtd has a certificate of our CA for another name: the client refuses it, so nothing reaches it."""
    name = 'tlsname'
    address = '127.0.0.%d' % (int(os.environ.get('MAGLICA_TEST_ADDRESS_BASE', '11')) + 9)
    testbed.script('testbed.sh', 'start-one', name, address)
    server_dir = testbed.host_pki_path(name, 'server')
    cert, key = certificates.issue(testbed_ca, name, server_names=['elsewhere.invalid'])
    certificates.write_server_dir(server_dir, cert, key)
    # libvirtd reads its certificate when it starts: stop it, and start the host's daemons again.
    pid_file = os.path.join(testbed.dir, 'hosts', name, 'run', 'libvirtd.pid')
    with open(pid_file) as handle:
        pid = int(handle.read())
    os.kill(pid, signal.SIGTERM)
    wait_until(lambda: not os.path.exists('/proc/%d' % pid), 60, 'the libvirtd of %s to stop' % name)
    restart = subprocess.run(['bash', os.path.join(TESTBED, 'testbed.sh'), 'exec', name, 'bash', os.path.join(TESTBED, 'testbed.sh'),
                              '_ns-daemons'], env=testbed.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True,
                             check=False)
    assert restart.returncode == 0, restart.stdout
    wait_until(lambda: _listening(address, tls.TLS_PORT), 60, 'the libvirtd of %s to listen again' % name)
    local = ['bash', os.path.join(TESTBED, 'testbed.sh'), 'exec', name, 'virsh', '-q', '-c', 'qemu:///system', 'list', '--all', '--name']

    def domains():
        return subprocess.run(local, env=testbed.env, check=True, stdout=subprocess.PIPE, universal_newlines=True).stdout.split()
    before = domains()
    assert server_accepts(address, testbed.pki_path), 'the server accepts our client certificate'
    assert "Failed to verify peer's certificate" in refused_by_libvirt(tls_uri(address, testbed.pki_path))
    message = refused_by_library(testbed, testbed.pki_path, address=address, host=name)
    assert message.startswith('%s: the server certificate of libvirtd at %s (DN O=maglica.cloud,CN=%s) is not for the name %s '
                              '(check: server name)' % (name, address, name, address)), message
    assert domains() == before and 'intruder' not in domains()


def test_missing_and_wrong_ca_files_are_named(testbed, testbed_ca, tmp_path):
    state = HostState(testbed, HOST)
    address = testbed.hosts[HOST]
    missing = str(tmp_path / 'no-ca')
    shutil.copytree(testbed.pki_path, missing)
    os.remove(os.path.join(missing, 'cacert.pem'))
    assert 'Cannot read CA certificate' in refused_by_libvirt(tls_uri(address, missing))
    assert refused_by_library(testbed, missing) == '%s: the CA certificate %s/cacert.pem is missing' % (HOST, missing)
    # A client entirely of another CA: its own files agree, but the server's certificate is not that CA's.
    other = certificates.new_ca('Another CA')
    cert, key = certificates.issue(other, 'library@testbed')
    wrong = certificates.write_client_dir(str(tmp_path / 'wrong-ca'), other[0], cert, key)
    assert "Failed to verify peer's certificate" in refused_by_libvirt(tls_uri(address, wrong))
    message = refused_by_library(testbed, wrong)
    assert message.startswith('%s: the server certificate of libvirtd at %s (DN O=maglica.cloud,CN=%s) was not issued by the '
                              'CA in %s/cacert.pem (DN O=maglica.cloud,CN=Another CA) (check: server certificate issuer)'
                              % (HOST, address, HOST, wrong)), message
    assert state.unchanged()


# -- renewal --------------------------------------------------------------------------------

def certificate(path):
    with open(path, 'rb') as handle:
        return x509.load_pem_x509_certificate(handle.read())


def days_left(cert):
    after = getattr(cert, 'not_valid_after_utc', None) or cert.not_valid_after.replace(tzinfo=datetime.timezone.utc)
    return (after - datetime.datetime.now(datetime.timezone.utc)).total_seconds() / 86400


def test_role_renews_a_short_lived_certificate_then_changes_nothing(tmp_path):
    """roles/maglica_pki (through the testbed's playbook): a certificate within maglica_pki_renew_days of expiry is
    renewed, a second run changes nothing, and a changed name is reissued."""
    pki_dir = str(tmp_path / 'pki')
    inventory = str(tmp_path / 'inventory.yml')

    def deploy(sans, **extra):
        with open(inventory, 'w') as handle:
            yaml.safe_dump({'all': {'vars': {'ansible_connection': 'local', 'pki': pki_dir}, 'hosts': {
                'kvm9': {'kind': 'server', 'dir': os.path.join(pki_dir, 'kvm9'), 'sans': sans}}}}, handle)
        extra_vars = {'maglica_pki_%s' % k: v for k, v in extra.items()}
        run = run_playbook(os.path.join(ROOT, 'tests', 'testbed', 'pki.yml'), extra_vars=extra_vars or None, inventory=inventory)
        assert run.rc == 0, run
        return run, certificate(os.path.join(pki_dir, 'kvm9', 'servercert.pem'))

    _run, short = deploy(['kvm9', '192.0.2.9'], valid_days=2)
    assert days_left(short) < 2.1
    run, renewed = deploy(['kvm9', '192.0.2.9'])
    assert run.changed, run
    assert renewed.serial_number != short.serial_number and 360 < days_left(renewed) <= 365
    assert renewed.public_key().public_numbers() == short.public_key().public_numbers(), 'renewed, same key'
    run, again = deploy(['kvm9', '192.0.2.9'])
    assert run.changed == 0, run
    assert again.serial_number == renewed.serial_number
    run, renamed = deploy(['kvm9', 'kvm9.example', '192.0.2.9'])
    assert run.changed and renamed.serial_number != renewed.serial_number, run
    sans = renamed.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ['kvm9', 'kvm9.example']
    assert [str(a) for a in sans.get_values_for_type(x509.IPAddress)] == ['192.0.2.9']


def test_role_renews_the_ca_certificate_with_its_key_and_what_it_issued_stays_valid(tmp_path):
    """Issue 18, item 12: the CA certificate is renewed within maglica_pki_ca_renew_days of its expiry, with the same key
    and subject; the renewed one is installed beside the certificates, which it still verifies; then nothing changes."""
    pki_dir = str(tmp_path / 'pki')
    inventory = str(tmp_path / 'inventory.yml')
    with open(inventory, 'w') as handle:
        yaml.safe_dump({'all': {'vars': {'ansible_connection': 'local', 'pki': pki_dir}, 'hosts': {
            'kvm9': {'kind': 'server', 'dir': os.path.join(pki_dir, 'kvm9'), 'sans': ['kvm9']}}}}, handle)

    def deploy(**extra):
        run = run_playbook(os.path.join(ROOT, 'tests', 'testbed', 'pki.yml'), inventory=inventory,
                           extra_vars={'maglica_pki_%s' % k: v for k, v in extra.items()} or None)
        assert run.rc == 0, run
        return (run, certificate(os.path.join(pki_dir, 'ca', 'cacert.pem')),
                certificate(os.path.join(pki_dir, 'kvm9', 'cacert.pem')), certificate(os.path.join(pki_dir, 'kvm9', 'servercert.pem')))

    _run, short, installed, server = deploy(ca_valid_days=2)
    assert days_left(short) < 2.1 and installed == short
    run, renewed, installed, server_after = deploy()
    assert run.changed, run
    assert renewed.serial_number != short.serial_number and 3640 < days_left(renewed) <= 3650
    assert renewed.subject == short.subject and renewed.public_key().public_numbers() == short.public_key().public_numbers()
    assert installed == renewed, 'the renewed CA certificate is installed beside the certificate'
    assert server_after == server, 'the server certificate is kept'
    server.verify_directly_issued_by(renewed)  # raises if the renewed CA does not verify what the old one issued
    run, again, _installed, _server = deploy()
    assert run.changed == 0 and again == renewed, run


# -- ssh ----------------------------------------------------------------------------------------

@pytest.fixture
def sshd(testbed, tmp_path):
    """An sshd inside host0's namespace on its address; the client's own ssh configuration checks host keys strictly."""
    port = int(os.environ.get('MAGLICA_TEST_PORT_BASE', '15555')) + 40
    address = testbed.hosts[HOST]
    d = tmp_path / 'ssh'
    d.mkdir()
    subprocess.run(['ssh-keygen', '-q', '-t', 'ed25519', '-N', '', '-f', str(d / 'host_key')], check=True)
    subprocess.run(['ssh-keygen', '-q', '-t', 'ed25519', '-N', '', '-f', str(d / 'client_key')], check=True)
    shutil.copy(str(d / 'client_key.pub'), str(d / 'authorized_keys'))
    (d / 'sshd_config').write_text('\n'.join([
        'ListenAddress %s:%d' % (address, port), 'HostKey %s' % (d / 'host_key'), 'PidFile %s' % (d / 'sshd.pid'),
        'AuthorizedKeysFile %s' % (d / 'authorized_keys'), 'PermitRootLogin prohibit-password', 'PasswordAuthentication no',
        'KbdInteractiveAuthentication no', 'UsePAM no', 'StrictModes no', '']))
    with open(str(d / 'host_key.pub')) as handle:
        host_key = ' '.join(handle.read().split()[:2])
    (d / 'known_hosts').write_text('[%s]:%d %s\n' % (address, port, host_key))
    (d / 'ssh_config').write_text('\n'.join([
        'Host *', '  User root', '  Port %d' % port, '  IdentityFile %s' % (d / 'client_key'), '  IdentitiesOnly yes',
        '  BatchMode yes', '  StrictHostKeyChecking yes', '  UserKnownHostsFile %s' % (d / 'known_hosts'),
        '  GlobalKnownHostsFile /dev/null', '']))
    # libvirt runs `ssh` with its own arguments: this is the ssh client, with its own configuration file.
    (d / 'ssh').write_text('#!/bin/sh\nexec ssh -F %s "$@"\n' % (d / 'ssh_config'))
    os.chmod(str(d / 'ssh'), 0o755)
    os.makedirs('/run/sshd', exist_ok=True)
    proc = testbed.popen_in(HOST, ['/usr/sbin/sshd', '-D', '-e', '-f', str(d / 'sshd_config')], open(str(d / 'sshd.log'), 'ab'))
    try:
        wait_until(lambda: _listening(address, port) or proc.poll() is not None, 20, 'sshd to listen')
        assert proc.poll() is None, (d / 'sshd.log').read_text()
        yield {'dir': d, 'uri': 'qemu+ssh://%s/system?command=%s&no_tty=1' % (address, d / 'ssh'), 'address': address, 'port': port}
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _listening(address, port):
    try:
        socket.create_connection((address, port), timeout=1).close()
        return True
    except OSError:
        return False


def test_ssh_transport_lists_and_clones_with_strict_host_keys(cloud, testbed, sshd, tmp_path):
    ssh_cloud = dict(cloud.data, hosts=[{'name': HOST, 'address': sshd['address'], 'uri': sshd['uri']}])
    config = maglica_config.validate(ssh_cloud)
    assert config.insecure_uris() == {}
    listing = maglica_cloud.image_list(config)
    assert [h['reachable'] for h in listing['hosts']] == [True], listing
    assert 'debian.original' in [i['name'] for i in listing['images']]
    result = maglica_cloud.clone(config, 'debian.original', 'over-ssh.test', clone_mode='linked', start=False)
    assert result['changed'] and result['host'] == HOST and result['job']['state'] == 'succeeded', result
    assert 'over-ssh.test' in testbed.domains(HOST)
    # Strict host key checking: a host key the client's known_hosts does not hold is refused.
    state = HostState(testbed, HOST)
    subprocess.run(['ssh-keygen', '-q', '-t', 'ed25519', '-N', '', '-f', str(tmp_path / 'other')], check=True)
    with open(str(tmp_path / 'other.pub')) as handle:
        (sshd['dir'] / 'known_hosts').write_text('[%s]:%d %s\n' % (sshd['address'], sshd['port'], ' '.join(handle.read().split()[:2])))
    with pytest.raises(HostError, match='cannot connect to libvirtd at qemu\\+ssh://'):
        virt.connect(sshd['uri'], host=HOST).defineXML(INTRUDER_XML)
    assert state.unchanged()
    testbed.virsh(HOST, 'undefine', 'over-ssh.test', '--remove-all-storage', check=False)


def test_a_host_removed_from_the_inventory_is_dropped_from_the_allow_list(tmp_path):
    """tls_allowed_dn_list (and allowed_dns) come from the inventory on every run: a removed host loses its access."""
    inventory = str(tmp_path / 'inventory.yml')

    def allowed(host_workers, **client_vars):
        with open(inventory, 'w') as handle:
            yaml.safe_dump({'all': {'hosts': {'localhost': {'ansible_connection': 'local'}}, 'children': {
                'host_workers': {'hosts': host_workers},
                'client_workers': {'hosts': {'maglica.example': client_vars}}}}}, handle)
        run = run_playbook(os.path.join(ROOT, 'tests', 'integration', 'playbooks', 'allowed_dns.yml'), inventory=inventory)
        assert run.rc == 0, run
        return [r for r in run.results if 'maglica_pki_allowed_dn_list' in r][0]['maglica_pki_allowed_dn_list']

    everyone = allowed({'kvm1': {}, 'kvm2': {'host_worker_name': 'hv2'}, 'kvm3': {}})
    assert everyone == ['O=maglica.cloud,CN=host-worker@kvm1', 'O=maglica.cloud,CN=host-worker@hv2',
                        'O=maglica.cloud,CN=host-worker@kvm3', 'O=maglica.cloud,CN=library@maglica.example']
    assert allowed({'kvm1': {}, 'kvm3': {}}) == ['O=maglica.cloud,CN=host-worker@kvm1', 'O=maglica.cloud,CN=host-worker@kvm3',
                                                 'O=maglica.cloud,CN=library@maglica.example']


def test_a_libvirtd_allows_the_library_its_own_worker_and_the_workers_that_copy_images_from_it(tmp_path):
    """Issue 18, item 12: each host's tls_allowed_dn_list (maglica_pki_libvirtd_allowed_dn_list, written by the
    host_worker role) names the library, its own host worker, and only the host workers whose
    host_worker_image_copy_from names it; never every host worker."""
    inventory = str(tmp_path / 'inventory.yml')
    with open(inventory, 'w') as handle:
        yaml.safe_dump({'all': {'hosts': {'localhost': {'ansible_connection': 'local'}}, 'children': {
            'host_workers': {'hosts': {'kvm1': {}, 'kvm2': {'host_worker_name': 'hv2', 'host_worker_image_copy_from': ['kvm1']},
                                       'kvm3': {'host_worker_image_copy_from': ['kvm1', 'hv2']}}},
            'client_workers': {'hosts': {'maglica.example': {}}}}}}, handle)
    run = run_playbook(os.path.join(ROOT, 'tests', 'integration', 'playbooks', 'allowed_dns.yml'), inventory=inventory)
    assert run.rc == 0, run
    allowed = {r['_host']: r['maglica_pki_libvirtd_allowed_dn_list'] for r in run.results if 'maglica_pki_libvirtd_allowed_dn_list' in r}
    library = 'O=maglica.cloud,CN=library@maglica.example'
    assert allowed == {
        'kvm1': ['O=maglica.cloud,CN=host-worker@kvm1', 'O=maglica.cloud,CN=host-worker@hv2', 'O=maglica.cloud,CN=host-worker@kvm3', library],
        'kvm2': ['O=maglica.cloud,CN=host-worker@hv2', 'O=maglica.cloud,CN=host-worker@kvm3', library],
        'kvm3': ['O=maglica.cloud,CN=host-worker@kvm3', library]}, run


def test_a_libvirtd_allows_its_migration_peers_both_ways_and_no_one_else(tmp_path):
    """Issue 19: only migration makes one hypervisor reach another. A libvirtd allows a host worker's certificate when
    either host names the other in host_worker_migration_peers (a migration's source reaches the destination; a drain
    goes either way); a host in no pair allows no other host's worker."""
    inventory = str(tmp_path / 'inventory.yml')
    with open(inventory, 'w') as handle:
        yaml.safe_dump({'all': {'hosts': {'localhost': {'ansible_connection': 'local'}}, 'children': {
            'host_workers': {'hosts': {'kvm1': {'host_worker_migration_peers': ['hv2']}, 'kvm2': {'host_worker_name': 'hv2'},
                                       'kvm3': {}}},
            'client_workers': {'hosts': {'maglica.example': {}}}}}}, handle)
    run = run_playbook(os.path.join(ROOT, 'tests', 'integration', 'playbooks', 'allowed_dns.yml'), inventory=inventory)
    assert run.rc == 0, run
    allowed = {r['_host']: r['maglica_pki_libvirtd_allowed_dn_list'] for r in run.results if 'maglica_pki_libvirtd_allowed_dn_list' in r}
    library = 'O=maglica.cloud,CN=library@maglica.example'
    assert allowed == {
        'kvm1': ['O=maglica.cloud,CN=host-worker@kvm1', 'O=maglica.cloud,CN=host-worker@hv2', library],
        'kvm2': ['O=maglica.cloud,CN=host-worker@hv2', 'O=maglica.cloud,CN=host-worker@kvm1', library],
        'kvm3': ['O=maglica.cloud,CN=host-worker@kvm3', library]}, run
