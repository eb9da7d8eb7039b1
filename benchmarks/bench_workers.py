# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Jobs that a benchmark's own workers refuse: the benchmark must fail, loudly, and say why.

A host worker drops a job notice (or a fetched job) that does not validate - an action it does not know, say -
with one log line, and carries on. The job stays unacknowledged and is published again and again, so a
benchmark that waits for it sees only "unfinished" at its deadline, or measures nothing at all: bench-faults'
ownership phase once ran its host workers without the test action `noop`, which dropped every filler job
(issue 17). A client worker refuses such a job at submission: the submitter gets a DispatchError, which the
fault benchmarks' resend loops must not take for a worker that is down and resend for ever.
"""

from __future__ import annotations

import glob
import os
import threading

from maglica.errors import DispatchError

# What host_worker.HostWorker logs when it drops a notice or a fetched job that does not validate.
REFUSAL_MARKS = ('dropped a message', 'dropped a fetched job')
# How client.Client.call words a request the client worker answered with an error (not a missing answer).
REFUSED_REQUEST = 'the client worker refused'


class WorkersRefused(RuntimeError):
    """The benchmark's workers refuse its jobs: whatever it would measure afterwards means nothing."""


def refusals(workdir: str, pattern: str = 'host_worker-*.log') -> dict[str, list[str]]:
    """{log path: [lines]} of the host workers' logs in `workdir` that record a dropped notice or job."""
    found = {}
    for path in sorted(glob.glob(os.path.join(workdir, pattern))):
        with open(path, errors='replace') as handle:
            lines = [line.rstrip('\n') for line in handle if any(mark in line for mark in REFUSAL_MARKS)]
        if lines:
            found[path] = lines
    return found


def count(found: dict[str, list[str]]) -> int:
    return sum(len(lines) for lines in found.values())


def describe(found: dict[str, list[str]]) -> str | None:
    """One sentence naming how many were refused and the first refusal, or None when there was none."""
    if not found:
        return None
    path, lines = next(iter(found.items()))
    return ('the host workers refused %d job notice(s) or job(s), which therefore never ran: the benchmark sends jobs '
            'its workers do not accept (does their entry point register every action it uses?); first, in %s: %s'
            % (count(found), path, lines[0].strip()))


def check(workdir: str) -> None:
    """Raise WorkersRefused when a host worker in `workdir` dropped a job: for the conditions benchmarks wait on."""
    problem = describe(refusals(workdir))
    if problem:
        raise WorkersRefused(problem)


def submit(library, job: dict, stop: threading.Event | None = None) -> dict | None:
    """library.submit(job), sent again while the client worker does not answer (killed, restarting: the job's id
    makes a resend harmless) until `stop` is set (then None). A refusal raises WorkersRefused at once."""
    while stop is None or not stop.is_set():
        try:
            return library.submit(job)
        except DispatchError as e:
            if str(e).startswith(REFUSED_REQUEST):
                raise WorkersRefused('job %s (%s) refused at submission: %s' % (job['id'], job['action'], e)) from e
    return None


def cpu_seconds(pid: int) -> float:
    """User and system CPU seconds of process `pid` so far (0 when it is gone)."""
    try:
        with open('/proc/%d/stat' % pid) as handle:
            fields = handle.read().rsplit(')', 1)[1].split()
    except FileNotFoundError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK')


def children(pid: int) -> list[int]:
    """The processes whose parent is `pid` (a PostgreSQL server's backends and helpers)."""
    found = []
    for entry in os.listdir('/proc'):
        if entry.isdigit():
            try:
                with open('/proc/%s/stat' % entry) as handle:
                    if int(handle.read().rsplit(')', 1)[1].split()[1]) == pid:
                        found.append(int(entry))
            except (FileNotFoundError, ProcessLookupError):
                continue
    return found
