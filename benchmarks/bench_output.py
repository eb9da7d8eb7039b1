# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one JSON line every benchmark ends with, and nothing after it.

Output at exit (multiprocessing's resource tracker, `Exception ignored in ... __del__`,
atexit handlers, a child that still holds our stdout) used to land after the JSON
line. print_last() writes the line, then points this process's stdout and stderr
(file descriptors 1 and 2, so children started later too) at a log file.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile


def exit_log_path(name: str) -> str:
    return os.path.join(tempfile.gettempdir(), 'maglica-bench-%s.exit.log' % name)


def print_last(result: dict, name: str | None = None) -> str:
    """Print `result` as the last JSON line of stdout; whatever this process writes afterwards goes to a log.

    Returns the log's path.
    """
    name = name or os.path.splitext(os.path.basename(sys.argv[0]))[0] or 'benchmark'
    path = exit_log_path(name)
    log = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    sys.stderr.flush()
    sys.stdout.write(json.dumps(result) + '\n')
    sys.stdout.flush()
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    return path
