# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""controller/migration.py: live or cold from the VM's state, and placement's choice of a destination (the clones'
placement, never the source, the VM's own needs and spread group, a stopped linked clone only where its image is)."""

from __future__ import annotations

import pytest

from maglica.controller import migration, placement
from maglica.errors import ConflictError
from maglica.protocol import messages


def domain(active=True, **extra):
    return dict({'name': 'web1', 'active': active, 'memory_mb': 1024, 'vcpus': 1, 'clone_of': 'deb.original',
                 'clone_mode': 'linked', 'spread_group': None}, **extra)


def states(*specs):
    """HostStates: (host, active domains, images held, spread group members)."""
    found = []
    for order, (host, active, images, groups) in enumerate(specs):
        state = placement.HostState(host=host, weight=10, order=order, active=active, memory_total_mb=4096, cpus=2,
                                    groups=dict(groups))
        for image in images:
            state.images[image] = placement.ImageOnHost(512, 1, 0, None)
        found.append(state)
    return found


@pytest.mark.parametrize('active, live, expected', [(True, None, True), (False, None, False), (True, True, True), (False, False, False)])
def test_running_goes_live_and_stopped_goes_cold(active, live, expected):
    assert migration.choose_live('web1', domain(active), live) is expected


def test_live_for_a_stopped_vm_and_cold_for_a_running_one_are_refused_naming_it():
    with pytest.raises(ConflictError, match='web1 is not running: it cannot be migrated live'):
        migration.choose_live('web1', domain(False), True)
    with pytest.raises(ConflictError, match='web1 is running: a cold migration needs it stopped'):
        migration.choose_live('web1', domain(True), False)


def test_placement_never_chooses_the_source_even_when_it_is_the_least_loaded():
    hosts = states(('kvm1', 0, [], {}), ('kvm2', 5, [], {}), ('kvm3', 3, [], {}))
    request = migration.vm_request('web1', domain(), 'kvm1', True, hosts)
    decision = placement.decide(hosts, request, 'seed')
    assert decision.host == 'kvm3' and 'kvm1' not in [c['host'] for c in decision.candidates]


def test_the_spread_group_is_kept_when_the_vm_moves():
    hosts = states(('kvm1', 1, [], {'web': 1}), ('kvm2', 0, [], {'web': 1}), ('kvm3', 4, [], {}))
    request = migration.vm_request('web1', domain(spread_group='web'), 'kvm1', True, hosts)
    assert placement.decide(hosts, request, 'seed').host == 'kvm3'


def test_a_stopped_linked_clone_goes_only_where_its_image_is_and_a_running_one_anywhere():
    hosts = states(('kvm1', 0, ['deb.original'], {}), ('kvm2', 0, [], {}), ('kvm3', 2, ['deb.original'], {}))
    cold = migration.vm_request('web1', domain(False), 'kvm1', False, hosts)
    assert placement.decide(hosts, cold, 'seed').host == 'kvm3'
    hosts = states(('kvm1', 0, ['deb.original'], {}), ('kvm2', 0, [], {}), ('kvm3', 2, ['deb.original'], {}))
    live = migration.vm_request('web1', domain(True), 'kvm1', True, hosts)
    assert placement.decide(hosts, live, 'seed').host == 'kvm2'


def test_the_resources_policy_counts_what_the_vm_itself_needs():
    hosts = states(('kvm1', 0, [], {}), ('kvm2', 0, [], {}), ('kvm3', 0, [], {}))
    hosts[1].committed_mb = 3500  # 596 MiB left: the VM's 1024 do not fit
    request = migration.vm_request('web1', domain(), 'kvm1', True, hosts)
    decision = placement.decide(hosts, request, 'resources')
    assert decision.host == 'kvm3' and any(f['host'] == 'kvm2' and 'needs 1 GiB' in f['reason'] for f in decision.filtered)


def test_a_migration_job_is_validated_field_by_field():
    job = messages.new_job('kvm1', 'vm.migrate', {'name': 'web1', 'destination': 'kvm2', 'live': True})
    assert messages.validate_job(job)['args'] == {'name': 'web1', 'destination': 'kvm2', 'live': True}
    for args, problem in (({'name': 'web1', 'destination': 'kvm2', 'live': 'yes'}, 'live must be bool'),
                          ({'name': 'web1', 'destination': '../etc', 'live': True}, 'is not a valid name'),
                          ({'name': 'web1', 'live': True}, "needs the field 'destination'"),
                          ({'name': 'web1', 'destination': 'kvm2', 'live': True, 'path': '/etc'}, 'unknown field')):
        with pytest.raises(Exception, match=problem):
            messages.validate_job(dict(job, args=args))
