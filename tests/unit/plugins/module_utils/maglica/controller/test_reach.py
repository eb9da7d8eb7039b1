# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""reach.py: "answers SSH with our key" against a real sshd on a loopback address, with host keys made here."""

from __future__ import annotations

import os
import socket
import subprocess

import pytest

from maglica.controller import reach
from maglica.errors import MaglicaError
from maglica.controller import known_hosts
from unit_helpers import free_ports, wait_until

SSHD = '/usr/sbin/sshd'


def free_port():
    return free_ports(1)[0]


def listening(port):
    try:
        socket.create_connection(('127.0.0.1', port), timeout=1).close()
        return True
    except OSError:
        return False


@pytest.fixture(scope='module')
def sshd(tmp_path_factory):
    """A real sshd on 127.0.0.1 with an ed25519 host key of its own; nobody can log in to it."""
    work = tmp_path_factory.mktemp('sshd')
    key = str(work / 'host_key')
    subprocess.run(['ssh-keygen', '-q', '-t', 'ed25519', '-N', '', '-f', key], check=True)
    port = free_port()
    config = work / 'sshd_config'
    config.write_text('ListenAddress 127.0.0.1:%d\nHostKey %s\nPidFile %s\nAuthorizedKeysFile none\n'
                      'PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n' % (port, key, work / 'pid'))
    os.makedirs('/run/sshd', exist_ok=True)  # sshd's privilege separation directory
    proc = subprocess.Popen([SSHD, '-D', '-e', '-f', str(config)], stderr=open(str(work / 'log'), 'wb'))
    try:
        wait_until(lambda: listening(port) or proc.poll() is not None, 20, 'sshd to listen')
        assert proc.poll() is None, (work / 'log').read_text()
        with open(key + '.pub') as handle:
            yield {'port': port, 'public_key': handle.read().strip()}
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_ssh_answers_when_the_server_holds_our_key(sshd):
    known = known_hosts.known_hosts_lines(['127.0.0.1'], [sshd['public_key']], port=sshd['port'])
    ok, seen = reach.ssh_answers('127.0.0.1', known, port=sshd['port'])
    assert ok, seen


def test_ssh_does_not_answer_with_another_key(sshd, tmp_path):
    other = str(tmp_path / 'other')
    subprocess.run(['ssh-keygen', '-q', '-t', 'ed25519', '-N', '', '-f', other], check=True)
    with open(other + '.pub') as handle:
        known = known_hosts.known_hosts_lines(['127.0.0.1'], [handle.read()], port=sshd['port'])
    ok, seen = reach.ssh_answers('127.0.0.1', known, port=sshd['port'])
    assert not ok and 'Host key verification failed' in seen


def test_nothing_listening_is_not_an_answer():
    ok, seen = reach.ssh_answers('127.0.0.1', ['127.0.0.1 ssh-ed25519 AAAA'], port=free_port(), timeout=3)
    assert not ok and 'refused' in seen


def test_wait_for_ssh_needs_host_keys():
    with pytest.raises(MaglicaError, match='has none recorded'):
        reach.wait(None, 'host0', 'web1', 'ssh', [], 10)


def test_wait_for_none_waits_for_nothing():
    assert reach.wait(None, 'host0', 'web1', 'none', [], 10).ip is None


def test_clone_names():
    assert reach.clone_names('web1.example.com') == ['web1.example.com', 'web1']
    assert reach.clone_names('web1', '192.0.2.7') == ['web1', 'web1', '192.0.2.7']
