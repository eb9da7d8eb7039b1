# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""SSH host keys for clones: made with ssh-keygen by the host worker, and the known_hosts lines that name them.

A clone must not share its image's host keys, and Debian makes none at boot: the host worker
makes one pair per key type the image had and writes them into the clone's disk. Only the
public halves ever leave this module's caller (results, known_hosts); the private ones exist
in a private temporary directory for the moment ssh-keygen needs, and in the guest's disk.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from typing import Iterable, List

from ..errors import MaglicaError

SSH_KEYGEN = os.environ.get('MAGLICA_SSH_KEYGEN', 'ssh-keygen')
# What an image with sshd but no host keys gets: the types Debian's and RHEL's packages make.
DEFAULT_TYPES = ('rsa', 'ecdsa', 'ed25519')
KEYGEN_TIMEOUT = 120
KEY_TYPE_RE = re.compile(r'[a-z0-9]{1,20}')


@dataclass
class HostKey:
    """One key pair. `private` is left out of repr so that it never lands in a log line by accident."""

    type: str
    public: str
    private: bytes = field(repr=False)


def generate(types: Iterable[str], comment: str) -> List[HostKey]:
    """A new key pair of each type, made with `ssh-keygen -q -t TYPE -N ''` in a 0700 directory removed afterwards."""
    if shutil.which(SSH_KEYGEN) is None:
        raise MaglicaError('%s is not installed where the host worker runs (Debian/RHEL package openssh-client/openssh-clients): '
                           'the clone needs new SSH host keys' % SSH_KEYGEN)
    keys = []
    directory = tempfile.mkdtemp(prefix='maglica-hostkeys-')  # mode 0700, only this process's user
    try:
        for key_type in types:
            if not KEY_TYPE_RE.fullmatch(key_type):
                raise MaglicaError('unexpected SSH host key type %r' % key_type[:40])
            path = os.path.join(directory, 'ssh_host_%s_key' % key_type)
            try:
                proc = subprocess.run([SSH_KEYGEN, '-q', '-t', key_type, '-N', '', '-C', comment, '-f', path],
                                      stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      timeout=KEYGEN_TIMEOUT, check=False)
            except subprocess.TimeoutExpired:
                raise MaglicaError('ssh-keygen did not make a %s key within %ds' % (key_type, KEYGEN_TIMEOUT))
            if proc.returncode != 0:
                # ssh-keygen's messages name the type or the file, never key material.
                raise MaglicaError('ssh-keygen could not make a %s host key: %s'
                                   % (key_type, proc.stdout.decode('utf-8', 'replace').strip()[:300]))
            with open(path, 'rb') as handle:
                private = handle.read()
            with open(path + '.pub') as handle:
                public = handle.read().strip()
            keys.append(HostKey(key_type, public, private))
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    return keys
