# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Pack the Maglica library into one archive, on the controller (roles/worker_common/tasks/library.yml).

    python3 pack_library.py SOURCE OUT_DIR PATH...

Every PATH (a file or a directory of SOURCE, relative to it; `.` is all of SOURCE) goes in, directories
recursively, without __pycache__ and compiled files, under `maglica/`. The archive is the same bytes for the same
files whatever their owners and times on the controller (sorted members, owner root, mode 0644/0755, time 0, no
time in the gzip header), so a second run, or another controller's checkout, finds it unchanged on the hosts. It is
written as OUT_DIR/maglica-library-SHA.tar.gz; prints {"path", "sha256", "files"} as JSON.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import stat
import sys
import tarfile

PACKAGE = 'maglica'
SKIPPED_DIRS = ('__pycache__',)
SKIPPED_SUFFIXES = ('.pyc', '.pyo')


def walk(source, path):
    """The regular files under SOURCE/PATH, as paths relative to SOURCE."""
    normal = os.path.normpath(path)
    if os.path.isabs(normal) or normal == '..' or normal.startswith('..' + os.sep):
        raise ValueError('%s is not inside the library' % path)
    full = os.path.join(source, normal)
    mode = os.lstat(full).st_mode
    if stat.S_ISREG(mode):
        return [normal]
    if not stat.S_ISDIR(mode):
        raise ValueError('%s is neither a regular file nor a directory' % full)
    found = []
    for top, dirs, files in os.walk(full):
        dirs[:] = [d for d in dirs if d not in SKIPPED_DIRS]
        for name in files:
            if name.endswith(SKIPPED_SUFFIXES):
                continue
            item = os.path.join(top, name)
            if not stat.S_ISREG(os.lstat(item).st_mode):
                raise ValueError('%s is not a regular file' % item)
            found.append(os.path.normpath(os.path.relpath(item, source)))
    return found


def pack(source, paths):
    """(archive bytes, relative file names) of these paths of the library."""
    files = sorted(set(f for path in paths for f in walk(source, path)))
    if not files:
        raise ValueError('no library file in %s' % ', '.join(paths))
    # Every parent directory of every file, so that the archive carries their modes too.
    dirs = set()
    for name in files:
        parent = os.path.dirname(name)
        while parent:
            dirs.add(parent)
            parent = os.path.dirname(parent)
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode='w', format=tarfile.PAX_FORMAT) as tar:
        for name in [''] + sorted(dirs):
            info = tarfile.TarInfo(os.path.join(PACKAGE, name).rstrip('/'))
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(_owned(info))
        for name in files:
            with open(os.path.join(source, name), 'rb') as handle:
                data = handle.read()
            info = tarfile.TarInfo(os.path.join(PACKAGE, name))
            info.size, info.mode = len(data), 0o644
            tar.addfile(_owned(info), io.BytesIO(data))
    packed = io.BytesIO()
    with gzip.GzipFile(filename='', mode='wb', fileobj=packed, mtime=0) as archive:
        archive.write(raw.getvalue())
    return packed.getvalue(), files


def _owned(info):
    info.uid = info.gid = 0
    info.uname = info.gname = 'root'
    info.mtime = 0
    return info


def main(argv):
    if len(argv) < 3:
        sys.stderr.write('usage: pack_library.py SOURCE OUT_DIR PATH...\n')
        return 2
    source, out_dir, paths = argv[0], argv[1], argv[2:]
    try:
        data, files = pack(source, paths)
    except (OSError, ValueError) as e:
        sys.stderr.write('pack_library: %s\n' % e)
        return 1
    digest = hashlib.sha256(data).hexdigest()
    path = os.path.join(out_dir, 'maglica-library-%s.tar.gz' % digest[:16])
    if not os.path.exists(path):
        os.makedirs(out_dir, exist_ok=True)
        # Hosts of one play pack at once: each writes its own temporary file, and the same bytes win.
        tmp = '%s.%d.tmp' % (path, os.getpid())
        with open(tmp, 'wb') as handle:
            handle.write(data)
        os.replace(tmp, path)
    print(json.dumps({'path': path, 'sha256': digest, 'files': files}))
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
