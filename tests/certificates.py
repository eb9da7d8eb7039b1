# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Certificates the roles would never issue, for the refusal tests: from another CA, expired, with a DN no
host allows. Written in libvirt's client file names, so a directory is a `pkipath`."""

from __future__ import annotations

import datetime
import os
import shutil

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

ORGANIZATION = 'maglica.cloud'


def name(common_name):
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def load_ca(ca_dir):
    with open(os.path.join(ca_dir, 'cacert.pem'), 'rb') as handle:
        cert = x509.load_pem_x509_certificate(handle.read())
    with open(os.path.join(ca_dir, 'cakey.pem'), 'rb') as handle:
        key = serialization.load_pem_private_key(handle.read(), password=None)
    return cert, key


def new_ca(common_name='Another CA'):
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name(common_name)).issuer_name(name(common_name))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    return cert, key


def issue(ca, common_name, not_before=-1, not_after=30, server_names=()):
    """A certificate signed by `ca` (cert, key); validity in days from now. Returns (cert, key)."""
    ca_cert, ca_key = ca
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(name(common_name)).issuer_name(ca_cert.subject)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now + datetime.timedelta(days=not_before))
               .not_valid_after(now + datetime.timedelta(days=not_after))
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True))
    if server_names:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in server_names]), critical=False)
    return builder.sign(ca_key, hashes.SHA256()), key


def write_client_dir(path, ca_cert, cert=None, key=None, allowed_dns_from=None):
    """A pkipath directory: cacert.pem, and clientcert.pem/clientkey.pem when given."""
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, 'cacert.pem'), 'wb') as handle:
        handle.write(ca_cert.public_bytes(serialization.Encoding.PEM))
    if cert is not None:
        with open(os.path.join(path, 'clientcert.pem'), 'wb') as handle:
            handle.write(cert.public_bytes(serialization.Encoding.PEM))
        with open(os.path.join(path, 'clientkey.pem'), 'wb') as handle:
            handle.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                           serialization.NoEncryption()))
    if allowed_dns_from:
        shutil.copy(os.path.join(allowed_dns_from, 'allowed_dns'), os.path.join(path, 'allowed_dns'))
    return path


def write_server_dir(path, cert, key):
    """A libvirtd's servercert.pem and serverkey.pem (its cacert.pem is left as it is)."""
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, 'servercert.pem'), 'wb') as handle:
        handle.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(os.path.join(path, 'serverkey.pem'), 'wb') as handle:
        handle.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                       serialization.NoEncryption()))
    return path
