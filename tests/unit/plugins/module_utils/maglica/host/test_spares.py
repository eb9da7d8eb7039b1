# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""spares.py: the record of spare files and what a spare that cannot be made leaves. The spares' appliances, and
clones taking them, are proven on the testbed (tests/integration/test_spares.py, test_boot.py)."""

from __future__ import annotations

import json
import os

from maglica.host.batching import LayoutCache, image_key
from maglica.host.spares import SPARE_PREFIX, SpareClones
from polling import wait_until

NO_SPARES = {'ready': {}, 'making': {}, 'taken': {}}  # the record of a worker without spares
KEY = '["image", [["/images/image.qcow2", 1, 2]]]'


def record_of(path):
    with open(path) as handle:
        return json.load(handle)


def test_a_killed_worker_s_spare_files_go_at_the_next_start_and_nothing_else(tmp_path):
    """The record names what to remove; a file whose name is not a spare's stays, whatever the record says."""
    spare = tmp_path / ('%sabc-image.qcow2' % SPARE_PREFIX)
    making = tmp_path / ('%sdef-image.qcow2' % SPARE_PREFIX)
    taken = tmp_path / ('%sghi-image.qcow2' % SPARE_PREFIX)  # a clone job had taken it, not yet made it its disk
    victim = tmp_path / 'image.qcow2'
    for path in (spare, making, taken, victim):
        path.write_bytes(b'disk')
    record = tmp_path / 'state' / 'kvm1.spares.json'
    record.parent.mkdir()
    record.write_text(json.dumps({'ready': {KEY: [str(spare), str(victim)]},
                                  'making': {KEY: [str(making), 'relative/%sx' % SPARE_PREFIX]},
                                  'taken': {'ghi': [str(taken)]}}))
    spares = SpareClones(str(record), LayoutCache())
    assert not spare.exists() and not making.exists() and not taken.exists()
    assert victim.read_bytes() == b'disk', 'a file the record named, but no spare, was removed'
    assert record_of(str(record)) == NO_SPARES
    assert oct(os.stat(record).st_mode & 0o777) == '0o600'
    spares.close()


def test_a_garbled_record_is_ignored(tmp_path):
    record = tmp_path / 'kvm1.spares.json'
    record.write_text('{not json')
    SpareClones(str(record), LayoutCache()).close()
    assert record_of(str(record)) == NO_SPARES


def test_a_spare_that_cannot_be_made_leaves_no_file_and_nothing_to_take(tmp_path):
    """The image's disk cannot be copied (here: it is a directory, which cp refuses): the clone that asked copies as
    before."""
    record = tmp_path / 'kvm1.spares.json'
    spares = SpareClones(str(record), LayoutCache())
    source = str(tmp_path / 'image.qcow2')
    os.mkdir(source)
    spares.replenish('image', [(source, 'qcow2')])
    spares.replenish('image', [(source, 'qcow2')])  # one being made already: not a second
    assert len(spares.state()['making']) == 1
    wait_until(lambda: spares.state() == NO_SPARES, 30, 'the failed spare to be dropped')
    assert [name for name in os.listdir(tmp_path) if name.startswith(SPARE_PREFIX)] == []
    assert os.listdir(source) == []
    assert record_of(str(record)) == NO_SPARES
    assert spares.take(image_key('image', [source]), [source]) is None
    spares.close()


def test_nothing_is_made_after_close(tmp_path):
    spares = SpareClones(str(tmp_path / 'kvm1.spares.json'), LayoutCache())
    spares.close()
    (tmp_path / 'image.qcow2').write_bytes(b'disk')
    spares.replenish('image', [(str(tmp_path / 'image.qcow2'), 'qcow2')])
    assert spares.state() == NO_SPARES
