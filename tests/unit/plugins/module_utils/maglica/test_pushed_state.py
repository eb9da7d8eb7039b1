# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Host workers push their host's state; listings and placement read it from the client worker and survey a host's
libvirtd only where no pushed state is young enough. Real daemons over CURVE, each host a real libvirt test driver
(test:///default: one running domain, `test`, in each process that opens it)."""

from __future__ import annotations

import copy
import os
import signal

import pytest

from maglica.controller import cli
from maglica.controller import pushed as pushed_states
from maglica.controller import vm as vm_listing
from maglica.client_worker.worker import REPLY_BUDGET
from maglica.controller.client import Client
from maglica.errors import ConflictError
from maglica.protocol import messages
from test_workers import HOSTS, WORKER_HOSTS, Cloud, host_request
from unit_helpers import Daemon, wait_until

MAX_AGE = 6.0  # well over a loaded machine's heartbeat lag (0.5 s heartbeats, 0.2 s polls)
PUSH_TIMEOUT = 30


@pytest.fixture(scope='module')
def cloud(tmp_path_factory):
    cloud = Cloud(str(tmp_path_factory.mktemp('pushing')), curve=True)
    cloud.host_settings = {'uri': 'test:///default'}
    cloud.host_worker_settings = {'state_poll_interval': 0.2, 'state_interval': 600}
    cloud.extra_settings = {'host_state': {'max_age': MAX_AGE}}
    try:
        cloud.start()
        yield cloud
    finally:
        cloud.stop()


def pushed(cloud, view='domains', **kwargs):
    with Client(cloud.config) as client:
        return {entry['host']: entry for entry in client.states(view, **kwargs)}


def young_states_of(cloud, hosts):
    """The pushed states once every host of `hosts` has one young enough to be read, else None."""
    states = pushed(cloud)
    return states if all(h in states and states[h]['age_s'] <= MAX_AGE for h in hosts) else None


def test_host_workers_push_their_hosts_state(cloud):
    states = wait_until(lambda: young_states_of(cloud, WORKER_HOSTS), PUSH_TIMEOUT, 'both host workers to push')
    assert set(states) == set(WORKER_HOSTS)  # `lonely` has no host worker, so no state
    for host in WORKER_HOSTS:
        state = states[host]['state']
        assert [(d['name'], d['active']) for d in state['domains']] == [('test', True)]
        assert state['memory_mb'] > 0 and state['cpus'] > 0


def test_listings_read_the_pushed_states_and_survey_the_rest(cloud):
    wait_until(lambda: young_states_of(cloud, WORKER_HOSTS), PUSH_TIMEOUT, 'both host workers to push')
    listing = vm_listing.vm_list(cloud.config)
    assert {h['host']: h['source'] for h in listing['hosts']} == {'kvm1': 'pushed', 'kvm10': 'pushed', 'lonely': 'survey'}
    assert all(h['age_s'] <= MAX_AGE for h in listing['hosts'])
    # (This process's test:///default, which lonely is surveyed on, may hold domains other tests defined in it.)
    assert sorted(vm['name'] for vm in listing['vms'] if vm['host'] in WORKER_HOSTS) == ['test', 'test']
    assert 'test' in [vm['name'] for vm in listing['vms'] if vm['host'] == 'lonely']
    cloud.config.host_state['fresh'] = True
    try:
        fresh = vm_listing.vm_list(cloud.config)
    finally:
        cloud.config.host_state['fresh'] = False
    assert {h['source'] for h in fresh['hosts']} == {'survey'}
    # Each host surveyed here, in this process's test:///default: `test` on every one.
    assert sorted(vm['host'] for vm in fresh['vms'] if vm['name'] == 'test') == sorted(HOSTS)


def test_placement_reads_the_same_view_pushed_or_surveyed(cloud):
    """kvm1's view comes from its pushed state, lonely's from a survey of the same kind of test driver: alike."""
    wait_until(lambda: young_states_of(cloud, WORKER_HOSTS), PUSH_TIMEOUT, 'both host workers to push')
    answers = {a['host']: a for a in pushed_states.answers(cloud.config, 'placement', images=['test'], names=['test', 'web1'])}
    assert answers['kvm1']['source'] == 'pushed' and answers['lonely']['source'] == 'survey'
    # Alike but for disk sizes, which a push carries (listings show them) and placement's survey does not ask for.
    without_sizes = [dict(view, domains=[dict(d, disks=[dict(disk, capacity=None, allocation=None) for disk in d['disks']])
                                         for d in view['domains']]) for view in (answers['kvm1']['result'], answers['lonely']['result'])]
    assert without_sizes[0] == without_sizes[1]
    view = answers['kvm1']['result']
    assert view['totals'] == {'active': 1, 'committed_mb': view['domains'][0]['memory_mb'], 'committed_vcpus': view['domains'][0]['vcpus'],
                              'groups': {}}
    assert [d['name'] for d in view['domains']] == ['test']
    # Found in one request: `test` on every host (kvm1 and kvm10 pushed, lonely surveyed).
    with pytest.raises(ConflictError, match='test is defined on several hosts: kvm1, kvm10, lonely'):
        pushed_states.find_vm(cloud.config, 'test')
    # Domains named neither as images nor as names are counted in the totals, not sent.
    assert pushed(cloud, 'placement', images=['other'], names=['web1'])['kvm1']['state']['domains'] == []


def test_a_state_its_host_worker_stops_vouching_for_ages_into_a_survey(cloud):
    wait_until(lambda: young_states_of(cloud, WORKER_HOSTS), PUSH_TIMEOUT, 'both host workers to push')
    stopped = cloud.host_workers['kvm10'].proc
    stopped.send_signal(signal.SIGSTOP)
    try:
        wait_until(lambda: pushed(cloud)['kvm10']['age_s'] > MAX_AGE, PUSH_TIMEOUT, "kvm10's state to grow older than host_state.max_age")
        sources = {h['host']: h['source'] for h in vm_listing.vm_list(cloud.config)['hosts']}
        assert sources == {'kvm1': 'pushed', 'kvm10': 'survey', 'lonely': 'survey'}
    finally:
        stopped.send_signal(signal.SIGCONT)
    wait_until(lambda: young_states_of(cloud, WORKER_HOSTS), PUSH_TIMEOUT, "kvm10's host worker to vouch for its state again")


def test_maglica_host_refresh_keeps_a_hosts_older_states_unread(cloud):
    """After a change by hand, `maglica host refresh HOST`: no state of HOST taken before it is read again. kvm1's
    host worker is stopped, so that no newer one can come until it is continued."""
    wait_until(lambda: young_states_of(cloud, WORKER_HOSTS), PUSH_TIMEOUT, 'both host workers to push')
    stopped = cloud.host_workers['kvm1'].proc
    stopped.send_signal(signal.SIGSTOP)
    try:
        assert 'kvm1' in pushed(cloud)
        assert cli.main(['--config', cloud.config_path, 'host', 'refresh', 'kvm1']) == 0
        assert set(pushed(cloud)) == {'kvm10'}
        sources = {h['host']: h['source'] for h in vm_listing.vm_list(cloud.config)['hosts']}
        assert sources == {'kvm1': 'survey', 'kvm10': 'pushed', 'lonely': 'survey'}
        assert cli.main(['--config', cloud.config_path, 'host', 'refresh', 'nosuch']) == cli.EXIT_FAILED
    finally:
        stopped.send_signal(signal.SIGCONT)
    wait_until(lambda: young_states_of(cloud, WORKER_HOSTS), PUSH_TIMEOUT, "kvm1's newer state")


def test_a_restarted_client_worker_is_sent_every_state_again(cloud):
    """It keeps pushed states in memory only: each host worker's next report is told to push (state_interval is
    600 s here, so nothing else would send them within the deadline)."""
    wait_until(lambda: young_states_of(cloud, WORKER_HOSTS), PUSH_TIMEOUT, 'both host workers to push')
    cloud.client_worker.stop()
    cloud.client_worker = Daemon('maglica.client_worker.worker', ['--config', cloud.config_path],
                                 os.path.join(cloud.base, 'client_worker.restarted.log'))
    wait_until(cloud.answers, PUSH_TIMEOUT, 'the client worker to answer again')
    states = wait_until(lambda: young_states_of(cloud, WORKER_HOSTS), PUSH_TIMEOUT, 'both host workers to push again')
    assert [d['name'] for d in states['kvm1']['state']['domains']] == ['test']


GOOD_STATE = {'memory_mb': 1024, 'cpus': 2, 'storage': {}, 'domains': [
    {'name': 'web1', 'uuid': '6695eb01-f6a4-8304-79aa-97f2502e193f', 'active': True, 'state': 'running', 'vcpus': 1,
     'memory_mb': 512, 'disks': [], 'interfaces': [], 'ssh_host_keys': [], 'vnc_port': None, 'clone_of': None,
     'clone_mode': None, 'spread_group': None, 'image': None}]}


def test_curve_a_host_key_pushes_its_own_host_only_and_reads_no_states(cloud):
    digest = 'a' * 64
    forged = host_request(cloud, 'kvm1', {'type': 'state', 'host': 'lonely', 'digest': digest, 'state': GOOD_STATE})
    assert forged == {'ok': False, 'error': 'the key of kvm1 may not report for lonely'}
    assert host_request(cloud, 'kvm1', {'type': 'states', 'view': 'domains'}) == \
        {'ok': False, 'error': 'kvm1 may not make states requests'}
    assert 'lonely' not in pushed(cloud)


@pytest.mark.parametrize('domain, error', [
    ({'name': '../etc'}, 'not a valid name'),
    ({'uuid': 'not-a-uuid'}, 'not a valid name'),
    ({'state': 'exploded'}, 'must be one of'),
    ({'memory_mb': -1}, 'must be between'),
    ({'disks': [{'device': 'disk', 'path': 'x' * 5000}]}, 'longer than'),
    ({'owner': 'root'}, 'unknown field'),
])
def test_a_pushed_state_that_does_not_validate_is_refused_whole(cloud, domain, error):
    bad = dict(GOOD_STATE, domains=[dict(GOOD_STATE['domains'][0], **domain)])
    reply = host_request(cloud, 'lonely', {'type': 'state', 'host': 'lonely', 'digest': 'b' * 64, 'state': bad})
    assert reply['ok'] is False and error in reply['error']
    assert 'lonely' not in pushed(cloud)


def test_a_valid_push_of_a_host_without_a_worker_is_kept_and_read_in_pages(cloud):
    """(Last here: it leaves a state for lonely.) A valid state, taken from lonely's own key: as big as the client
    worker takes (one more domain and it could not go on in a reply), so that the three hosts' states take two
    replies."""
    wait_until(lambda: young_states_of(cloud, WORKER_HOSTS), PUSH_TIMEOUT, 'both host workers to push')
    # The images view keeps the original images only (inactive, no clone metadata).
    image = dict(GOOD_STATE['domains'][0], name='debian.original', active=False, state='shutoff')
    clone = dict(image, name='web2', clone_of='debian.original', clone_mode='full')
    small = dict(GOOD_STATE, domains=GOOD_STATE['domains'] + [image, clone])
    assert host_request(cloud, 'lonely', {'type': 'state', 'host': 'lonely', 'digest': 'd' * 64, 'state': small}) == {'ok': True}
    assert [d['name'] for d in pushed(cloud, 'images')['lonely']['state']['domains']] == ['debian.original']
    assert [d['name'] for d in pushed(cloud, 'domains')['lonely']['state']['domains']] == ['web1', 'debian.original', 'web2']
    key = 'ssh-ed25519 ' + 'A' * 1500
    big = dict(GOOD_STATE, domains=[])
    while True:
        domain = dict(GOOD_STATE['domains'][0], name='web%d' % len(big['domains']), ssh_host_keys=[key])
        grown = dict(big, domains=big['domains'] + [domain])
        if messages.encoded_size(grown) > REPLY_BUDGET - 256:
            break
        big = grown
    too_big = dict(big, domains=big['domains'] + [dict(big['domains'][0], name='one-more')])
    reply = host_request(cloud, 'lonely', {'type': 'state', 'host': 'lonely', 'digest': 'c' * 64, 'state': too_big})
    assert reply['ok'] is False and 'over the %d a reply can carry' % (REPLY_BUDGET - 256) in reply['error']
    reply = host_request(cloud, 'lonely', {'type': 'state', 'host': 'lonely', 'digest': 'c' * 64, 'state': big})
    assert reply == {'ok': True}
    with Client(cloud.config) as client:
        first = client.call('states', view='domains')
        assert first['more'] is True and len(first['states']) < 3
        entry = pushed(cloud)['lonely']
    assert set(pushed(cloud)) == {'kvm1', 'kvm10', 'lonely'}
    assert entry['state'] == messages.check_fields('state', copy.deepcopy(big), messages.HOST_STATE)
    assert entry['age_s'] <= MAX_AGE
