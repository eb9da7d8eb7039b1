# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""roles/worker_common/files: the library packed on the controller and installed on a host in one step."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

FILES = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))),
                     'roles', 'worker_common', 'files')


def run(script, *args):
    proc = subprocess.run([sys.executable, os.path.join(FILES, script)] + [str(a) for a in args],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, check=False)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.fixture
def library(tmp_path):
    src = tmp_path / 'src'
    (src / 'host' / '__pycache__').mkdir(parents=True)
    (src / 'protocol').mkdir()
    (src / '__init__.py').write_text('')
    (src / 'cli.py').write_text('CLI = 1\n')
    (src / 'host' / '__init__.py').write_text('')
    (src / 'host' / 'worker.py').write_text('WORKER = 1\n')
    (src / 'host' / '__pycache__' / 'worker.cpython-311.pyc').write_bytes(b'stale')
    (src / 'protocol' / 'messages.py').write_text('MESSAGES = 1\n')
    return src


def test_same_files_same_archive_whatever_their_times(library, tmp_path):
    first = run('pack_library.py', library, tmp_path / 'out', '.')
    assert first['files'] == ['__init__.py', 'cli.py', 'host/__init__.py', 'host/worker.py', 'protocol/messages.py']
    os.utime(library / 'cli.py', (1, 1))
    again = run('pack_library.py', library, tmp_path / 'out2', '.')
    assert again['sha256'] == first['sha256']
    (library / 'cli.py').write_text('CLI = 2\n')
    assert run('pack_library.py', library, tmp_path / 'out3', '.')['sha256'] != first['sha256']


def test_a_subset(library, tmp_path):
    packed = run('pack_library.py', library, tmp_path / 'out', '__init__.py', 'host', 'protocol')
    assert packed['files'] == ['__init__.py', 'host/__init__.py', 'host/worker.py', 'protocol/messages.py']
    proc = subprocess.run([sys.executable, os.path.join(FILES, 'pack_library.py'), str(library), str(tmp_path), '../etc'],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, check=False)
    assert proc.returncode == 1 and 'not inside the library' in proc.stderr


def test_install_replaces_a_package_that_differs_whole(library, tmp_path):
    archive = run('pack_library.py', library, tmp_path / 'out', '.')['path']
    lib = tmp_path / 'lib'
    lib.mkdir()
    assert run('install_library.py', archive, lib) == {'changed': True, 'files': 5}
    assert (lib / 'maglica' / 'host' / 'worker.py').read_text() == 'WORKER = 1\n'
    assert not (lib / 'maglica' / 'host' / '__pycache__').exists()
    (lib / 'maglica' / 'host' / '__pycache__').mkdir()  # made by Python: no difference
    assert run('install_library.py', archive, lib)['changed'] is False
    (lib / 'maglica' / 'old_module.py').write_text('')  # a file of an older library
    assert run('install_library.py', archive, lib)['changed'] is True
    assert not (lib / 'maglica' / 'old_module.py').exists()
    (lib / 'maglica' / 'cli.py').write_text('CLI = 9\n')
    assert run('install_library.py', archive, lib)['changed'] is True
    assert (lib / 'maglica' / 'cli.py').read_text() == 'CLI = 1\n'
    assert sorted(os.listdir(lib)) == ['maglica']  # nothing left of the swap
