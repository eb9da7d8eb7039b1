# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The drain of a host against its migrations one after another (issue 19: ratio <= 0.6 for four VMs).

A phase benchmarks/migrate.py can import (drain_phase), and a run of its own on a testbed:

    make bench-drain                         (four VMs each way)
    make bench-drain BENCH_ARGS=--quick      (two VMs each way: proves it works, claims no target)

The source holds 2 x N running VMs (linked clones of one image that every host holds, started, not customised: the
testbed's small image has no kernel, so each sits in its firmware - a running QEMU to migrate live, and cheap).
`sequential_s`: N of them migrated one after another (cloud.vm_migrate_to, to the destination the drain's own plan
gives each, so both sides move the same VMs to the same kind of place). `drain_s`: cloud.host_state(..., 'maintenance',
max_parallel=N) on the N left: its plan, its migrations, its report. ratio = drain_s / sequential_s; target <= 0.6.
Broken, in any run: a VM that did not move, or is not where its move said.
Prints one JSON line last.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from typing import Any, Dict, List

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'tests', 'integration'))

from bench_output import conclude, parse_args  # noqa: E402  pylint: disable=wrong-import-position
from maglica.controller import cloud  # noqa: E402  pylint: disable=wrong-import-position
from maglica.controller import vm as maglica_vm  # noqa: E402  pylint: disable=wrong-import-position

TARGET = 0.6
SOURCE = 'host2'  # the testbed's libvirtds let host2's worker reach host0 and host1 (tests/testbed/testbed.sh)
IMAGE = 'drain-bench.original'
QUICK = {'vms': 2}


def drain_phase(config: Any, source: str, sequential: List[str], drained: List[str], max_parallel: int,
                timeout: float = 1800.0) -> Dict[str, Any]:
    """Time `sequential` migrated off `source` one after another, then the drain of `source` (which must hold
    `drained` and nothing else but images by then), `max_parallel` at once; the host is active again at the end.
    Returns {sequential_s, drain_s, ratio, moves, broken}."""
    plan = cloud.host_state(config, source, 'maintenance', check_mode=True)
    where = {m['name']: (m['destination'], m['live']) for m in plan['vms']}
    broken = ['%s has no destination in the plan: %s' % (m['name'], m['reason']) for m in plan['vms'] if m['destination'] is None]
    if broken:
        return {'broken': broken}
    started = time.monotonic()
    for name in sequential:
        destination, live = where[name]
        cloud.vm_migrate_to(config, name, source, destination, live, timeout)
    sequential_s = time.monotonic() - started
    started = time.monotonic()
    try:
        result = cloud.host_state(config, source, 'maintenance', max_parallel=max_parallel, timeout=timeout)
    except cloud.DrainIncomplete as e:
        return {'sequential_s': round(sequential_s, 2), 'broken': [str(e)]}
    finally:
        cloud.host_state(config, source, 'active')
    drain_s = time.monotonic() - started
    moved = sorted(m['name'] for m in result['vms'] if m['status'] == 'migrated')
    if moved != sorted(drained):
        broken.append('the drain moved %s, not %s' % (moved, sorted(drained)))
    return {'sequential_s': round(sequential_s, 2), 'drain_s': round(drain_s, 2), 'ratio': round(drain_s / sequential_s, 3),
            'moves': [{'name': m['name'], 'destination': m['destination'], 'live': m['live']} for m in result['vms']],
            'broken': broken}


def arguments(argv: List[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or '').split('\n', 1)[0])
    parser.add_argument('--vms', type=int, default=4, help='VMs each way (default 4): the drain runs them all at once')
    return parse_args(parser, QUICK, 'two VMs each way', argv)


def main(argv: List[str] | None = None) -> int:
    args = arguments(argv)
    from maglica_testbed import Cloud, Testbed  # pylint: disable=import-outside-toplevel
    bed = Testbed(3)
    bed.start()
    maglica = None
    names = ['seq-%d' % n for n in range(args.vms)] + ['drain-%d' % n for n in range(args.vms)]
    result: Dict[str, Any] = {'vms': args.vms, 'max_parallel': args.vms, 'target': TARGET}
    try:
        image = bed.image('debian')
        for host in bed.hosts:
            bed.define_image(host, IMAGE, image)
        maglica = Cloud(bed, tempfile.mkdtemp(prefix='maglica-bench-drain-'))
        maglica.start()
        cloud.clone_batch(maglica.config, [{'image': IMAGE, 'hostname': name, 'host': SOURCE, 'clone_mode': 'linked',
                                            'customize': False} for name in names], timeout=600)
        result.update(drain_phase(maglica.config, SOURCE, names[:args.vms], names[args.vms:], args.vms))
        for name in names:
            maglica_vm.ensure(maglica.config, name, state='absent', force=True)
    finally:
        if maglica is not None:
            maglica.stop()
        bed.stop()
    broken = result.pop('broken', [])
    missed = [] if 'ratio' not in result or result['ratio'] <= TARGET else ['ratio %.3f > %g' % (result['ratio'], TARGET)]
    return conclude(result, args.quick, broken, missed)


if __name__ == '__main__':
    raise SystemExit(main())
