# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Session fixtures: a three-host testbed with images, and a Maglica cloud (CURVE on) on it.

host0, host1: debian.original          host2: rhel.original, broken.original (a disk with no OS)
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def separate_xdist_workers(environ=None):
    """Under pytest-xdist, worker gwN gets a testbed of its own: loopback addresses 100*N further, ports 1000*N
    further, its own state directory. Set before any test module reads them (they do at import)."""
    environ = os.environ if environ is None else environ
    worker = environ.get('PYTEST_XDIST_WORKER', '')
    if not worker.startswith('gw') or worker == 'gw0':
        return
    number = int(worker[2:])
    if number > 1:
        raise RuntimeError('at most two xdist workers: the loopback addresses of a third would collide')
    environ['MAGLICA_TEST_ADDRESS_BASE'] = str(int(environ.get('MAGLICA_TEST_ADDRESS_BASE', '11')) + 100 * number)
    environ['MAGLICA_TEST_PORT_BASE'] = str(int(environ.get('MAGLICA_TEST_PORT_BASE', '15555')) + 1000 * number)
    environ['MAGLICA_TESTBED_DIR'] = '%s-%s' % (environ.get('MAGLICA_TESTBED_DIR', '/var/tmp/maglica-testbed'), worker)


separate_xdist_workers()

from maglica_testbed import Cloud, Testbed, exit_on_sigterm  # noqa: E402  pylint: disable=wrong-import-position

exit_on_sigterm()


@pytest.fixture(scope='session')
def testbed(tmp_path_factory):
    bed = Testbed(3)
    bed.start()
    try:
        debian = bed.image('debian')
        rhel = bed.image('rhel')
        blank = str(tmp_path_factory.mktemp('images') / 'blank.qcow2')
        subprocess.run(['qemu-img', 'create', '-q', '-f', 'qcow2', blank, '64M'], check=True)
        bed.define_image('host0', 'debian.original', debian)
        bed.define_image('host1', 'debian.original', debian)
        bed.define_image('host2', 'rhel.original', rhel)
        bed.define_image('host2', 'broken.original', blank)
        yield bed
    finally:
        bed.stop()


@pytest.fixture(scope='session')
def cloud(testbed, tmp_path_factory):
    maglica = Cloud(testbed, str(tmp_path_factory.mktemp('cloud')))
    try:
        maglica.start()
        yield maglica
    finally:
        maglica.stop()
