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


# Each test file's time on its pytest-xdist worker, printed at the end: what the workers' balance (make
# integration's wall time) is made of. Summed on the controller from every test's setup, call and teardown.
FILE_SECONDS: dict = {}


def pytest_runtest_logreport(report):
    node = getattr(report, 'node', None)
    worker = node.gateway.id if node is not None and hasattr(node, 'gateway') else 'main'
    key = (report.nodeid.split('::', 1)[0], worker)
    FILE_SECONDS[key] = FILE_SECONDS.get(key, 0.0) + report.duration


def pytest_terminal_summary(terminalreporter):
    if not FILE_SECONDS:
        return
    terminalreporter.section('seconds per test file and worker')
    totals: dict = {}
    for (path, worker), seconds in sorted(FILE_SECONDS.items(), key=lambda item: -item[1]):
        terminalreporter.write_line('%8.1fs %-5s %s' % (seconds, worker, path))
        totals[worker] = totals.get(worker, 0.0) + seconds
    terminalreporter.write_line('per worker: %s' % ', '.join('%s %.0fs' % item for item in sorted(totals.items())))
