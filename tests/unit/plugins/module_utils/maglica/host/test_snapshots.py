# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Snapshots on libvirt's test driver (test:///default implements snapshots, revert and the agent's fsfreeze):
the host worker's action, the controller's plan (check mode, idempotence), name parsing, refusals, removal.
The booted proof is tests/integration/test_day_two.py."""

from __future__ import annotations

import uuid

import libvirt
import pytest

from maglica.cluster import config, snapshots, virt
from maglica.controller import snapshots as controller_snapshots
from maglica.errors import ConflictError, MaglicaError, MessageError, NotFoundError
from maglica.host import clone
from maglica.host import snapshots as host_snapshots
from maglica.protocol import messages

TEST_NS = "xmlns:test='http://libvirt.org/schemas/domain/test/1.0'"


def domain_xml(name, running=True, disk_format='qcow2', pflash=False, clone=True):
    metadata = ("<metadata><maglica:clone xmlns:maglica='%s' image='img' job='%s' complete='yes'/></metadata>"
                % (virt.METADATA_NS, uuid.uuid4().hex)) if clone else ''
    loader = "<loader readonly='yes' type='pflash'>/usr/share/OVMF/OVMF_CODE.fd</loader>" if pflash else ''
    return ("<domain type='test' %s><name>%s</name><memory>262144</memory><vcpu>1</vcpu><os><type>hvm</type>%s</os>%s%s"
            "<devices><disk type='file' device='disk'><driver name='qemu' type='%s'/><source file='/nowhere/%s.disk'/>"
            "<target dev='vda' bus='virtio'/></disk>"
            "<disk type='file' device='cdrom'><driver name='qemu' type='raw'/><target dev='hdc' bus='ide'/><readonly/></disk>"
            "</devices></domain>"
            % (TEST_NS, name, loader, metadata, '' if running else '<test:runstate>5</test:runstate>', disk_format, name))


@pytest.fixture
def conn():
    """test:///default (shared by every connection of this process), with the domains a test defines removed after."""
    connection = virt.connect('test:///default')
    defined = []

    def define(name=None, **kwargs):
        name = name or 'snap-%s' % uuid.uuid4().hex[:8]
        dom = connection.defineXML(domain_xml(name, **kwargs))
        if kwargs.get('running', True):
            dom.create()
        defined.append(name)
        return name, dom
    connection.define = define
    yield connection
    for name in defined:
        dom = connection.lookupByName(name) if name in connection.listDefinedDomains() + [d.name() for d in connection.listAllDomains(0)] else None
        if dom is not None:
            if dom.isActive():
                dom.destroy()
            dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA)
    connection.close()


@pytest.fixture
def cloud_config():
    return config.validate({'hosts': [{'name': 'a', 'uri': 'test:///default'}]})


def run(conn, name, snapshot, state='present', reconcile=False, **extra):
    args = dict({'name': name, 'snapshot': snapshot, 'state': state}, **extra)
    messages.check_fields('job.args', dict(args), messages.ACTIONS['vm.snapshot'])
    return host_snapshots.run_snapshot(conn, 'a', args, reconcile)


# -- names and messages -----------------------------------------------------------------------

@pytest.mark.parametrize('bad', ['', '-x', '../etc', 'a b', 'a/b', 'x' * 64, 'a\n', 'é', None, 3])
def test_snapshot_names_are_parsed_before_anything(bad):
    with pytest.raises(MaglicaError, match='not valid'):
        snapshots.check_name(bad)
    args = {'name': 'vm1', 'snapshot': bad, 'state': 'present'}
    with pytest.raises(MessageError):
        messages.new_job('a', 'vm.snapshot', args)


def test_job_arguments_are_checked_field_by_field():
    good = {'name': 'vm1', 'snapshot': 'before-upgrade.1', 'state': 'present', 'memory': True, 'description': 'apt', 'keep': 3}
    assert messages.new_job('a', 'vm.snapshot', good)['args'] == good
    for bad in ({'state': 'gone'}, {'keep': 0}, {'keep': True}, {'memory': 'yes'}, {'description': 'two\nlines'},
                {'description': 'x' * 1025}, {'extra': 1}):
        with pytest.raises(MessageError):
            messages.new_job('a', 'vm.snapshot', dict(good, **bad))
    with pytest.raises(MessageError):
        messages.new_job('a', 'vm.snapshot_list', {'name': '../vm'})


def test_snapshot_xml_escapes_the_description():
    xml = host_snapshots._snapshot_xml('s1', '<b> & "x"', ['vda'], False)
    assert '&lt;b&gt; &amp; "x"' in xml and '<memory snapshot="no"/>' in xml


# -- the host worker's action ---------------------------------------------------------------------

def test_create_is_idempotent_and_quiesces_a_running_guest_through_its_agent(conn):
    name, dom = conn.define()
    first = run(conn, name, 's1', description='before the upgrade')
    assert first['changed'] is True and first['consistency'] == 'quiesced' and first['snapshots'] == ['s1'], first
    # Thawed again: the test driver counts frozen filesystems, and a second thaw has none left.
    assert dom.fsThaw(None, 0) == 0
    listed = snapshots.domain_snapshots(dom)
    assert [(s['name'], s['memory'], s['description'], s['current']) for s in listed] == [('s1', True, 'before the upgrade', True)]
    again = run(conn, name, 's1')
    assert again['changed'] is False and again['snapshots'] == ['s1']


def test_memory_snapshot_is_not_frozen(conn):
    name, _dom = conn.define()
    result = run(conn, name, 'mem', memory=True)
    assert result['consistency'] == 'memory' and result['memory'] is True and not result['warnings']


def test_a_stopped_vm_gets_an_offline_snapshot_without_memory(conn):
    name, dom = conn.define(running=False)
    result = run(conn, name, 'cold')
    assert result['consistency'] == 'offline' and result['memory'] is False
    assert snapshots.domain_snapshots(dom)[0]['memory'] is False


def test_revert_is_a_change_and_delete_is_idempotent(conn):
    name, dom = conn.define()
    run(conn, name, 's1')
    run(conn, name, 's2')
    assert snapshots.domain_snapshots(dom)[-1]['current'] is True
    reverted = run(conn, name, 's1', state='reverted')
    assert reverted['changed'] is True
    assert [s['name'] for s in snapshots.domain_snapshots(dom) if s['current']] == ['s1']
    assert run(conn, name, 's1', state='reverted')['changed'] is True  # a rollback always rolls back
    with pytest.raises(NotFoundError, match='no snapshot named nope'):
        run(conn, name, 'nope', state='reverted')
    assert run(conn, name, 's2', state='absent')['changed'] is True
    assert run(conn, name, 's2', state='absent')['changed'] is False
    assert [s['name'] for s in snapshots.domain_snapshots(dom)] == ['s1']


def test_keep_prunes_the_oldest_but_never_the_one_asked_for(conn):
    name, dom = conn.define()
    for snap in ('s1', 's2', 's3'):
        run(conn, name, snap)
    result = run(conn, name, 's4', keep=2)
    assert result['pruned'] == ['s1', 's2'] and result['snapshots'] == ['s3', 's4']
    # s3 exists already: keep 1 prunes s4, never s3.
    result = run(conn, name, 's3', keep=1)
    assert result['changed'] is True and result['pruned'] == ['s4'] and result['snapshots'] == ['s3']
    assert run(conn, name, 's3', keep=1)['changed'] is False


def test_reconcile_takes_a_snapshot_made_before_the_restart_for_done(conn):
    name, _dom = conn.define()
    run(conn, name, 's1')
    again = run(conn, name, 's1', reconcile=True)
    assert again['reconciled'] is True and again['changed'] is False
    assert run(conn, name, 'gone', state='absent', reconcile=True)['reconciled'] is True
    # A revert that happened before the restart is not done twice.
    run(conn, name, 's1', state='reverted')
    assert run(conn, name, 's1', state='reverted', reconcile=True)['reconciled'] is True


def test_raw_disks_are_refused_naming_the_reason(conn):
    name, dom = conn.define(disk_format='raw')
    with pytest.raises(ConflictError, match='disk vda is raw, not qcow2: only qcow2 disks can hold internal snapshots'):
        run(conn, name, 's1')
    assert dom.listAllSnapshots(0) == []


def test_uefi_pflash_is_refused_before_libvirt_10_9(conn):
    name, dom = conn.define(pflash=True)
    assert conn.getLibVersion() < snapshots.PFLASH_INTERNAL_VERSION
    with pytest.raises(ConflictError, match=r'boots UEFI from pflash: internal snapshots of such VMs need libvirt 10\.9\.0 or later'):
        run(conn, name, 's1')
    assert dom.listAllSnapshots(0) == []


def test_an_original_image_is_not_snapshotted(conn):
    name, dom = conn.define(running=False, clone=False)
    with pytest.raises(ConflictError, match='original image'):
        run(conn, name, 's1')
    assert dom.listAllSnapshots(0) == []


def test_reverting_an_external_snapshot_names_libvirt_9_9():
    xml = ("<domainsnapshot><name>ext</name><state>disk-snapshot</state><creationTime>1</creationTime>"
           "<memory snapshot='no'/><disks><disk name='vda' snapshot='external'/></disks></domainsnapshot>")
    info = snapshots.parse_snapshot(xml)
    assert info['external'] is True and info['memory'] is False
    with pytest.raises(ConflictError, match=r'reverting external snapshots needs libvirt 9\.9\.0 or later, and this host has libvirt 9\.0\.0'):
        snapshots.check_revert_support(info, 9000000, 'vm1', 'a')
    snapshots.check_revert_support(info, 9009000, 'vm1', 'a')


def test_a_hostile_snapshot_name_from_libvirt_is_refused():
    with pytest.raises(MaglicaError, match='not valid'):
        snapshots.parse_snapshot('<domainsnapshot><name>../../x</name></domainsnapshot>')


# -- removal --------------------------------------------------------------------------------------

def test_removing_a_vm_removes_its_snapshots(conn):
    """libvirt refuses to undefine a domain with snapshot metadata; remove_domain says to drop it (their data lives in
    the disks it deletes). Failed before the fix: "cannot delete inactive domain with 1 snapshots"."""
    name, _dom = conn.define(running=False)
    run(conn, name, 's1')
    clone.remove_domain(conn, name)
    assert name not in conn.listDefinedDomains()


# -- the controller's plan ------------------------------------------------------------------------

def test_plan_check_mode_and_idempotence_need_no_job(conn, cloud_config):
    name, dom = conn.define()
    plan = controller_snapshots.snapshot(cloud_config, name, 's1', check_mode=True)
    assert plan['changed'] is True and plan['after'] == {'snapshots': ['s1']} and 'job' not in plan
    assert dom.listAllSnapshots(0) == []  # check mode made nothing
    run(conn, name, 's1')
    run(conn, name, 's2')
    same = controller_snapshots.snapshot(cloud_config, name, 's1')  # no client worker here: no job may be needed
    assert same['changed'] is False and same['before'] == same['after'] == {'snapshots': ['s1', 's2']}
    pruning = controller_snapshots.snapshot(cloud_config, name, 's3', keep=2, check_mode=True)
    assert pruning['pruned'] == ['s1'] and pruning['after'] == {'snapshots': ['s2', 's3']}
    assert controller_snapshots.snapshot(cloud_config, name, 'nope', state='absent')['changed'] is False
    assert controller_snapshots.snapshot(cloud_config, name, 's1', state='reverted', check_mode=True)['changed'] is True
    with pytest.raises(NotFoundError):
        controller_snapshots.snapshot(cloud_config, name, 'nope', state='reverted', check_mode=True)
    with pytest.raises(MaglicaError, match='keep'):
        controller_snapshots.snapshot(cloud_config, name, 's1', keep=0)


def test_plan_refuses_in_check_mode_too(conn, cloud_config):
    name, _dom = conn.define(disk_format='raw')
    with pytest.raises(ConflictError, match='not qcow2'):
        controller_snapshots.snapshot(cloud_config, name, 's1', check_mode=True)


def test_cli_snapshot_commands_parse():
    from maglica.controller import cli
    parser = cli.build_parser()
    args = parser.parse_args(['vm', 'snapshot', 'create', '--name', 'web1', '--snapshot', 's1', '--memory', '--keep', '2'])
    assert (args.name, args.snapshot, args.memory, args.keep, args.timeout) == ('web1', 's1', True, 2, 600)
    assert parser.parse_args(['vm', 'snapshot', 'list', '--name', 'web1', '--json']).json is True
    for verb in ('revert', 'delete'):
        assert parser.parse_args(['vm', 'snapshot', verb, '--name', 'web1', '--snapshot', 's1']).snapshot == 's1'
    with pytest.raises(SystemExit):
        parser.parse_args(['vm', 'snapshot', 'revert', '--name', 'web1'])


def test_listing_reads_no_disk_outside_the_pools(conn):
    """A domain's XML names its disks; only a volume of a pool, inside that pool's directory, is read by qemu-img."""
    name, _dom = conn.define()
    run(conn, name, 's1')
    listing = host_snapshots.list_snapshots(conn, 'a', name)
    assert [(s['name'], s['size']) for s in listing['snapshots']] == [('s1', 0)]
    assert listing['warnings'] == ["disk vda is in no libvirt pool: its snapshots' sizes are not read"]
    pool = conn.storagePoolLookupByName('default-pool')
    vol = pool.createXML("<volume><name>%s.qcow2</name><capacity>1048576</capacity><target><format type='qcow2'/></target>"
                         "</volume>" % name, 0)
    try:
        assert host_snapshots.pool_disk(conn, '/default-pool/%s.qcow2' % name) == '/default-pool/%s.qcow2' % name
        assert host_snapshots.pool_disk(conn, '/default-pool/../etc/passwd') is None
        assert host_snapshots.pool_disk(conn, '/etc/passwd') is None
    finally:
        vol.delete(0)


def test_reconcile_thaws_a_guest_a_dead_worker_left_frozen(conn):
    """The worker died after the snapshot was made and before its thaw: the re-run finds the snapshot (done) and
    thaws the guest all the same."""
    name, dom = conn.define()
    run(conn, name, 's1')
    assert dom.fsFreeze(None, 0) > 0  # what a worker killed between freeze and thaw leaves
    result = run(conn, name, 's1', reconcile=True)
    assert result['reconciled'] is True and result['changed'] is False
    assert dom.fsThaw(None, 0) == 0, 'nothing left frozen'
