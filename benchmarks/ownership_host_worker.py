# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A real host worker for `make bench-faults`' ownership phase, with guest customisation left out.

The phase is about which domains and files survive restarts and concurrent submissions; one libguestfs launch
takes 25-30 s here and the guests are blank disks, so customisation is replaced by a stand-in that changes
nothing (the only part that is). Everything else - the record, reconcile, libvirt, the copies - is the real one.
It knows the test action `noop` (tests/noop_action.py), as the test suite's workers do: the phase keeps each
host's single slot busy with noop jobs, so that clone jobs sit queued when the worker is killed.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'tests'))

from maglica.host import batching  # noqa: E402  pylint: disable=wrong-import-position
from maglica.host import worker as host_worker  # noqa: E402  pylint: disable=wrong-import-position
import noop_action  # noqa: E402  pylint: disable=wrong-import-position


def no_customisation(key, disks, settings):
    return {'changed_files': [], 'removed_files': [], 'notes': ['benchmark: customisation skipped']}


def prepare() -> None:
    """What this launcher changes in the host worker before it runs: `noop` known, customisation skipped."""
    noop_action.register()
    batching.customize_alone = no_customisation


if __name__ == '__main__':
    prepare()
    sys.exit(host_worker.main())
