# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""State the workers keep on disk is readable by their own user only: directories 0700, files 0600.

The job log and the host worker's record hold root password hashes until they are dropped;
the layout cache tells what is inside each image.
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any

DIR_MODE = 0o700
FILE_MODE = 0o600


def make_dir(path: str) -> None:
    """Create a state directory (and its parents) readable by its owner only. A directory that already
    exists keeps its mode: it may be shared (/var/lib); the roles set the modes of the ones they own."""
    os.makedirs(path, DIR_MODE, exist_ok=True)


def make_file(path: str) -> None:
    """Create `path` empty with mode 0600 unless it exists; an existing one is made 0600 too."""
    fd = os.open(path, os.O_CREAT | os.O_RDWR | getattr(os, 'O_CLOEXEC', 0), FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)
    finally:
        os.close(fd)


def restrict(path: str) -> None:
    """Make an existing file 0600; a missing one is left missing."""
    try:
        os.chmod(path, FILE_MODE)
    except FileNotFoundError:
        pass


def write_json(path: str, data: Any) -> None:
    """Replace `path` with `data` as JSON, atomically: a temporary file of this writer's own (0600, in
    the same directory), synced, then renamed over it. Concurrent writers never share a temporary file."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, temporary = tempfile.mkstemp(prefix='.%s.' % os.path.basename(path), suffix='.tmp', dir=directory)
    try:
        with os.fdopen(fd, 'w') as handle:
            json.dump(data, handle, sort_keys=True)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except FileNotFoundError:
            pass
        raise
