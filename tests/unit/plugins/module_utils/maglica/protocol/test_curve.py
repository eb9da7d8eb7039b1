# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""keys.py: key pairs and the allow-list, through its command line as the roles use it."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import pytest
import zmq  # a missing pyzmq fails the suite, never skips it

from maglica.protocol import curve
from maglica.errors import ConfigError
from unit_helpers import worker_env


def test_pyzmq_has_curve():
    assert zmq.has('curve'), 'pyzmq was built without CURVE: the keys and the workers need it'


def keys_cli(*args):
    return subprocess.run([sys.executable, '-m', 'maglica.protocol.curve'] + list(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          env=worker_env(), check=False)


def test_create_and_allow_through_the_command_line(tmp_path):
    key_dir = str(tmp_path / 'keys')
    first = keys_cli('--key-dir', key_dir, 'create', 'kvm1')
    assert (first.returncode, first.stdout) == (0, b'changed\n')
    public = curve.public_path(key_dir, 'kvm1')
    assert stat.S_IMODE(os.stat(curve.secret_path(key_dir, 'kvm1')).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(public).st_mode) == 0o644
    pair = curve.load_pair(key_dir, 'kvm1')
    again = keys_cli('--key-dir', key_dir, 'create', 'kvm1')
    assert (again.returncode, again.stdout) == (0, b'unchanged\n')
    assert curve.load_pair(key_dir, 'kvm1') == pair, 'an existing pair is never replaced'
    allowed = keys_cli('--key-dir', key_dir, 'allow', 'kvm1', public)
    assert (allowed.returncode, allowed.stdout) == (0, b'changed\n')
    assert keys_cli('--key-dir', key_dir, 'allow', 'kvm1', public).stdout == b'unchanged\n'
    assert curve.load_allowed(key_dir) == {pair[0]: 'kvm1'}
    missing = keys_cli('--key-dir', key_dir, 'allow', 'kvm2', str(tmp_path / 'absent.key'))
    assert missing.returncode == 1 and b'maglica.protocol.curve:' in missing.stderr and b'absent.key' in missing.stderr


def test_allow_replaces_a_changed_key(tmp_path):
    key_dir = str(tmp_path)
    curve.create(key_dir, 'a')
    curve.create(key_dir, 'b')
    assert curve.allow(key_dir, 'kvm1', curve.public_path(key_dir, 'a'))
    assert curve.allow(key_dir, 'kvm1', curve.public_path(key_dir, 'b'))
    assert list(curve.load_allowed(key_dir).values()) == ['kvm1']
    assert curve.load_allowed(key_dir) == {curve.load_public(key_dir, 'b'): 'kvm1'}


def test_missing_keys_are_named(tmp_path):
    with pytest.raises(ConfigError, match=r'CURVE key .*/nobody\.key_secret is missing: create it with '
                                          r'`python3 -m maglica.protocol.curve create --key-dir .* nobody`'):
        curve.load_pair(str(tmp_path), 'nobody')
    with pytest.raises(ConfigError, match=r'CURVE public key .*/server\.key is missing'):
        curve.load_public(str(tmp_path), curve.SERVER)
    with pytest.raises(ConfigError, match='the CURVE allow-list .* is empty or missing'):
        curve.load_allowed(str(tmp_path))
