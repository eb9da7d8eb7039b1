# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""tls._issued_by with CA keys of every kind that signs: a DSA CA raised TypeError (DSA's verify needs the hash)
instead of answering, which escaped connect() as a traceback; a key that cannot sign is no issuer."""

from __future__ import annotations

import datetime
import warnings

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.x509.oid import NameOID

from maglica.cluster import tls


def _name(common_name):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _certificate(subject, issuer, public_key, signing_key, algorithm):
    now = datetime.datetime.now(datetime.timezone.utc)
    return (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(_name(issuer)).public_key(public_key)
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1)).sign(signing_key, algorithm))


def _keys():
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # cryptography deprecates DSA
        return {
            'rsa': (rsa.generate_private_key(65537, 2048), hashes.SHA256()),
            'ec': (ec.generate_private_key(ec.SECP256R1()), hashes.SHA256()),
            'dsa': (dsa.generate_private_key(2048), hashes.SHA256()),
            'ed25519': (ed25519.Ed25519PrivateKey.generate(), None),
            'ed448': (ed448.Ed448PrivateKey.generate(), None),
        }


KEYS = _keys()


@pytest.mark.parametrize('kind', sorted(KEYS))
def test_a_ca_of_each_signing_kind_is_recognised_and_a_forger_is_not(kind):
    key, algorithm = KEYS[kind]
    ca = _certificate('CA', 'CA', key.public_key(), key, algorithm)
    client_key = ec.generate_private_key(ec.SECP256R1())
    cert = _certificate('client', 'CA', client_key.public_key(), key, algorithm)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        assert tls._issued_by(cert, ca) is True
        # Same subject, another key of the same kind: the signature does not verify.
        other_key = KEYS['ec'][0] if kind != 'ec' else ec.generate_private_key(ec.SECP256R1())
        other_algorithm = hashes.SHA256()
        forged = _certificate('client', 'CA', client_key.public_key(), other_key, other_algorithm)
        assert tls._issued_by(forged, ca) is False
