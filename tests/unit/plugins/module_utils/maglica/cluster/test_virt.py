# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""virt.py, clone.py's libvirt helpers and cloud.py's listing and placement, on the libvirt test driver.

Each simulated host is a `test:///PATH.xml` URI: every connection starts from
that file's state, so hosts never share domains. test:///default is shared by
the whole process: tests that change it undo their changes.
"""

from __future__ import annotations

import re
import uuid

import libvirt  # a missing libvirt fails the suite, never skips it
import pytest
import yaml

from maglica.controller import cloud, pushed
from maglica.host import clone
from maglica.cluster import config
from maglica.cluster import virt
from maglica.errors import ConfigError, ConflictError, HostError, MaglicaError, MessageError, NotFoundError
from maglica.cluster import domains


def test_libvirt_python_binding_is_there():
    assert libvirt.getVersion() > 0


UNREACHABLE_URI = 'test+tcp://127.0.0.254/default'  # nothing listens there
TEST_NS = "xmlns:test='http://libvirt.org/schemas/domain/test/1.0'"


def domain_xml(name, running=False, clone_of=None, disk=None, vnc_port=None, memory_kib=262144, vcpus=1):
    metadata = ''
    if clone_of:
        metadata = ("<metadata><maglica:clone xmlns:maglica='%s' image='%s' job='%s' complete='yes'/></metadata>"
                    % (virt.METADATA_NS, clone_of, uuid.uuid4().hex))
    devices = ''
    if disk:
        devices += ("<disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='%s'/>"
                    "<target dev='vda' bus='virtio'/></disk>" % disk)
    devices += "<interface type='network'><mac address='52:54:00:00:00:%02x'/><source network='default'/></interface>" % (len(name) % 256)
    if vnc_port:
        devices += "<graphics type='vnc' port='%d' autoport='no'/>" % vnc_port
    return ("<domain type='test' %s><name>%s</name><memory>%d</memory><vcpu>%d</vcpu><os><type>hvm</type></os>%s%s"
            "<devices>%s</devices></domain>"
            % (TEST_NS, name, memory_kib, vcpus, metadata, '' if running else '<test:runstate>5</test:runstate>', devices))


def node_file(tmp_path, name, domains):
    path = tmp_path / ('%s.xml' % name)
    path.write_text('<node>%s</node>' % ''.join(domains))
    return 'test://%s' % path


@pytest.fixture
def cloud_config(tmp_path):
    """Hosts a, b, c on the test driver and `down`, whose libvirtd cannot be reached.

    a: debian.original, vm1 and vm2 running, web-old (a stopped clone), shared
    b: debian.original, vm3 running, shared (a stopped clone)
    c: rhel.original
    """
    hosts = [
        {'name': 'a', 'uri': node_file(tmp_path, 'a', [
            domain_xml('debian.original', disk='/images/debian.qcow2'), domain_xml('vm1', running=True, vnc_port=5901),
            domain_xml('vm2', running=True), domain_xml('web-old', clone_of='debian.original'), domain_xml('shared', running=True)])},
        {'name': 'b', 'uri': node_file(tmp_path, 'b', [
            domain_xml('debian.original', disk='/images/debian.qcow2'), domain_xml('vm3', running=True),
            domain_xml('shared', clone_of='debian.original')])},
        {'name': 'c', 'uri': node_file(tmp_path, 'c', [domain_xml('rhel.original')])},
        {'name': 'down', 'uri': UNREACHABLE_URI},
    ]
    return config.validate({'hosts': hosts})


@pytest.fixture
def default_conn():
    conn = virt.connect('test:///default')
    defined = []

    def define(name, **kwargs):
        dom = conn.defineXML(domain_xml(name, **kwargs))
        defined.append(dom)
        return dom
    conn.define = define
    yield conn
    for dom in defined:
        if dom.isActive():
            dom.destroy()
        try:
            dom.undefine()
        except virt.libvirt().libvirtError:
            pass  # the test removed it itself
    conn.close()


# -- virt ---------------------------------------------------------------------

def test_describe_the_default_running_domain(default_conn):
    info = virt.describe(default_conn.lookupByName('test'))
    assert info['name'] == 'test' and info['active'] and info['state'] == 'running'
    assert info['vcpus'] == 2 and info['memory_mb'] == 8192
    assert info['disks'][0]['path'] == '/guest/diskimage1' and info['disks'][0]['capacity'] > 0
    assert info['interfaces'] == [{'type': 'network', 'mac': 'aa:bb:cc:dd:ee:ff'}]
    assert info['clone_of'] is None and not virt.is_image(info)


def test_describe_an_inactive_domain_and_sizes(default_conn):
    dom = default_conn.define('unit-image-%s' % uuid.uuid4().hex[:8], disk='/images/x.qcow2', memory_kib=524288, vcpus=3)
    info = virt.describe(dom, with_sizes=False)
    assert (info['active'], info['state'], info['vcpus'], info['memory_mb']) == (False, 'shutoff', 3, 512)
    assert info['disks'] == [{'device': 'disk', 'target': 'vda', 'path': '/images/x.qcow2', 'format': 'qcow2',
                              'capacity': None, 'allocation': None}]
    assert info['vnc_port'] is None
    assert virt.is_image(info)


def test_clone_metadata_makes_a_domain_not_an_image(default_conn):
    dom = default_conn.define('unit-clone-%s' % uuid.uuid4().hex[:8])
    assert virt.clone_metadata(dom) == {}
    clone.set_metadata(dom, image='debian.original', job='j1', mode='linked', complete='no')
    assert virt.clone_metadata(dom) == {'image': 'debian.original', 'job': 'j1', 'mode': 'linked', 'complete': 'no',
                                        'host_keys': []}
    info = virt.describe(dom)
    assert info['clone_of'] == 'debian.original' and not info['active'] and info['ssh_host_keys'] == []
    assert not virt.is_image(info), 'a stopped clone is never taken for an image'


def test_clone_metadata_keeps_the_public_host_keys(default_conn):
    dom = default_conn.define('unit-clone-%s' % uuid.uuid4().hex[:8])
    keys = ['ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKeyOne root@web1', 'ecdsa-sha2-nistp256 AAAAE2VjZHNh root@web1']
    clone.set_metadata(dom, host_keys=keys, image='debian.original', job='j2', mode='full', complete='yes')
    assert virt.clone_metadata(dom)['host_keys'] == keys
    assert virt.describe(dom)['ssh_host_keys'] == keys, 'a re-run and the inventory read them back'
    clone.set_metadata(dom, image='debian.original', job='j1', mode='linked', complete='yes')
    assert virt.clone_metadata(dom)['complete'] == 'yes', 'setting metadata again replaces it'


def test_vnc_port_and_list_domains(cloud_config):
    with virt.Connection(cloud_config, cloud_config.host('a'), readonly=True) as conn:
        domains = {d['name']: d for d in virt.list_domains(conn)}
    assert set(domains) == {'debian.original', 'vm1', 'vm2', 'web-old', 'shared'}
    assert domains['vm1']['vnc_port'] == 5901
    assert domains['web-old']['clone_of'] == 'debian.original'


def test_connect_error_names_the_uri():
    with pytest.raises(HostError, match='cannot connect to libvirtd at %s: .*Connection refused' % re.escape(UNREACHABLE_URI)):
        virt.connect(UNREACHABLE_URI, readonly=True)


def test_ask_hosts_reports_an_unreachable_host_and_keeps_order(cloud_config):
    answers = virt.ask_hosts(cloud_config, lambda conn, host: sorted(conn.listDefinedDomains()))
    assert [a['host'] for a in answers] == ['a', 'b', 'c', 'down']
    assert answers[0]['result'] == ['debian.original', 'web-old'] and answers[0]['reachable'] and answers[0]['error'] is None
    assert answers[2]['result'] == ['rhel.original']
    down = answers[3]
    assert not down['reachable'] and down['result'] is None and down['uri'] == UNREACHABLE_URI
    assert down['error'].startswith('down: cannot connect to libvirtd at %s' % UNREACHABLE_URI)


def test_ask_hosts_reports_a_failing_query_per_host(cloud_config):
    answers = virt.ask_hosts(cloud_config, lambda conn, host: conn.lookupByName('rhel.original').name(), hosts=['a', 'c'])
    assert [(a['host'], a['reachable'], a['result']) for a in answers] == [('a', False, None), ('c', True, 'rhel.original')]
    assert answers[0]['error'] == 'a: Domain not found'
    with pytest.raises(ConfigError, match='nohost'):  # a name not configured is refused, never left out
        virt.ask_hosts(cloud_config, lambda conn, host: 1, hosts=['nohost'])


def test_matches_and_units():
    assert virt.matches('debian.original', None) and virt.matches('debian.original', ['*.original'])
    assert not virt.matches('debian.original', ['rhel*', 'Debian*'])
    assert virt._to_mib(1048576, 'KiB') == 1024 and virt._to_mib(2, 'GiB') == 2048 and virt._to_mib(1073741824, 'bytes') == 1024


# -- clone.py helpers on the test driver --------------------------------------------

def test_lookup(default_conn):
    # remove_domain is not tested here: the test driver refuses its undefine flags (NVRAM, managed save).
    name = 'unit-lookup-%s' % uuid.uuid4().hex[:8]
    default_conn.define(name)
    assert domains.lookup(default_conn, name).name() == name
    assert domains.lookup(default_conn, 'no-such-domain') is None


def test_clone_disk_paths():
    info = {'disks': [{'device': 'cdrom', 'path': '/iso/x.iso'}, {'device': 'disk', 'path': '/var/lib/libvirt/images/img.qcow2'},
                      {'device': 'disk', 'path': None}, {'device': 'disk', 'path': '/data/second'}]}
    assert [p for _d, p in domains.clone_disk_paths(info, 'web1')] == ['/var/lib/libvirt/images/web1.qcow2', '/data/web1@disk1.img']


# -- cloud: image list ------------------------------------------------------------

def test_image_list(cloud_config):
    listing = cloud.image_list(cloud_config)
    expected = [('debian.original', 'a'), ('debian.original', 'b'), ('rhel.original', 'c')]
    assert [(i['name'], i['host']) for i in listing['images']] == expected
    assert listing['images'][0]['disks'][0]['path'] == '/images/debian.qcow2'
    report = {h['host']: h for h in listing['hosts']}
    assert [report[h]['images'] for h in ('a', 'b', 'c')] == [1, 1, 1]
    assert not report['down']['reachable'] and 'cannot connect' in report['down']['error']
    assert report['a']['reachable'] and report['a']['error'] is None


def test_image_list_patterns_and_hosts(cloud_config):
    assert [(i['name'], i['host']) for i in cloud.image_list(cloud_config, patterns=['rhel*'])['images']] == [('rhel.original', 'c')]
    only_b = cloud.image_list(cloud_config, hosts=['b'])
    assert [i['host'] for i in only_b['images']] == ['b'] and [h['host'] for h in only_b['hosts']] == ['b']
    with pytest.raises(ConfigError, match="host 'zzz' is not in the configuration"):
        cloud.image_list(cloud_config, hosts=['zzz'])


# -- cloud: plan_clone ---------------------------------------------------------------

def test_plan_clone_picks_the_least_loaded_holder(cloud_config):
    plan = cloud.plan_clone(cloud_config, 'debian.original', 'web1', allow_unreachable=True)
    assert not plan['exists'] and plan['host'] == 'b'
    assert [(c['host'], c['active'], c['score']) for c in plan['candidates']] == [('b', 1, 1.0), ('a', 3, 3.0)]
    assert len(plan['unreachable']) == 1 and plan['unreachable'][0].startswith('down: ')


def test_a_clone_is_refused_while_a_host_cannot_be_reached(cloud_config):
    """`down` may hold a VM called web1: cloning it elsewhere could make a second one. Fail closed, naming it."""
    with pytest.raises(HostError, match=r'cannot tell whether web1 is already defined: down cannot be reached \(down: '):
        cloud.plan_clone(cloud_config, 'debian.original', 'web1')
    with pytest.raises(HostError, match='down cannot be reached'):
        cloud.clone(cloud_config, 'debian.original', 'web1', check_mode=True)
    with pytest.raises(HostError, match='cannot tell whether web2 is already defined: down cannot'):
        cloud.clone_batch(cloud_config, [{'image': 'debian.original', 'hostname': 'web2'}], check_mode=True)
    # A VM found on a host that answered is found: nothing to refuse.
    assert cloud.plan_clone(cloud_config, 'debian.original', 'vm3')['exists']
    opted = cloud.clone(cloud_config, 'debian.original', 'web1', check_mode=True, allow_unreachable=True)
    assert opted['changed'] and opted['host'] == 'b' and opted['unreachable'][0].startswith('down: ')


def test_plan_clone_weight_changes_the_choice(tmp_path, cloud_config):
    hosts = [h.as_dict() for h in cloud_config.hosts]
    hosts[0]['weight'] = 40  # a: 3 active x 10 / 40 = 0.75 beats b's 1.0
    plan = cloud.plan_clone(config.validate({'hosts': hosts}), 'debian.original', 'web1', allow_unreachable=True)
    assert plan['host'] == 'a' and plan['candidates'][0]['score'] == 0.75


def test_plan_clone_host_override(cloud_config):
    assert cloud.plan_clone(cloud_config, 'debian.original', 'web1', host='a', allow_unreachable=True)['host'] == 'a'
    with pytest.raises(ConflictError, match='host c does not hold image debian.original; hosts that do: a, b'):
        cloud.plan_clone(cloud_config, 'debian.original', 'web1', host='c', allow_unreachable=True)
    with pytest.raises(ConfigError, match="host 'nowhere' is not in the configuration"):
        cloud.plan_clone(cloud_config, 'debian.original', 'web1', host='nowhere')


def test_plan_clone_image_not_found(cloud_config):
    with pytest.raises(NotFoundError) as caught:
        cloud.plan_clone(cloud_config, 'centos.original', 'web1', allow_unreachable=True)
    message = str(caught.value)
    assert message.startswith('image centos.original is not on any host (asked: a, b, c; unreachable: down: cannot connect')


def test_plan_clone_hostname_used_by_an_image(cloud_config):
    with pytest.raises(ConflictError, match='the hostname rhel.original is already used by an image on c'):
        cloud.plan_clone(cloud_config, 'debian.original', 'rhel.original')


def test_plan_clone_existing_hostname_is_not_changed(cloud_config):
    plan = cloud.plan_clone(cloud_config, 'debian.original', 'vm3')
    assert plan['exists'] and plan['host'] == 'b' and plan['domain']['name'] == 'vm3' and plan['candidates'] == []
    stopped_clone = cloud.plan_clone(cloud_config, 'debian.original', 'web-old')
    assert stopped_clone['exists'] and stopped_clone['host'] == 'a'


def test_plan_clone_same_name_on_two_hosts(cloud_config):
    with pytest.raises(ConflictError, match=r'shared is defined on several hosts \(a, b\): remove all but one'):
        cloud.plan_clone(cloud_config, 'debian.original', 'shared')


def test_plan_clone_image_must_be_an_inactive_original(cloud_config):
    with pytest.raises(ConflictError, match='image vm1 is running on a; an original image must be an inactive domain'):
        cloud.plan_clone(cloud_config, 'vm1', 'web1', allow_unreachable=True)
    with pytest.raises(ConflictError, match='web-old on a is a clone, not an original image'):
        cloud.plan_clone(cloud_config, 'web-old', 'web1', allow_unreachable=True)


def test_find_vm_surveys_the_hosts_when_no_client_worker_holds_their_states(cloud_config):
    host, domain = pushed.find_vm(cloud_config, 'vm3')
    assert host == 'b' and domain['active']
    with pytest.raises(NotFoundError, match='no VM named ghost on any reachable host'):
        pushed.find_vm(cloud_config, 'ghost')
    with pytest.raises(ConflictError, match='shared is defined on several hosts: a, b'):
        pushed.find_vm(cloud_config, 'shared')


def test_clone_check_mode_submits_nothing(cloud_config):
    result = cloud.clone(cloud_config, 'debian.original', 'web1', check_mode=True, network={'mode': 'dhcp', 'device': None},
                         allow_unreachable=True)
    assert result['changed'] and result['host'] == 'b' and result['job_id'] is None and result['job'] is None
    existing = cloud.clone(cloud_config, 'debian.original', 'vm3', check_mode=True)
    assert not existing['changed'] and existing['domain']['name'] == 'vm3'
    with pytest.raises(MessageError, match='mode static needs an address'):
        cloud.clone(cloud_config, 'debian.original', 'web1', network={'mode': 'static'}, check_mode=True)


def test_clone_args_drop_empty_values():
    args = cloud.clone_args('img', 'h', network={'mode': 'static', 'address': '192.0.2.1', 'gateway': None},
                            root_password_hash='', ssh_authorized_keys=('k1',))
    assert args == {'image': 'img', 'hostname': 'h', 'clone_mode': 'full', 'start': True,
                    'network': {'mode': 'static', 'address': '192.0.2.1'}, 'ssh_authorized_keys': ['k1']}


def test_clone_without_customisation():
    """customize=false travels in the job only when false, and refuses the settings it would not write."""
    assert 'customize' not in cloud.clone_args('img', 'h')
    assert cloud.clone_args('img', 'h', customize=False) == {
        'image': 'img', 'hostname': 'h', 'clone_mode': 'full', 'start': True, 'customize': False}
    with pytest.raises(MaglicaError, match='customize=false writes nothing'):
        cloud.clone_args('img', 'h', ssh_authorized_keys=['k1'], customize=False)


def test_clone_without_customisation_cannot_wait_for_ssh(cloud_config):
    with pytest.raises(MaglicaError, match='wait_for=ssh needs customize=true'):
        cloud.clone(cloud_config, 'debian.original', 'web1', customize=False, wait_for='ssh', check_mode=True)
    plan = cloud.clone(cloud_config, 'debian.original', 'web1', customize=False, check_mode=True, allow_unreachable=True)
    assert plan['changed'] and plan['job_id'] is None


def test_read_only_connections_are_kept_and_a_dead_one_is_replaced(cloud_config):
    """A listing reuses the connection of the last one; a kept connection that died is replaced at once."""
    virt.forget_connections()
    first = virt.survey(cloud_config, hosts=['a'])
    names = sorted(d['name'] for d in first[0]['result'])
    kept = virt._kept[first[0]['uri']]
    again = virt.survey(cloud_config, hosts=['a'])
    assert virt._kept[first[0]['uri']] is kept and again[0]['result'] == first[0]['result']
    kept.close()  # as if its libvirtd had gone away behind our back
    answer = virt.survey(cloud_config, hosts=['a'])[0]
    assert answer['reachable'] and sorted(d['name'] for d in answer['result']) == names, answer
    assert virt._kept[first[0]['uri']] is not kept
    virt.forget_connections()
    assert virt._kept == {}


def test_plan_clone_explains_resources_and_counts_given_reservations(tmp_path):
    """resources policy on the test driver: a host whose configured memory is too small is filtered with its
    reason; reservations passed in count; exclude_hosts and spread_group reach the decision."""
    image = domain_xml('debian.original', memory_kib=2 * 1048576, vcpus=2)
    hosts = [{'name': 'small', 'memory_mb': 1126, 'uri': node_file(tmp_path, 'small', [image])},
             {'name': 'big1', 'memory_mb': 4096, 'uri': node_file(tmp_path, 'big1', [image])},
             {'name': 'big2', 'memory_mb': 4096, 'uri': node_file(tmp_path, 'big2', [image])}]
    cfg = config.validate({'hosts': hosts, 'placement': {'policy': 'resources'}})
    slot = {'host': 'big1', 'job_id': 'a' * 32, 'hostname': 'web0', 'image': 'debian.original', 'start': True,
            'clone_mode': 'full', 'spread_group': 'web'}
    plan = cloud.plan_clone(cfg, 'debian.original', 'web1', slots=[slot])
    assert plan['host'] == 'big2' and plan['policy'] == 'resources' and plan['seen'] == []
    assert plan['filtered'] == [{'host': 'small', 'reason': 'small: 1.1 GiB uncommitted, clone needs 2 GiB'}]
    assert [(c['host'], c['reserved'], c['free_memory_mb']) for c in plan['candidates']] == [('big2', 0, 4096), ('big1', 1, 2048)]
    with_group = cloud.plan_clone(cfg, 'debian.original', 'web1', spread_group='web', slots=[slot])
    assert with_group['host'] == 'big2' and [c['group_members'] for c in with_group['candidates']] == [0, 1]
    forced = cloud.plan_clone(cfg, 'debian.original', 'web1', host='big1', slots=[slot])
    assert forced['host'] == 'big1' and forced['seen'] == [slot['job_id']], 'the reservations the client worker will check'
    with pytest.raises(cloud.placement.NoHostFits) as caught:
        cloud.plan_clone(cfg, 'debian.original', 'web1', exclude_hosts=['big2'], slots=[slot, dict(slot, job_id='b' * 32, hostname='web9')])
    assert str(caught.value) == ('no host fits a clone of debian.original as web1: small: 1.1 GiB uncommitted, clone needs 2 GiB; '
                                 'big1: 0 MiB uncommitted, clone needs 2 GiB; big2: excluded (exclude_hosts)')
    with pytest.raises(ConfigError, match="host 'nowhere' is not in the configuration"):
        cloud.plan_clone(cfg, 'debian.original', 'web1', exclude_hosts=['nowhere'], slots=[])


def test_clone_batch_check_mode_plans_every_vm(tmp_path):
    image = domain_xml('debian.original', memory_kib=1048576)
    hosts = [{'name': name, 'memory_mb': 2048, 'uri': node_file(tmp_path, name, [image] + extra)}
             for name, extra in (('h1', [domain_xml('old', clone_of='debian.original')]), ('h2', []), ('h3', []))]
    cfg = config.validate({'hosts': hosts, 'placement': {'policy': 'resources'}, 'security': {'curve': False},
                           'client': {'host': '127.0.0.254', 'rep_port': 1}, 'jobs': {'request_timeout': 0.2}})
    vms = [{'image': 'debian.original', 'hostname': 'web%d' % n, 'spread_group': 'web'} for n in range(6)]
    vms.append({'image': 'debian.original', 'hostname': 'old'})
    batch = cloud.clone_batch(cfg, vms, check_mode=True)
    assert batch['changed'] and [r['changed'] for r in batch['results']] == [True] * 6 + [False]
    assert [p['host'] for p in batch['plan']] == ['h1', 'h2', 'h3', 'h1', 'h2', 'h3', 'h1']
    assert batch['results'][0]['warnings'][0].startswith('client worker: no answer'), 'said, not fatal, in check mode'
    with pytest.raises(cloud.placement.NoHostFits, match='as web6: h1: 0 MiB uncommitted'):
        cloud.clone_batch(cfg, [dict(vm, hostname='web%d' % n) for n, vm in enumerate(vms[:6] * 2)][:7], check_mode=True)
    with pytest.raises(MaglicaError, match='vms name web0 more than once'):
        cloud.clone_batch(cfg, [vms[0], vms[0]], check_mode=True)
    with pytest.raises(MaglicaError, match=r'vms\[0\] has unknown key\(s\) wait'):
        cloud.clone_batch(cfg, [dict(vms[0], wait=True)], check_mode=True)


def test_plan_clone_of_a_name_in_flight_points_at_its_job(tmp_path):
    image = domain_xml('debian.original')
    hosts = [{'name': name, 'uri': node_file(tmp_path, name, [image])} for name in ('h1', 'h2')]
    cfg = config.validate({'hosts': hosts})
    slot = {'host': 'h2', 'job_id': 'c' * 32, 'hostname': 'web1', 'image': 'debian.original', 'start': True, 'clone_mode': 'full'}
    plan = cloud.plan_clone(cfg, 'debian.original', 'web1', slots=[slot])
    assert (plan['exists'], plan['host'], plan['candidates'], plan['seen']) == (False, 'h2', [], [slot['job_id']])
    other = cloud.plan_clone(cfg, 'debian.original', 'web2', slots=[slot])
    assert other['host'] == 'h1', 'the clone on its way counts on h2'


def test_cli_vm_clone_refuses_while_a_host_cannot_be_reached_unless_allowed(cloud_config, tmp_path, capsys):
    from maglica.controller import cli
    path = tmp_path / 'maglica.conf'
    path.write_text(yaml.safe_dump({'hosts': [h.as_dict() for h in cloud_config.hosts]}))
    command = ['--config', str(path), 'vm', 'clone', '--image', 'debian.original', '--hostname', 'web1', '--dry-run']
    assert cli.main(command) == cli.EXIT_FAILED
    assert 'down cannot be reached' in capsys.readouterr().err
    assert cli.main(command + ['--allow-unreachable']) == cli.EXIT_OK
    assert 'web1 would go to b' in capsys.readouterr().out


def test_asking_hosts_by_name_refuses_an_unknown_name_instead_of_leaving_it_out(cloud_config):
    """One resolver (Config.target_names) for every command: a misspelt host is an error naming the known ones."""
    answers = virt.ask_hosts(cloud_config, lambda conn, host: host.name, hosts=['c', 'a'])
    assert [a['host'] for a in answers] == ['a', 'c'] and all(a['result'] == a['host'] for a in answers)
    assert virt.ask_hosts(cloud_config, lambda conn, host: host.name, hosts=[]) == []
    with pytest.raises(ConfigError, match=r"\bkvm9\b.*\ba, b, c, down\b"):
        virt.ask_hosts(cloud_config, lambda conn, host: host.name, hosts=['a', 'kvm9'])
