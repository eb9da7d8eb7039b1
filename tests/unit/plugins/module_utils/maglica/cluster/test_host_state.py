# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A host's pushed state: what a real libvirt (the test driver) snapshot holds, that the messages schema takes it,
what its digest notices, and that placement decides alike from its cut-down view and from a whole survey."""

from __future__ import annotations

import copy

import libvirt
from hypothesis import given, settings, strategies as st

from maglica.cluster import host_state
from maglica.controller import cloud, placement
from maglica.errors import MaglicaError
from maglica.protocol import messages

IMAGES = ('img-a', 'img-b')
HOSTNAMES = ('web1', 'web2', 'db1')


def test_a_snapshot_of_a_real_libvirt_validates_as_a_pushed_state():
    conn = libvirt.open('test:///default')
    try:
        state = host_state.snapshot(conn)
    finally:
        conn.close()
    assert [d['name'] for d in state['domains']] == ['test']
    assert state['memory_mb'] > 0 and state['cpus'] > 0
    checked = messages.check_fields('state', copy.deepcopy(state), messages.HOST_STATE)
    assert checked == state
    assert len(messages.encode({'type': 'state', 'host': 'kvm1', 'digest': host_state.digest(state), 'state': state})) \
        < messages.MAX_FRAME_BYTES


def domain(name, active=False, clone_of=None, memory_mb=512, vcpus=1, group=None, allocation=0):
    return {'name': name, 'uuid': '00000000-0000-0000-0000-%012d' % abs(hash(name) % 10 ** 12), 'active': active,
            'state': 'running' if active else 'shutoff', 'vcpus': vcpus, 'memory_mb': memory_mb,
            'disks': [{'device': 'disk', 'target': 'vda', 'path': '/var/lib/libvirt/images/%s.qcow2' % name,
                       'format': 'qcow2', 'capacity': 10 << 30, 'allocation': allocation}],
            'interfaces': [], 'vnc_port': None, 'clone_of': clone_of, 'clone_mode': 'full' if clone_of else None,
            'ssh_host_keys': [], 'spread_group': group, 'image': None}


def test_the_digest_ignores_what_grows_by_itself_and_sees_what_was_done():
    state = {'memory_mb': 4096, 'cpus': 4, 'domains': [domain('img-a'), domain('web1', True, 'img-a', allocation=1)],
             'storage': {'img-a': {'disk_bytes': 1 << 30, 'pool': 'default', 'pool_free_bytes': 50 << 30}}}
    before = host_state.digest(state)
    grown = copy.deepcopy(state)
    grown['domains'][1]['disks'][0]['allocation'] = 5 << 30
    grown['storage']['img-a']['pool_free_bytes'] = 40 << 30
    assert host_state.digest(grown) == before
    for change in (lambda s: s['domains'].append(domain('made-with-virsh')),
                   lambda s: s['domains'].pop(1),
                   lambda s: s['domains'][1].update(active=False, state='shutoff'),
                   lambda s: s['domains'][1].update(memory_mb=1024)):
        changed = copy.deepcopy(state)
        change(changed)
        assert host_state.digest(changed) != before


domains_of_a_host = st.lists(
    st.builds(domain, name=st.sampled_from(IMAGES + HOSTNAMES + ('other1', 'other2', 'other3')), active=st.booleans(),
              clone_of=st.sampled_from((None, 'img-a')), memory_mb=st.integers(64, 4096), vcpus=st.integers(1, 4),
              group=st.sampled_from((None, 'g1', 'g2'))),
    max_size=8, unique_by=lambda d: d['name'])


def host_answer(name, domains, view=None):
    images = [d['name'] for d in domains if d['name'] in IMAGES and not d['active'] and not d['clone_of']]
    state = {'memory_mb': 8192, 'cpus': 8, 'domains': domains,
             'storage': {image: {'disk_bytes': 1 << 30, 'pool': 'default', 'pool_free_bytes': 100 << 30} for image in images}}
    result = state if view is None else host_state.placement_view(state, *view)
    return {'host': name, 'weight': 10, 'uri': 'test:///default', 'reachable': True, 'error': None, 'result': result}


class NoConfig:
    hosts = ()


@settings(max_examples=200, deadline=None)
@given(hosts=st.lists(domains_of_a_host, min_size=1, max_size=4), image=st.sampled_from(IMAGES),
       hostname=st.sampled_from(HOSTNAMES), in_flight=st.sampled_from(HOSTNAMES), policy=st.sampled_from(placement.POLICIES),
       group=st.sampled_from((None, 'g1')))
def test_placement_decides_alike_from_the_pushed_view_and_from_a_whole_survey(hosts, image, hostname, in_flight, policy, group):
    names = ['kvm%d' % n for n in range(len(hosts))]
    slots = [{'host': names[0], 'job_id': 'a' * 32, 'hostname': in_flight, 'image': image, 'start': True,
              'clone_mode': 'full', 'spread_group': 'g1'}]
    view = ({image}, {hostname, in_flight})
    whole = [host_answer(name, domains) for name, domains in zip(names, hosts)]
    cut = [host_answer(name, domains, view) for name, domains in zip(names, hosts)]
    request = placement.Request(image=image, hostname=hostname, spread_group=group)

    def outcome(step, answers):
        """What a step of planning gives, or the error it raises (type and words)."""
        try:
            return step(answers)
        except MaglicaError as e:
            return type(e).__name__, str(e)

    def decide(answers):
        decision = placement.place(cloud.host_states(NoConfig(), answers, slots, {image}), request, policy)
        return decision.host, decision.candidates, decision.filtered
    assert outcome(decide, cut) == outcome(decide, whole)
    # The name check and the image check read the same domains.
    for check in (lambda answers: cloud._existing(answers, hostname), lambda answers: cloud._check_image(answers, image)):
        assert outcome(check, cut) == outcome(check, whole)
