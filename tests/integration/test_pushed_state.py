# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Pushed host state on the testbed (issue 21): the host workers push their libvirtd's domains to the client
worker; listings and placement read them in one request and survey a libvirtd only where no state is young enough.

What a user does next is what is checked: a domain made or removed by hand shows within host_state.max_age; a clone is
listed the moment its job ends; a change maglica_vm makes is listed at once; an image defined a moment ago is
placed on."""

from __future__ import annotations

import os
import subprocess

import pytest

from maglica.controller import cloud as maglica_cloud
from polling import wait_until

HAND_MADE = 'hand.made'
IMAGE = 'pushed.original'
CLONE = 'pushed-clone.test'


def virsh_by_hand(testbed, host, *args):
    """virsh as an operator runs it: nothing tells Maglica (Testbed.virsh would)."""
    return subprocess.run(['virsh', '-q', '-c', testbed.uri(host)] + list(args), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, universal_newlines=True, check=True).stdout


def hand_made_xml(testbed, name):
    path = os.path.join(testbed.dir, '%s.xml' % name)
    with open(path, 'w') as handle:
        handle.write("<domain type='qemu'><name>%s</name><memory unit='MiB'>128</memory><vcpu>1</vcpu>"
                     "<os><type arch='x86_64' machine='pc'>hvm</type></os></domain>" % name)
    return path


def listed(config, name, host):
    """(whether `name` is in image_list, the source of `host`'s data) of one listing."""
    listing = maglica_cloud.image_list(config, [name])
    source = next(h['source'] for h in listing['hosts'] if h['host'] == host)
    return any(i['name'] == name and i['host'] == host for i in listing['images']), source


@pytest.fixture
def hand_made(testbed):
    try:
        yield HAND_MADE
    finally:
        if HAND_MADE in testbed.domains('host2'):
            testbed.virsh('host2', 'undefine', HAND_MADE, check=False)


def test_a_domain_made_and_removed_by_hand_is_seen_from_the_pushed_state_within_max_age(cloud, testbed, hand_made):
    max_age = cloud.config.host_state['max_age']
    # (An earlier test's change of host2 through Testbed.virsh has it surveyed until its next snapshot.)
    wait_until(lambda: listed(cloud.config, hand_made, 'host2') == (False, 'pushed'), max_age, 'a pushed state of host2')
    virsh_by_hand(testbed, 'host2', 'define', hand_made_xml(testbed, hand_made))
    wait_until(lambda: listed(cloud.config, hand_made, 'host2') == (True, 'pushed'), max_age,
               'the hand-made domain in the pushed state of host2')
    virsh_by_hand(testbed, 'host2', 'undefine', hand_made)
    wait_until(lambda: listed(cloud.config, hand_made, 'host2') == (False, 'pushed'), max_age,
               'the hand-made domain gone from the pushed state of host2')


@pytest.fixture
def image(testbed):
    testbed.define_image('host1', IMAGE, testbed.image('debian'))
    try:
        yield IMAGE
    finally:
        for name in (CLONE, IMAGE):
            if name in testbed.domains('host1'):
                testbed.virsh('host1', 'undefine', name, '--remove-all-storage', check=False)


def test_what_jobs_and_maglica_vm_change_is_listed_at_once(cloud, image):
    wait_until(lambda: listed(cloud.config, image, 'host1') == (True, 'pushed'), cloud.config.host_state['max_age'],
               'the image in the pushed state of host1')
    clone = maglica_cloud.clone(cloud.config, image, CLONE, start=False, customize=False, timeout=300)
    assert clone['host'] == 'host1' and clone['surveyed'] == []
    # The job's end pushed host1's state before its result: no wait for a poll.
    listing = maglica_cloud.vm_list(cloud.config, [CLONE])
    assert [(vm['name'], vm['host']) for vm in listing['vms']] == [(CLONE, 'host1')]
    assert {h['host']: h['source'] for h in listing['hosts']}['host1'] == 'pushed'
    # maglica_vm changes the definition itself (no job): the client worker is told, so no older state is read.
    assert maglica_cloud.ensure_vm(cloud.config, CLONE, vcpus=2)['changed'] is True
    assert [vm['vcpus'] for vm in maglica_cloud.vm_list(cloud.config, [CLONE])['vms']] == [2]
    assert maglica_cloud.ensure_vm(cloud.config, CLONE, state='absent')['changed'] is True
    assert maglica_cloud.vm_list(cloud.config, [CLONE])['vms'] == []


def test_an_image_defined_by_hand_a_moment_ago_is_placed_on(cloud, testbed, hand_made):
    """Not yet in any pushed state: placement asks the hosts before it says the image is nowhere."""
    virsh_by_hand(testbed, 'host2', 'define', hand_made_xml(testbed, hand_made))
    plan = maglica_cloud.plan_clone(cloud.config, hand_made, 'placed.test')
    assert plan['host'] == 'host2' and plan['exists'] is False
