# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Booted clones as tests reach them: SSH as root with strict host key checking, and the DHCP leases of the testbed's guest segment.
Shared by the test modules that boot guests (test_boot.py, test_day_two.py) and benchmarks/migrate.py."""

from __future__ import annotations

import os
import subprocess


class Booted:
    """The booted clones: their module/library results, and how to reach them."""

    def __init__(self, testbed, cloud, work):
        self.testbed = testbed
        self.cloud = cloud
        self.work = work
        self.key = os.path.join(work, 'id_ed25519')
        subprocess.run(['ssh-keygen', '-q', '-t', 'ed25519', '-N', '', '-C', 'maglica-test', '-f', self.key], check=True)
        with open(self.key + '.pub') as handle:
            self.public_key = handle.read().strip()
        self.results = {}

    def ssh(self, name, command, known_hosts=None, check=True):
        """Run `command` as root on the clone over SSH, checking its host key strictly against `known_hosts`."""
        result = self.results[name]
        path = os.path.join(self.work, 'known_hosts-%s' % name)
        with open(path, 'w') as handle:
            handle.write(''.join('%s\n' % l for l in (result['known_hosts'] if known_hosts is None else known_hosts)))
        proc = subprocess.run(['ssh', '-F', '/dev/null', '-i', self.key, '-o', 'IdentitiesOnly=yes', '-o', 'BatchMode=yes',
                               '-o', 'StrictHostKeyChecking=yes', '-o', 'UserKnownHostsFile=%s' % path,
                               '-o', 'GlobalKnownHostsFile=/dev/null', '-o', 'ConnectTimeout=20',
                               'root@%s' % result['ip'], command],
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              universal_newlines=True, timeout=120, check=False)
        if check:
            assert proc.returncode == 0, '%s: %r exited %d: %s' % (name, command, proc.returncode, proc.stderr)
        return proc

    def leases(self, host):
        """The DHCP leases of the guests' network: {ip: lease}. The testbed's hosts share one guest segment, with one
        DHCP server (testbed.sh), as real hypervisors share a network: every host's guests lease there."""
        return self.testbed.leases()
