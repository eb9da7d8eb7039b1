# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Disk files copied as files, as root on a hypervisor by its host worker: a clone's full copy (clone.py) and a
spare's (spares.py)."""

from __future__ import annotations

import os
import subprocess

from ..errors import HostError


def copy_sparse(source: str, target: str) -> None:
    """Copy a disk file that has no backing file: a reflink where the filesystem can, else only its allocated data.
    A failed copy leaves no target."""
    proc = subprocess.run(['cp', '--reflink=auto', '--sparse=always', source, target], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, check=False)
    if proc.returncode != 0:
        if os.path.lexists(target):
            os.unlink(target)
        raise HostError('copying %s to %s failed: %s' % (source, target, proc.stdout.decode('utf-8', 'replace').strip()))
