# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one JSON line every benchmark ends with, and nothing after it.

Output at exit (multiprocessing's resource tracker, `Exception ignored in ... __del__`,
atexit handlers, a child that still holds our stdout) used to land after the JSON
line. print_last() writes the line, then points this process's stdout and stderr
(file descriptors 1 and 2, so children started later too) at a log file.

Every benchmark also takes `--quick` (parse_args), the short run CI makes, and ends through conclude(): its
exit status is non-zero when the results show broken behaviour, and, in a full run, when a target is missed.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
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


def stop_on_signals() -> None:
    """Make SIGTERM and SIGHUP (kill, timeout, a cancelled CI job) end this process as an exception does: its `finally`
    and `with` blocks stop the daemons and servers it started. A second signal while it stops ends it at once."""
    def stop(signum: int, _frame: object) -> None:
        for each in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(each, signal.SIG_DFL)
        raise SystemExit(128 + signum)
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, stop)


def parse_args(parser: argparse.ArgumentParser, quick: dict, what: str, argv: list[str] | None = None) -> argparse.Namespace:
    """Add `--quick` to `parser` and parse: with it, the options in `quick` get those defaults (options given on
    the command line still win). `what` says, for --help, what the quick run leaves out or makes smaller. From here
    on, a SIGTERM stops the benchmark cleanly (stop_on_signals)."""
    stop_on_signals()
    parser.add_argument('--quick', action='store_true',
                        help='short run for CI (%s): proves the benchmark works; claims no target' % what)
    first, _rest = parser.parse_known_args(argv)
    if first.quick:
        parser.set_defaults(**quick)
    return parser.parse_args(argv)


def conclude(result: dict, quick: bool, broken: list[str], missed: list[str], name: str | None = None) -> int:
    """Print `result` last (with "quick", and in a full run "targets_met") and return the exit status.

    broken: what the results show wrong (jobs lost or run twice, jobs a worker refused, a run that did not finish):
    a failure of every run. missed: performance targets not met: a failure of full runs only; a quick run measures
    too little to claim or miss a target.
    """
    name = name or os.path.splitext(os.path.basename(sys.argv[0]))[0] or 'benchmark'
    result = dict(result, quick=quick)
    if broken:
        result['broken'] = broken
    if not quick:
        result['targets_met'] = not missed
        if missed:
            result['targets_missed'] = missed
    for problem in broken:
        sys.stderr.write('bench-%s: BROKEN: %s\n' % (name.replace('_', '-'), problem))
    for target in ([] if quick else missed):
        sys.stderr.write('bench-%s: target missed: %s\n' % (name.replace('_', '-'), target))
    print_last(result, name)
    return 1 if broken or (missed and not quick) else 0
