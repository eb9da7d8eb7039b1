# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""CURVE key pairs and the client worker's allow-list.

Layout of a key directory (the same on every machine, each holding what it needs):

    server.key, server.key_secret     the client worker's pair (hosts and the library need server.key)
    library.key, library.key_secret   the pair of modules and the CLI
    NAME.key, NAME.key_secret         a host worker's pair, NAME being its host name
    allowed/IDENTITY.key              public keys the client worker accepts; IDENTITY is
                                      `library` or a host name, and decides what that peer may do

Command line (used by the roles):
    python3 -m maglica.protocol.curve create --key-dir DIR NAME      # make NAME's pair unless it exists
    python3 -m maglica.protocol.curve allow --key-dir DIR IDENTITY FILE.key
"""

from __future__ import annotations

import argparse
import importlib
import os
import shutil
import sys
from typing import Dict, List, Optional, Tuple

from .. import deps
from ..errors import ConfigError, MaglicaError

SERVER = 'server'
LIBRARY = 'library'


def public_path(key_dir: str, name: str) -> str:
    return os.path.join(key_dir, '%s.key' % name)


def secret_path(key_dir: str, name: str) -> str:
    return os.path.join(key_dir, '%s.key_secret' % name)


def allowed_dir(key_dir: str) -> str:
    return os.path.join(key_dir, 'allowed')


def create(key_dir: str, name: str) -> bool:
    """Create NAME's key pair in key_dir unless it already exists. Returns True when created."""
    if os.path.exists(secret_path(key_dir, name)):
        return False
    zmq_auth = _zmq_auth()
    if not os.path.isdir(key_dir):
        os.makedirs(key_dir, 0o700)
    old_umask = os.umask(0o077)
    try:
        zmq_auth.create_certificates(key_dir, name)
    finally:
        os.umask(old_umask)
    os.chmod(public_path(key_dir, name), 0o644)
    return True


def allow(key_dir: str, identity: str, public_file: str) -> bool:
    """Put a public key into the allow-list under `identity`. Returns True when it changed."""
    target_dir = allowed_dir(key_dir)
    if not os.path.isdir(target_dir):
        os.makedirs(target_dir, 0o755)
    target = public_path(target_dir, identity)
    with open(public_file, 'rb') as handle:
        content = handle.read()
    if os.path.exists(target):
        with open(target, 'rb') as handle:
            if handle.read() == content:
                return False
    shutil.copyfile(public_file, target)
    return True


def load_pair(key_dir: str, name: str) -> Tuple[bytes, Optional[bytes]]:
    """(public, secret) of NAME, or ConfigError saying which file is missing."""
    path = secret_path(key_dir, name)
    if not os.path.exists(path):
        raise ConfigError('CURVE key %s is missing: create it with `python3 -m maglica.protocol.curve create --key-dir %s %s`'
                          % (path, key_dir, name))
    return _zmq_auth().load_certificate(path)


def load_public(key_dir: str, name: str) -> bytes:
    path = public_path(key_dir, name)
    if not os.path.exists(path):
        raise ConfigError('CURVE public key %s is missing' % path)
    return _zmq_auth().load_certificate(path)[0]


def load_allowed(key_dir: str) -> Dict[bytes, str]:
    """{z85 public key: identity} of the allow-list. Refuses an empty or missing list."""
    directory = allowed_dir(key_dir)
    zmq_auth = _zmq_auth()
    allowed: Dict[bytes, str] = {}
    if os.path.isdir(directory):
        for entry in sorted(os.listdir(directory)):
            if entry.endswith('.key'):
                public = zmq_auth.load_certificate(os.path.join(directory, entry))[0]
                allowed[public] = entry[:-len('.key')]
    if not allowed:
        raise ConfigError('the CURVE allow-list %s is empty or missing: the client worker refuses to run without it '
                          '(add keys with `python3 -m maglica.protocol.curve allow`, or set security.curve: false to run '
                          'unauthenticated)' % directory)
    return allowed


def _zmq_auth() -> deps.Library:
    deps.load('zmq')
    return importlib.import_module('zmq.auth')


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog='python3 -m maglica.protocol.curve', description='Maglica CURVE keys.')
    parser.add_argument('--key-dir', default='/etc/maglica/keys')
    sub = parser.add_subparsers(dest='command', required=True)
    create_p = sub.add_parser('create', help='create a key pair unless it exists')
    create_p.add_argument('name')
    allow_p = sub.add_parser('allow', help='add a public key to the allow-list')
    allow_p.add_argument('identity')
    allow_p.add_argument('public_file')
    args = parser.parse_args(argv)
    try:
        if args.command == 'create':
            changed = create(args.key_dir, args.name)
        else:
            changed = allow(args.key_dir, args.identity, args.public_file)
    except (MaglicaError, OSError) as e:
        sys.stderr.write('maglica.protocol.curve: %s\n' % e)
        return 1
    sys.stdout.write('changed\n' if changed else 'unchanged\n')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
