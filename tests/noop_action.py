# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The `noop` job action: for tests and benchmarks only. Production workers do not know it.

register() adds it to the library's tables in this process (messages.ACTIONS for its
arguments, actions.ACTIONS for its code). Run as a program, this file is the test
suite's entry point for a worker daemon with `noop` known:

    python tests/noop_action.py maglica.client_worker.worker --config FILE
    python tests/noop_action.py maglica.host.worker --config FILE --name HOST

A noop job waits `delay` seconds and, given a marker, appends one line `JOB_ID MARKER`
to {state_dir}/{host}.effects: a side effect that can be counted.
"""

from __future__ import annotations

import os
import sys
import time

from maglica.host import actions
from maglica.client_worker import worker as client_worker
from maglica.host import worker as host_worker
from maglica.protocol import messages
from maglica.cluster import config as maglica_config

NOOP_ARGS = {'marker': messages.Field(str, required=False, max_len=512),
             'delay': messages.Field((int, float), required=False, minimum=0, maximum=60)}
WORKERS = {'maglica.client_worker.worker': client_worker.main, 'maglica.host.worker': host_worker.main}


def effects_path(config: maglica_config.Config, host: str) -> str:
    return os.path.join(config.host_worker['state_dir'], '%s.effects' % host)


def noop(context: actions.Context, reconcile: bool) -> dict:
    if context.args.get('delay'):
        time.sleep(context.args['delay'])
    marker = context.args.get('marker')
    if marker is None:
        return {}
    path = effects_path(context.config, context.host.name)
    if reconcile and os.path.exists(path):
        with open(path) as handle:
            if any(line.split(' ', 1)[0] == context.job['id'] for line in handle):
                return {'reconciled': True}
    with open(path, 'a') as handle:
        handle.write('%s %s\n' % (context.job['id'], marker))
        handle.flush()
        os.fsync(handle.fileno())
    return {}


def register() -> None:
    """Make `noop` a known action in this process (both tables, so workers validate and run it)."""
    messages.ACTIONS['noop'] = NOOP_ARGS
    actions.ACTIONS['noop'] = noop
    actions.CHANGE_NO_DOMAIN.add('noop')


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in WORKERS:
        sys.stderr.write('usage: noop_action.py {%s} [worker arguments]\n' % '|'.join(sorted(WORKERS)))
        return 2
    register()
    return WORKERS[argv[0]](argv[1:])


if __name__ == '__main__':
    raise SystemExit(main(sys.argv[1:]))
