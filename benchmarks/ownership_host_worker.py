# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A real host worker for `make bench-faults`' ownership phase, with guest customisation left out.

The phase is about which domains and files survive restarts and concurrent submissions; one libguestfs launch
takes 25-30 s here and the guests are blank disks, so customisation is replaced by a stand-in that changes
nothing (the only part that is). Everything else - the record, reconcile, libvirt, the copies - is the real one.
"""

from __future__ import annotations

import sys

from maglica import batching, host_worker


def no_customisation(key, disks, settings):
    return {'changed_files': [], 'removed_files': [], 'notes': ['benchmark: customisation skipped']}


if __name__ == '__main__':
    batching.customize_alone = no_customisation
    sys.exit(host_worker.main())
