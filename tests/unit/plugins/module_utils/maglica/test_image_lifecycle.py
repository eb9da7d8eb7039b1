# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""image_lifecycle.py: the plans of removing an image and making one from a VM, and the seal's text rewrites."""

from __future__ import annotations

import pytest

from maglica.controller import cli
from maglica.host import cloudinit
from maglica.controller import image_lifecycle
from maglica.protocol import messages
from maglica.errors import ConflictError, HostError, MessageError, NotFoundError
from maglica.host import image_from_vm
from maglica.host import guest_network
from maglica.host import guest
from maglica.cluster import domains


def domain(name, active=False, clone_of=None, image=None, state=None):
    return {'name': name, 'active': active, 'clone_of': clone_of, 'image': image, 'state': state or ('running' if active else 'shutoff'),
            'disks': []}


def answer(host, *domains, reachable=True):
    return {'host': host, 'reachable': reachable, 'error': None if reachable else '%s: connection refused' % host,
            'result': list(domains) if reachable else None}


# -- removal ----------------------------------------------------------------------------------------

def test_plan_remove_says_where_it_is_and_where_not():
    found = {'h2': None, 'h1': {'domain': domain('img'), 'dependants': []}}
    plan, dependants = image_lifecycle.plan_remove('img', found, False)
    assert plan == [{'host': 'h1', 'state': 'remove', 'dependants': []}, {'host': 'h2', 'state': 'absent', 'dependants': []}]
    assert dependants == []


def test_plan_remove_refuses_linked_clones_naming_each_with_its_host():
    found = {'h1': {'domain': domain('img'), 'dependants': ['b.test', 'a.test']},
             'h2': {'domain': domain('img'), 'dependants': ['c.test']}}
    with pytest.raises(ConflictError) as refused:
        image_lifecycle.plan_remove('img', found, False)
    assert str(refused.value) == ('image img is the backing file of linked clones: a.test, b.test (on h1); c.test (on h2); '
                                  'use force_dependants to remove them with it')
    plan, dependants = image_lifecycle.plan_remove('img', found, True)
    assert dependants == ['a.test', 'b.test', 'c.test'] and [p['state'] for p in plan] == ['remove', 'remove']


@pytest.mark.parametrize('vm, words', [
    (domain('img', active=True), 'img on h1 is a running VM'),
    (domain('img', clone_of='debian.original'), 'img on h1 is a clone of debian.original'),
])
def test_plan_remove_refuses_a_vm_even_with_force(vm, words):
    with pytest.raises(ConflictError, match=words + ', not an original image'):
        image_lifecycle.plan_remove('img', {'h1': {'domain': vm, 'dependants': []}, 'h2': None}, True)


def test_check_removal_of_an_image_needs_force_only_for_its_clones():
    image = domain('img')
    domains.check_removal('img', 'h1', image, [], False, image=True)  # no force needed for the image itself
    domains.check_removal('img', 'h1', image, ['a.test'], True, image=True)
    with pytest.raises(ConflictError, match='linked clones: a.test: use force_dependants'):
        domains.check_removal('img', 'h1', image, ['a.test'], False, image=True)
    with pytest.raises(ConflictError, match='is a clone of x.original, not an original image'):
        domains.check_removal('img', 'h1', domain('img', clone_of='x.original'), [], True, image=True)
    with pytest.raises(ConflictError, match='is an original image'):  # vm.remove without image=true: as before
        domains.check_removal('img', 'h1', image, [], False)


def test_vm_remove_job_takes_image_flag():
    messages.validate_job(messages.new_job('h1', 'vm.remove', {'name': 'img', 'image': True, 'force_dependants': True}))
    with pytest.raises(MessageError, match='job.args.image must be bool'):
        messages.validate_job(messages.new_job('h1', 'vm.remove', {'name': 'img', 'image': 'yes'}))


# -- from a VM ----------------------------------------------------------------------------------------

def test_plan_from_vm_picks_the_vms_host():
    answers = [answer('h1', domain('debian.original')), answer('h2', domain('web.test'))]
    assert image_lifecycle.plan_from_vm(answers, 'web.original', 'web.test') == {'exists': False, 'host': 'h2'}


def test_plan_from_vm_is_idempotent_only_for_a_complete_image_from_that_vm():
    made = {'made_from': 'web.test', 'complete': 'yes'}
    answers = [answer('h2', domain('web.test'), domain('web.original', image=made))]
    assert image_lifecycle.plan_from_vm(answers, 'web.original', 'web.test') == {'exists': True, 'host': 'h2'}
    with pytest.raises(ConflictError, match='the name web.original is already taken by an image made from web.test on h2'):
        image_lifecycle.plan_from_vm(answers, 'web.original', 'other.test')
    half = [answer('h2', domain('web.test'), domain('web.original', image=dict(made, complete='no')))]
    with pytest.raises(ConflictError, match='already taken'):
        image_lifecycle.plan_from_vm(half, 'web.original', 'web.test')


@pytest.mark.parametrize('answers, name, vm, error, words', [
    ([answer('h1', domain('web.test'), domain('db.test', active=True))], 'db.test', 'web.test', ConflictError,
     'the name db.test is already taken by a VM on h1'),
    ([answer('h1', domain('web.test', active=True, state='running'))], 'web.original', 'web.test', ConflictError,
     'web.test is running on h1: shut it down first'),
    ([answer('h1', domain('web.test', active=True, state='paused'))], 'web.original', 'web.test', ConflictError,
     'web.test is paused on h1'),
    ([answer('h1', domain('other.test'))], 'web.original', 'web.test', NotFoundError, 'no VM named web.test on any host'),
    ([answer('h1', domain('web.test')), answer('h2', domain('web.test'))], 'web.original', 'web.test', ConflictError,
     'web.test is defined on several hosts \\(h1, h2\\)'),
    ([answer('h1', domain('web.test')), answer('h2', reachable=False)], 'web.original', 'web.test', HostError,
     'cannot tell whether the name web.original is free, nothing was changed: h2: connection refused'),
    ([answer('h1', domain('web.test'))], 'web.test', 'web.test', ConflictError, 'the image needs a name of its own'),
])
def test_plan_from_vm_refusals(answers, name, vm, error, words):
    with pytest.raises(error, match=words):
        image_lifecycle.plan_from_vm(answers, name, vm)


def test_from_vm_job_is_validated():
    messages.validate_job(messages.new_job('h1', 'image.from_vm', {'image': 'web.original', 'vm': 'web.test'}))
    with pytest.raises(MessageError, match='not a valid name'):
        messages.validate_job(messages.new_job('h1', 'image.from_vm', {'image': '../etc', 'vm': 'web.test'}))


# -- the seal's text rewrites ----------------------------------------------------------------------------

def test_generic_dhclient_sends_the_guests_own_name_again():
    text = 'option rfc3442-classless-static-routes code 121 = array of unsigned integer 8;\nsend host-name = "web1.test";\nrequest subnet-mask;\n'
    assert image_from_vm.generic_dhclient(text) == text.replace('"web1.test"', 'gethostname()')
    # What the clone customisation then writes over it: the seal's and the clone's rewrites meet.
    assert guest_network.dhclient_conf(image_from_vm.generic_dhclient(text), guest.GuestSettings('web2.test')) == \
        text.replace('web1', 'web2')


def test_generic_interfaces_drops_hostname_options_only():
    text = 'auto lo\niface lo inet loopback\n\nauto eth0\niface eth0 inet dhcp\n    hostname web1\n'
    assert image_from_vm.generic_interfaces(text) == 'auto lo\niface lo inet loopback\n\nauto eth0\niface eth0 inet dhcp\n'
    assert image_from_vm.generic_interfaces('# hostname at column 0 is a comment line\n') == '# hostname at column 0 is a comment line\n'


def test_generic_ifcfg_and_keyfile_drop_what_binds_them_to_one_machine():
    ifcfg = 'DEVICE=eth0\nHWADDR=52:54:00:aa:bb:cc\nUUID=5fb06bd0\nBOOTPROTO=dhcp\nDHCP_HOSTNAME=web1.test\nONBOOT=yes\n'
    assert image_from_vm.generic_ifcfg(ifcfg) == 'DEVICE=eth0\nBOOTPROTO=dhcp\nONBOOT=yes\n'
    keyfile = '[connection]\nid=eth0\n[ethernet]\nmac-address=52:54:00:AA:BB:CC\n[ipv4]\nmethod=auto\ndhcp-hostname=web1.test\n'
    assert image_from_vm.generic_keyfile(keyfile) == '[connection]\nid=eth0\n[ethernet]\n[ipv4]\nmethod=auto\n'


def test_maglica_seed_is_recognised_by_its_instance_id():
    assert image_from_vm.is_maglica_seed('local-hostname: web1\ninstance-id: iid-maglica-0123abcd\n')
    assert image_from_vm.is_maglica_seed('instance-id: "iid-maglica-0123abcd"\n')
    # What the clone customisation writes.
    assert image_from_vm.is_maglica_seed(cloudinit.meta_data(guest.GuestSettings('web1.test'), 'iid-maglica-0123abcd'))
    assert not image_from_vm.is_maglica_seed('instance-id: iid-local01\n')
    assert not image_from_vm.is_maglica_seed('# instance-id: iid-maglica-0123abcd\n')


# -- the command line ----------------------------------------------------------------------------------

def test_cli_parses_image_remove_and_create():
    parser = cli.build_parser()
    args = parser.parse_args(['image', 'remove', '--name', 'img', '--on', 'h1', '--on', 'h2', '--force-dependants', '--json'])
    assert (args.function, args.name, args.on, args.force_dependants, args.json) == (cli.image_remove, 'img', ['h1', 'h2'], True, True)
    args = parser.parse_args(['image', 'create', '--name', 'img', '--from-vm', 'web.test'])
    assert (args.function, args.name, args.from_vm, args.timeout) == (cli.image_create, 'img', 'web.test', 3600)
    with pytest.raises(SystemExit):
        parser.parse_args(['image', 'create', '--name', 'img'])
