# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""hostkeys.py with the real ssh-keygen: new pairs, no trace left, and known_hosts lines that ssh itself finds."""

from __future__ import annotations

import glob
import os
import subprocess
import tempfile

import pytest

from maglica.host import ssh_host_keys
from maglica.errors import MaglicaError
from maglica.controller import known_hosts


def temp_dirs():
    return set(glob.glob(os.path.join(tempfile.gettempdir(), 'maglica-hostkeys-*')))


def test_generate_makes_matching_pairs_and_leaves_no_files(tmp_path):
    before = temp_dirs()
    keys = ssh_host_keys.generate(['ed25519', 'ecdsa'], 'root@web1.test')
    assert temp_dirs() == before, 'the private temporary directory is removed'
    assert [k.type for k in keys] == ['ed25519', 'ecdsa']
    for key in keys:
        assert key.private.startswith(b'-----BEGIN OPENSSH PRIVATE KEY-----')
        assert key.public.endswith(' root@web1.test')
        path = tmp_path / key.type
        path.write_bytes(key.private)
        path.chmod(0o600)
        derived = subprocess.run(['ssh-keygen', '-y', '-f', str(path)], stdout=subprocess.PIPE, check=True,
                                 universal_newlines=True).stdout.split()[:2]
        assert derived == key.public.split()[:2], 'the public key is the private key\'s'
    assert keys[0].public.startswith('ssh-ed25519 ') and keys[1].public.startswith('ecdsa-sha2-nistp256 ')
    again = ssh_host_keys.generate(['ed25519'], 'root@web1.test')
    assert again[0].public != keys[0].public, 'every call makes a new key'


def test_private_key_is_not_in_the_repr():
    key = ssh_host_keys.generate(['ed25519'], 'root@h')[0]
    assert 'PRIVATE' not in repr(key) and key.public in repr(key)


def test_missing_ssh_keygen_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(ssh_host_keys, 'SSH_KEYGEN', 'ssh-keygen-that-is-not-installed')
    with pytest.raises(MaglicaError, match='ssh-keygen-that-is-not-installed is not installed where the host worker runs'):
        ssh_host_keys.generate(['rsa'], 'root@h')


def test_unknown_key_type_is_refused_with_ssh_keygen_s_reason():
    with pytest.raises(MaglicaError, match='ssh-keygen could not make a nosuchtype host key'):
        ssh_host_keys.generate(['nosuchtype'], 'root@h')
    with pytest.raises(MaglicaError, match='unexpected SSH host key type'):
        ssh_host_keys.generate(['rsa; rm -rf /'], 'root@h')


def test_known_hosts_lines_are_found_by_ssh_keygen(tmp_path):
    keys = [k.public for k in ssh_host_keys.generate(['ed25519', 'ecdsa'], 'root@web1.test')]
    lines = known_hosts.known_hosts_lines(['web1.test', 'web1', 'web1', '192.0.2.7'], keys)
    assert len(lines) == 2
    assert lines[0] == 'web1.test,web1,192.0.2.7 %s' % ' '.join(keys[0].split()[:2]), 'names once each, no comment'
    known = tmp_path / 'known_hosts'
    known.write_text('\n'.join(lines) + '\n')
    for name in ('web1.test', 'web1', '192.0.2.7'):
        found = subprocess.run(['ssh-keygen', '-F', name, '-f', str(known)], stdout=subprocess.PIPE, universal_newlines=True, check=False)
        assert found.returncode == 0 and keys[0].split()[1] in found.stdout, name
    assert subprocess.run(['ssh-keygen', '-F', 'web2', '-f', str(known)], stdout=subprocess.PIPE, check=False).returncode != 0


def test_known_hosts_lines_with_a_port(tmp_path):
    key = ssh_host_keys.generate(['ed25519'], 'root@h')[0].public
    lines = known_hosts.known_hosts_lines(['127.0.0.5'], [key], port=2222)
    assert lines[0].startswith('[127.0.0.5]:2222 ssh-ed25519 ')
    assert known_hosts.known_hosts_lines(['h'], [key], port=22)[0].startswith('h ssh-ed25519 ')
    known = tmp_path / 'known_hosts'
    known.write_text(lines[0] + '\n')
    assert subprocess.run(['ssh-keygen', '-F', '[127.0.0.5]:2222', '-f', str(known)], stdout=subprocess.PIPE, check=False).returncode == 0


def test_known_hosts_lines_refuse_nonsense():
    with pytest.raises(MaglicaError, match='at least one host name'):
        known_hosts.known_hosts_lines(['', None], ['ssh-ed25519 AAAA'])
    with pytest.raises(MaglicaError, match='not an SSH public key line'):
        known_hosts.known_hosts_lines(['h'], ['garbage'])
