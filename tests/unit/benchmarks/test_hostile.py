# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""bench-fuzz's hostile phases (benchmarks/hostile.py) make the kinds of case they promise, and each kind is what
it claims: a hostile image names the host secret or breaks a limit, a hostile agent value is no address.

Real qemu-img, a real HTTP server on 127.0.0.1 and libvirt's test driver, as the benchmark itself: one case of
every image kind goes through run_import (about a second).
"""

from __future__ import annotations

import os
import random
import struct
import sys

from maglica.controller import reach
from maglica.host import image_fetch
from maglica.protocol import import_job

BENCHMARKS = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..', '..', 'benchmarks'))
sys.path.insert(0, BENCHMARKS)

import hostile  # noqa: E402  pylint: disable=wrong-import-position


def test_the_image_generator_makes_every_kind_and_each_names_the_secret_or_breaks_a_limit(tmp_path):
    rng = random.Random(1)
    secret = hostile.Secret(str(tmp_path), rng)
    cases = list(hostile.image_cases(rng, len(hostile.IMAGE_KINDS), str(tmp_path), secret))
    assert [c['kind'] for c in cases] == list(hostile.IMAGE_KINDS)
    by_kind = {c['kind']: c for c in cases}
    for kind in ('data_file', 'json_backing', 'backing'):
        assert os.path.basename(secret.path).encode() in by_kind[kind]['body'], kind
    descriptor = by_kind['vmdk_descriptor']['body']
    assert b'createType=' in descriptor and (b'secret.bin' in descriptor or b'/etc/passwd' in descriptor)
    assert by_kind['data_file']['body'].startswith(image_fetch.QCOW2_MAGIC)
    assert by_kind['vmdk_binary']['body'].startswith(b'KDMV')
    assert b'"driver": "raw"' in by_kind['json_backing']['body'] and b'json:' in by_kind['json_backing']['body']
    huge = by_kind['huge_virtual']
    virtual = struct.unpack('>Q', huge['body'][24:32])[0]  # the qcow2 header's size field
    assert virtual > huge['args'].get('max_virtual_size', import_job.DEFAULT_MAX_VIRTUAL_SIZE)
    raw = by_kind['raw_small']['body']
    assert len(raw) < image_fetch.MIN_RAW_BYTES or len(raw) % 512
    assert by_kind['file_url']['url'].startswith('file:///')
    assert by_kind['garbled']['body'][:4] != b'' and not by_kind['garbled']['must_refuse']
    assert all(c['must_refuse'] for c in cases if c['kind'] != 'garbled')


def test_one_image_of_every_kind_is_refused_and_nothing_of_the_secret_reaches_the_pool(tmp_path):
    done = hostile.run_image(random.Random(2), len(hostile.IMAGE_KINDS), str(tmp_path / 'image'))
    assert done['problems'] == []
    counts = done['counts']
    assert sorted(counts['kinds']) == sorted(hostile.IMAGE_KINDS)
    assert counts['leaked'] == 0 and counts['left_behind'] == 0 and counts['accepted'] == 0
    assert counts['refused'] == counts['cases'] >= len(hostile.IMAGE_KINDS) - 1  # a garbled image may import clean


def test_the_server_generator_makes_every_kind_each_with_the_reason_its_refusal_must_give():
    cases = list(hostile.server_cases(random.Random(3), len(hostile.SERVER_KINDS)))
    assert [c['kind'] for c in cases] == list(hostile.SERVER_KINDS)
    assert set(hostile.SERVER_REASONS) == set(hostile.SERVER_KINDS)
    for case in cases:
        assert 1 <= case['args']['max_download_time'] <= 30
    redirects = {c['kind']: c['case'].get('to', '') for c in cases if c['route'] == 'redirect'}
    assert redirects['redirect_ftp'].lower().startswith('ftp://')
    assert redirects['redirect_file'].lower().startswith('file://')
    assert redirects['redirect_loop'] == ''  # to itself


def test_every_hostile_agent_value_is_no_address_and_a_reply_mixes_good_and_hostile():
    rng = random.Random(4)
    for kind in hostile.AGENT_KINDS:
        for _round in range(50):
            value = hostile.hostile_value(rng, kind)
            assert reach.parse_address(value) is None, (kind, value)
    cases = [hostile.agent_case(rng, index) for index in range(200)]
    assert {kind for case in cases for kind, _value in case['hostile']} == set(hostile.AGENT_KINDS)
    assert all(reach.parse_address(address) for case in cases for address in case['good'])


def test_the_agent_phase_finds_no_hostile_value_kept():
    done = hostile.run_agent(random.Random(5), 50)
    assert done['problems'] == []
    assert done['counts']['refused'] == done['counts']['cases'] > 50
