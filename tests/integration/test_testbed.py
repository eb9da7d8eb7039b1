# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The testbed's own stop (which `make demo-clean` uses): no guest's qemu or network dnsmasq outlives it, even when
the host's libvirtd and namespace holder were killed first and only libvirt's pid files still lead to them."""

from __future__ import annotations

import os
import signal
import subprocess

import maglica_testbed
from maglica_testbed import TESTBED, wait_until
from polling import alive

HOST = 'leaky'
GUEST = 'leaky-guest'
# No disk, no network: SeaBIOS finds nothing to boot and spins, which is all a leaked qemu needs to be.
GUEST_XML = """<domain type='qemu'>
  <name>%s</name>
  <memory unit='MiB'>32</memory>
  <os><type arch='x86_64'>hvm</type></os>
  <devices><graphics type='vnc' autoport='yes' listen='127.0.0.1'/></devices>
</domain>""" % GUEST


def pid_in(path):
    with open(path) as handle:
        return int(handle.read().strip())


def test_stop_ends_the_guests_of_a_host_whose_daemons_were_killed(tmp_path):
    env = maglica_testbed.testbed_env()
    env['MAGLICA_TESTBED_DIR'] = str(tmp_path / 'testbed')  # a testbed of its own: the session's stays up
    address = '127.0.0.%d' % (int(os.environ.get('MAGLICA_TEST_ADDRESS_BASE', '11')) + 60)

    def testbed(*args):
        done = subprocess.run(['bash', os.path.join(TESTBED, 'testbed.sh')] + list(args), env=env, check=False,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True)
        assert done.returncode == 0, 'testbed.sh %s failed: %s' % (' '.join(args), done.stdout)
        return done.stdout

    try:
        testbed('start-one', HOST, address)
        xml = tmp_path / 'guest.xml'
        xml.write_text(GUEST_XML)
        uri = testbed('uri', HOST).strip()
        subprocess.run(['virsh', '-q', '-c', uri, 'create', str(xml)], check=True, stdout=subprocess.PIPE)
        qemus = [int(pid) for pid in testbed('qemu-pids', HOST).split()]
        assert len(qemus) == 1 and alive(qemus[0]), 'the guest runs and libvirt keeps its pid file'
        # The host half dead: its daemons and namespace holder killed, the guest still running.
        run = os.path.join(env['MAGLICA_TESTBED_DIR'], 'hosts', HOST, 'run')
        daemons = [pid_in(os.path.join(run, name)) for name in ('libvirtd.pid', 'virtlogd.pid')]
        daemons.append(pid_in(os.path.join(env['MAGLICA_TESTBED_DIR'], 'hosts', HOST, 'ns.pid')))
        for pid in daemons:
            os.kill(pid, signal.SIGKILL)
        wait_until(lambda: not any(alive(pid) for pid in daemons), 30, 'the daemons to die')
        assert alive(qemus[0]), 'the guest outlives its libvirtd'
        # The guests' DHCP server is the testbed's (its shared segment), not the host's libvirt's.
        dnsmasq = pid_in(os.path.join(env['MAGLICA_TESTBED_DIR'], 'segment', 'dnsmasq.pid'))
        testbed('stop')
        assert not alive(qemus[0]), 'testbed.sh stop left the guest qemu %d running' % qemus[0]
        assert not alive(dnsmasq), 'testbed.sh stop left the guest segment\'s dnsmasq %d running' % dnsmasq
        # What the user does next: start the host again (a dnsmasq left behind would hold its network's address).
        testbed('start-one', HOST, address)
    finally:
        testbed('clean')


def test_a_testbed_in_use_is_refused_naming_its_user(tmp_path):
    """`make test` and a benchmark on one testbed tore down each other's hypervisors: the second is refused."""
    env = maglica_testbed.testbed_env()
    env['MAGLICA_TESTBED_DIR'] = str(tmp_path / 'testbed')
    script = os.path.join(TESTBED, 'testbed.sh')
    release = tmp_path / 'release'
    holder = subprocess.Popen(['bash', script, 'locked', 'bash', '-c', 'touch %s.held; until [ -e %s ]; do sleep 0.05; done'
                               % (release, release)], env=env)
    try:
        wait_until(lambda: os.path.exists('%s.held' % release), 30, 'the first user to hold the testbed')
        second = subprocess.run(['bash', script, 'locked', 'true'], env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, universal_newlines=True, check=False)
        assert second.returncode != 0
        assert 'is in use' in second.stdout and 'pid %d' % holder.pid in second.stdout, second.stdout
    finally:
        release.touch()
        holder.wait(30)
    assert holder.returncode == 0
    again = subprocess.run(['bash', script, 'locked', 'true'], env=env, check=False)
    assert again.returncode == 0, 'the lock is free once its user ended'
