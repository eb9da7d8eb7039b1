# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Each role installs what its machine runs and no more: every module its entry points import (transitively,
TYPE_CHECKING imports counted), and none of the other processes' packages."""

from __future__ import annotations

import os

import grimp
import pytest
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
LIBRARY = os.path.join(ROOT, 'plugins', 'module_utils', 'maglica')

# role: (its default files, the entry points its machine runs, packages it must not carry)
ROLES = {
    'host_worker': ('host_worker_library_files', ['maglica.host.worker', 'maglica.protocol.curve'], ['controller', 'client_worker']),
    'client_worker': ('client_worker_library_files', ['maglica.client_worker.worker', 'maglica.controller.cli', 'maglica.protocol.curve'],
                      ['host']),
}


def installed_modules(paths):
    """The dotted names of the library's modules under these paths (as pack_library.py takes them)."""
    found = set()
    for path in paths:
        full = os.path.join(LIBRARY, path)
        files = [full] if os.path.isfile(full) else [os.path.join(d, f) for d, _dirs, names in os.walk(full) for f in names]
        for name in files:
            if name.endswith('.py'):
                module = os.path.relpath(name, LIBRARY)[:-3].replace(os.sep, '.')
                found.add('maglica' if module == '__init__' else 'maglica.' + module.replace('.__init__', ''))
    return found


@pytest.mark.parametrize('role', sorted(ROLES))
def test_a_role_installs_what_its_entry_points_import_and_no_other_process_code(role):
    variable, entry_points, foreign = ROLES[role]
    with open(os.path.join(ROOT, 'roles', role, 'defaults', 'main.yml')) as handle:
        files = yaml.safe_load(handle)[variable]
    installed = installed_modules(files)
    graph = grimp.build_graph('maglica', exclude_type_checking_imports=False)
    needed = set(entry_points)
    for entry in entry_points:
        needed |= graph.find_upstream_modules(entry)
    needed |= {'maglica'} | {m.rsplit('.', 1)[0] for m in needed if m.count('.') > 1}  # the packages' __init__
    assert needed - installed == set(), 'the %s role leaves out modules its worker imports' % role
    assert [m for m in installed if m.split('.')[1:2] and m.split('.')[1] in foreign] == []
