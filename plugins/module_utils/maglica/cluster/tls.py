# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""libvirt over TLS: the client's certificate files checked before connecting, libvirt's TLS errors
explained, and the days left on a host's server certificate.

A pki_path directory holds libvirt's client file names: cacert.pem, clientcert.pem, clientkey.pem.
The roles also write `allowed_dns` there: the tls_allowed_dn_list they gave every libvirtd, one DN
pattern a line, so a client whose DN the hosts would refuse learns it before the server resets the connection.
"""

from __future__ import annotations

import datetime
import fnmatch
import os
import socket
import ssl
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Dict, List, Optional, Tuple
from urllib.parse import urlsplit

from .. import deps
from ..errors import HostError
from .config import uri_param, uri_transport

if TYPE_CHECKING:  # cryptography is imported on first use (deps.load), its types here only
    from cryptography.x509 import Certificate

CA_FILE = 'cacert.pem'
CERT_FILE = 'clientcert.pem'
KEY_FILE = 'clientkey.pem'
ALLOWED_DNS_FILE = 'allowed_dns'
# libvirt's defaults when a tls URI has no pkipath.
DEFAULT_CA = '/etc/pki/CA/cacert.pem'
DEFAULT_CLIENT_DIR = '/etc/pki/libvirt'
TLS_PORT = 16514


@dataclass(frozen=True)
class ClientFiles:
    """The files libvirt's TLS client reads for one URI."""
    ca: str
    cert: str
    key: str
    allowed_dns: Optional[str]


def client_files(uri: str) -> Optional[ClientFiles]:
    """The certificate files a tls URI uses (its `pkipath`, else libvirt's defaults); None for other transports."""
    if uri_transport(uri)[1] != 'tls':
        return None
    pki_path = uri_param(uri, 'pkipath') or ''  # as libvirt reads it: any case, the last one
    if pki_path:
        return ClientFiles(os.path.join(pki_path, CA_FILE), os.path.join(pki_path, CERT_FILE),
                           os.path.join(pki_path, KEY_FILE), os.path.join(pki_path, ALLOWED_DNS_FILE))
    return ClientFiles(DEFAULT_CA, os.path.join(DEFAULT_CLIENT_DIR, CERT_FILE),
                       os.path.join(DEFAULT_CLIENT_DIR, 'private', KEY_FILE), None)


def distinguished_name(cert: Certificate) -> str:
    """A certificate's subject as libvirt (GnuTLS) writes it and tls_allowed_dn_list matches it:
    RFC 4514 escaping, in the subject's own order (O=maglica.cloud,CN=host0), as virt-pki-query-dn shows it."""
    return ','.join(rdn.rfc4514_string() for rdn in cert.subject.rdns)


def _read(path: str, what: str, host: str) -> bytes:
    try:
        with open(path, 'rb') as handle:
            return handle.read()
    except FileNotFoundError:
        raise HostError('%s: the %s %s is missing' % (host, what, path))
    except OSError as e:
        raise HostError('%s: cannot read the %s %s: %s' % (host, what, path, e.strerror or e))


def _certificate(path: str, what: str, host: str) -> Certificate:
    deps.load('cryptography')
    from cryptography import x509  # pylint: disable=import-outside-toplevel
    data = _read(path, what, host)
    try:
        return x509.load_pem_x509_certificate(data)
    except ValueError as e:
        raise HostError('%s: the %s %s is not a PEM certificate: %s' % (host, what, path, e))


def _issued_by(cert: Certificate, ca: Certificate) -> bool:
    """Whether `ca` signed `cert` (cryptography's verify_directly_issued_by is newer than Debian 12's cryptography)."""
    deps.load('cryptography')
    from cryptography.exceptions import InvalidSignature  # pylint: disable=import-outside-toplevel
    from cryptography.hazmat.primitives.asymmetric import (  # pylint: disable=import-outside-toplevel
        dsa,
        ec,
        ed448,
        ed25519,
        padding,
        rsa,
    )
    if cert.issuer != ca.subject:
        return False
    public = ca.public_key()
    algorithm = cert.signature_hash_algorithm  # None for Ed25519 and Ed448, which hash as they sign
    signature, data = cert.signature, cert.tbs_certificate_bytes
    try:
        if isinstance(public, rsa.RSAPublicKey) and algorithm is not None:
            public.verify(signature, data, padding.PKCS1v15(), algorithm)
        elif isinstance(public, ec.EllipticCurvePublicKey) and algorithm is not None:
            public.verify(signature, data, ec.ECDSA(algorithm))
        elif isinstance(public, dsa.DSAPublicKey) and algorithm is not None:
            public.verify(signature, data, algorithm)
        elif isinstance(public, (ed25519.Ed25519PublicKey, ed448.Ed448PublicKey)):
            public.verify(signature, data)
        else:  # a key that cannot sign certificates (X25519...), or no hash where the key's algorithm needs one
            return False
    except InvalidSignature:
        return False
    return True


def _utc(cert: Certificate, which: str) -> datetime.datetime:
    """not_valid_before/after as an aware UTC datetime, with old and new cryptography alike."""
    value = getattr(cert, which + '_utc', None)
    return value if value is not None else getattr(cert, which).replace(tzinfo=datetime.timezone.utc)


def _allowed_dns(path: Optional[str]) -> Optional[List[str]]:
    if not path or not os.path.exists(path):
        return None
    with open(path) as handle:
        return [line.strip() for line in handle if line.strip() and not line.startswith('#')]


_checked: Dict[Tuple[ClientFiles, Tuple[Optional[int], ...]], str] = {}
_checked_lock = threading.Lock()


def check_client(files: ClientFiles, host: str) -> str:
    """Check the client's certificate files as libvirtd will, before connecting; return the client's DN.

    Raises HostError naming the host, the file or DN and the check that failed. The answer is kept
    while the files' modification times stay the same (the listing asks every host at once).
    """
    stamp: List[Optional[int]] = []
    for path in (files.ca, files.cert, files.key, files.allowed_dns):
        try:
            stamp.append(os.stat(path).st_mtime_ns if path else None)
        except OSError:
            stamp.append(None)
    key = (files, tuple(stamp))
    with _checked_lock:
        if key in _checked:
            return _checked[key]
    dn = _check_client(files, host)
    with _checked_lock:
        _checked[key] = dn
    return dn


def _check_client(files: ClientFiles, host: str) -> str:
    deps.load('cryptography')
    from cryptography.hazmat.primitives import serialization  # pylint: disable=import-outside-toplevel
    ca = _certificate(files.ca, 'CA certificate', host)
    cert = _certificate(files.cert, 'client certificate', host)
    dn = distinguished_name(cert)
    try:
        key = serialization.load_pem_private_key(_read(files.key, 'client key', host), password=None)
    except (ValueError, TypeError) as e:
        raise HostError('%s: the client key %s cannot be loaded: %s' % (host, files.key, e))
    now = datetime.datetime.now(datetime.timezone.utc)
    for what, path, certificate in (('CA certificate', files.ca, ca), ('client certificate', files.cert, cert)):
        if _utc(certificate, 'not_valid_after') < now:
            raise HostError('%s: the %s %s (DN %s) expired on %s (check: expiry date)' % (
                host, what, path, distinguished_name(certificate), _utc(certificate, 'not_valid_after').strftime('%Y-%m-%d %H:%M UTC')))
        if _utc(certificate, 'not_valid_before') > now:
            raise HostError('%s: the %s %s (DN %s) is not valid before %s (check: start date)' % (
                host, what, path, distinguished_name(certificate), _utc(certificate, 'not_valid_before').strftime('%Y-%m-%d %H:%M UTC')))
    if not _issued_by(cert, ca):
        raise HostError('%s: the client certificate %s (DN %s) was not issued by the CA in %s (DN %s) (check: issuer)' % (
            host, files.cert, dn, files.ca, distinguished_name(ca)))
    if key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo) != \
            cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo):
        raise HostError('%s: the client key %s does not belong to the client certificate %s (check: key pair)' % (host, files.key, files.cert))
    allowed = _allowed_dns(files.allowed_dns)
    if allowed is not None and not any(fnmatch.fnmatchcase(dn, pattern) for pattern in allowed):
        raise HostError('%s: the client certificate %s has DN %s, which is not in the allow list the roles gave the hosts '
                        '(%s: %s) (check: allowed DN)' % (host, files.cert, dn, files.allowed_dns, '; '.join(allowed) or 'empty'))
    return dn


# How libvirt shows a server certificate the client refused (name, issuer or dates: it does not say which).
SERVER_REFUSED = ("verify peer's certificate", 'does not match the hostname', 'not trusted', 'has expired')
# How libvirt shows a server that dropped the connection after the handshake (a refused DN, say).
RESET_ERRORS = ('Unable to read TLS confirmation', 'Connection reset', 'End of file while reading data', 'Cannot recv data',
                'Input/output error', 'Broken pipe', 'Error in the pull function')


def _peer_certificate(uri: str, files: ClientFiles, verify: bool, timeout: float = 5.0) -> bytes:
    """The DER server certificate of a tls URI's libvirtd, read in a TLS handshake with the URI's client certificate."""
    parts = urlsplit(uri)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False  # the libvirt connection checks the name
    if verify:
        context.load_verify_locations(files.ca)
    else:
        context.verify_mode = ssl.CERT_NONE
    try:
        context.load_cert_chain(files.cert, files.key)
        with socket.create_connection((parts.hostname, parts.port or TLS_PORT), timeout=timeout) as sock:
            with context.wrap_socket(sock, server_hostname=parts.hostname) as tls:
                peer = tls.getpeercert(binary_form=True)
                if peer is None:
                    raise HostError('%s presented no certificate' % uri)
                return peer
    except (OSError, ssl.SSLError) as e:
        raise HostError('cannot read the server certificate of %s:%d: %s' % (parts.hostname, parts.port or TLS_PORT, e))


def _names_match(cert: Certificate, address: str) -> bool:
    import ipaddress  # pylint: disable=import-outside-toplevel

    from cryptography import x509  # pylint: disable=import-outside-toplevel
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    try:
        wanted = ipaddress.ip_address(address)
    except ValueError:
        return any(fnmatch.fnmatchcase(address.lower(), n.lower()) for n in sans.get_values_for_type(x509.DNSName))
    return wanted in sans.get_values_for_type(x509.IPAddress)


def diagnose_server(uri: str, host: str) -> Optional[str]:
    """Check the server certificate of a tls URI's libvirtd as libvirt's client does, and say which check fails
    (issuer, dates, name); None when none does."""
    files = client_files(uri)
    if files is None:
        return None
    deps.load('cryptography')
    from cryptography import x509  # pylint: disable=import-outside-toplevel
    address = urlsplit(uri).hostname or ''
    try:
        cert = x509.load_der_x509_certificate(_peer_certificate(uri, files, verify=False))
    except HostError:
        return None
    ca = _certificate(files.ca, 'CA certificate', host)
    dn = distinguished_name(cert)
    if not _issued_by(cert, ca):
        return ('%s: the server certificate of libvirtd at %s (DN %s) was not issued by the CA in %s (DN %s) (check: server '
                'certificate issuer)' % (host, address, dn, files.ca, distinguished_name(ca)))
    now = datetime.datetime.now(datetime.timezone.utc)
    if not _utc(cert, 'not_valid_before') <= now <= _utc(cert, 'not_valid_after'):
        return ('%s: the server certificate of libvirtd at %s (DN %s) is valid only from %s to %s (check: server certificate '
                'dates)' % (host, address, dn, _utc(cert, 'not_valid_before').strftime('%Y-%m-%d %H:%M UTC'),
                            _utc(cert, 'not_valid_after').strftime('%Y-%m-%d %H:%M UTC')))
    if not _names_match(cert, address):
        return ('%s: the server certificate of libvirtd at %s (DN %s) is not for the name %s (check: server name): reissue it '
                'with that name among its subject alternative names, or reach the host by a name it has' % (host, address, dn, address))
    return None


def explain(uri: str, host: str, libvirt_message: str, dn: Optional[str]) -> Optional[str]:
    """A clear message for a failed tls connection (None when libvirt's own message is all there is to say)."""
    files = client_files(uri)
    if files is None:
        return None
    address = urlsplit(uri).hostname or ''
    text = libvirt_message.lower()
    if any(n.lower() in text for n in SERVER_REFUSED):
        found = diagnose_server(uri, host)
        if found:
            return '%s (libvirt: %s)' % (found, libvirt_message)
    if 'cannot read ca certificate' in text:
        return '%s: the CA certificate %s cannot be read (libvirt: %s)' % (host, files.ca, libvirt_message)
    if any(n.lower() in text for n in RESET_ERRORS):
        return ('%s: libvirtd at %s closed the TLS connection: it refused the client certificate %s (DN %s). The local '
                'checks passed (file, dates, issuer %s, key pair%s), so the host does not allow this DN in its '
                'tls_allowed_dn_list or trusts another CA (check: server refused the client) (libvirt: %s)' % (
                    host, address, files.cert, dn or 'unknown', files.ca,
                    ', allow list %s' % files.allowed_dns if _allowed_dns(files.allowed_dns) is not None else '',
                    libvirt_message))
    return None


def server_certificate_days(uri: str, timeout: float = 5.0) -> Optional[float]:
    """Days until the server certificate of a tls URI's libvirtd expires (negative: expired); None for other transports.

    One TLS handshake with the URI's client certificate (the dates only: libvirt's own connection checks the rest).
    """
    files = client_files(uri)
    if files is None:
        return None
    deps.load('cryptography')
    from cryptography import x509  # pylint: disable=import-outside-toplevel
    cert = x509.load_der_x509_certificate(_peer_certificate(uri, files, verify=False, timeout=timeout))
    return (_utc(cert, 'not_valid_after') - datetime.datetime.now(datetime.timezone.utc)).total_seconds() / 86400.0
