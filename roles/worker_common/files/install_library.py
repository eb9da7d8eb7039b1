# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Install the Maglica library from its archive, on the host (roles/worker_common/tasks/library.yml).

    python3 install_library.py ARCHIVE LIB_DIR

The archive (pack_library.py) holds the package `maglica/`. When LIB_DIR/maglica already holds exactly its files
(same bytes and modes, nothing else but __pycache__), nothing is done. Otherwise the package is unpacked beside it
and put in its place whole: no file of an older library is left behind, nor its compiled files (the archive's
times are fixed, so Python could not tell a changed module from its old __pycache__ entry). Prints
{"changed": bool, "files": N} as JSON.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import sys
import tarfile
import tempfile

PACKAGE = 'maglica'


def read(archive):
    """{relative path: (mode, bytes or None for a directory)} of the archive's package, its names checked."""
    members = {}
    with tarfile.open(archive, 'r:gz') as tar:
        for info in tar.getmembers():
            parts = info.name.split('/')
            if parts[0] != PACKAGE or any(p in ('', '.', '..') for p in parts) or not (info.isfile() or info.isdir()):
                raise ValueError('unexpected member %r in %s' % (info.name, archive))
            name = '/'.join(parts[1:])
            if info.isdir():
                members[name] = (info.mode & 0o777, None)
            else:
                members[name] = (info.mode & 0o777, tar.extractfile(info).read())
    return members


def installed_matches(package, members):
    """Whether the directory `package` holds exactly these members (ignoring __pycache__)."""
    if not os.path.isdir(package) or os.path.islink(package):
        return False
    seen = {''}
    for top, dirs, files in os.walk(package):
        dirs[:] = [d for d in dirs if d != '__pycache__']
        for name in dirs + files:
            full = os.path.join(top, name)
            rel = os.path.relpath(full, package).replace(os.sep, '/')
            if rel not in members:
                return False
            mode, data = members[rel]
            st = os.lstat(full)
            if stat.S_IMODE(st.st_mode) != mode or st.st_uid != os.geteuid():
                return False
            if data is None:
                if not stat.S_ISDIR(st.st_mode):
                    return False
            else:
                if not stat.S_ISREG(st.st_mode) or st.st_size != len(data):
                    return False
                with open(full, 'rb') as handle:
                    if handle.read() != data:
                        return False
            seen.add(rel)
    return seen == set(members) | {''}


def install(lib_dir, members):
    """Unpack into a new directory beside the package, then swap it in."""
    new = tempfile.mkdtemp(prefix='.%s-new-' % PACKAGE, dir=lib_dir)
    old = None
    try:
        root = os.path.join(new, PACKAGE)
        for name in sorted(members):
            mode, data = members[name]
            path = os.path.join(root, *name.split('/')) if name else root
            if data is None:
                os.makedirs(path, exist_ok=True)
            else:
                os.makedirs(os.path.dirname(path), exist_ok=True)
                with open(path, 'wb') as handle:
                    handle.write(data)
            os.chmod(path, mode)
        package = os.path.join(lib_dir, PACKAGE)
        if os.path.lexists(package):
            old = tempfile.mkdtemp(prefix='.%s-old-' % PACKAGE, dir=lib_dir)
            os.rename(package, os.path.join(old, PACKAGE))
        os.rename(root, package)
    finally:
        shutil.rmtree(new, ignore_errors=True)
        if old:
            shutil.rmtree(old, ignore_errors=True)


def main(argv):
    if len(argv) != 2:
        sys.stderr.write('usage: install_library.py ARCHIVE LIB_DIR\n')
        return 2
    archive, lib_dir = argv
    try:
        members = read(archive)
        if '' not in members:
            members[''] = (0o755, None)
        changed = not installed_matches(os.path.join(lib_dir, PACKAGE), members)
        if changed:
            install(lib_dir, members)
    except (OSError, ValueError, tarfile.TarError) as e:
        sys.stderr.write('install_library: %s\n' % e)
        return 1
    print(json.dumps({'changed': changed, 'files': sum(1 for m in members.values() if m[1] is not None)}))
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
