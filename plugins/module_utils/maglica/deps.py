# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Third-party libraries, imported on first use so that importing the library costs nothing.

Modules check them up front with missing() and report missing_required_lib;
the daemons and the CLI get a MissingDependency with the import traceback.
"""

from __future__ import annotations

import importlib
import traceback
from typing import Any, Dict, Iterable, List, Tuple

from .errors import MissingDependency

# What a user installs to get each library: the PyPI name and the Debian package.
PACKAGES = {
    'libvirt': 'libvirt-python (Debian: python3-libvirt)',
    'zmq': 'pyzmq',
    'guestfs': 'guestfs (Debian: python3-guestfs)',
    'yaml': 'PyYAML',
    'cryptography': 'cryptography (Debian: python3-cryptography)',
    'psycopg': 'psycopg 3 (Debian: python3-psycopg), for a PostgreSQL job log',
}

# An imported library: libvirt and guestfs have no type stubs, and every library here is imported by name at
# run time, so what load() gives is not typed.
Library = Any

_modules: Dict[str, Library] = {}
_tracebacks: Dict[str, str] = {}


def load(name: str) -> Library:
    """Return the imported library `name` (one of PACKAGES) or raise MissingDependency."""
    if name not in PACKAGES:
        raise ValueError('unknown dependency %r' % name)
    if name not in _modules and name not in _tracebacks:
        try:
            _modules[name] = importlib.import_module(name)
        except ImportError:
            _tracebacks[name] = traceback.format_exc()
    if name in _tracebacks:
        raise MissingDependency(PACKAGES[name], _tracebacks[name].strip().splitlines()[-1])
    return _modules[name]


def missing(names: Iterable[str]) -> List[Tuple[str, str]]:
    """Return [(package, traceback)] for each of `names` that cannot be imported."""
    result: List[Tuple[str, str]] = []
    for name in names:
        try:
            load(name)
        except MissingDependency:
            result.append((PACKAGES[name], _tracebacks[name]))
    return result
