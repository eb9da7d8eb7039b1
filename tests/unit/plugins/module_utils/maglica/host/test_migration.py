# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""host/migration.py, the parts that need no second hypervisor (the rest: tests/integration/test_day_two.py): which
snapshots cannot travel, the destination XML of a disk copied whole, the order snapshots are redefined in, the sha256
of a sparse stream, and the intents a restarted worker reads back."""

from __future__ import annotations

import hashlib

import pytest

from maglica.errors import HostError
from maglica.host import clone, migration
from maglica.host.image_copy import _Digest

INTERNAL = "<domainsnapshot><name>a</name><memory snapshot='internal'/><disks><disk name='vda' snapshot='internal'/></disks></domainsnapshot>"
EXTERNAL = ("<domainsnapshot><name>b</name><memory snapshot='no'/><disks><disk name='vda' snapshot='external'>"
            "<source file='/var/lib/libvirt/images/x.b'/></disk></disks></domainsnapshot>")
EXTERNAL_MEMORY = "<domainsnapshot><name>c</name><memory snapshot='external' file='/tmp/m'/></domainsnapshot>"


def test_external_snapshots_are_named_and_internal_ones_travel():
    snaps = [('a', None, INTERNAL, False), ('b', 'a', EXTERNAL, False), ('c', 'b', EXTERNAL_MEMORY, True)]
    assert migration._external_snapshots(snaps) == ['b', 'c']
    assert migration._external_snapshots(snaps[:1]) == []


def test_a_disk_copied_whole_loses_its_backing_chain_in_the_destination_xml():
    xml = ("<domain><name>v</name><devices>"
           "<disk type='file' device='disk'><source file='/p/v.qcow2'/><backingStore type='file'><source file='/p/img.qcow2'/>"
           "</backingStore><target dev='vda'/></disk>"
           "<disk type='file' device='disk'><source file='/p/w.qcow2'/><backingStore type='file'><source file='/p/img2.qcow2'/>"
           "</backingStore><target dev='vdb'/></disk></devices></domain>")
    full = migration._Disk('vda', '/p/v.qcow2', 'qcow2', 1, 1, '/p/img.qcow2')
    out = migration._dest_xml(xml, [full])
    assert '/p/img.qcow2' not in out and '/p/img2.qcow2' in out, out


class FakeSnapshot:
    """Stands in for libvirt's snapshot objects of a domain: the parent-child order is what is tested here (a real
    tree of internal snapshots is made by tests/integration/test_day_two.py)."""

    def __init__(self, name, parent, snaps):
        self.name, self.parent, self.snaps = name, parent, snaps

    def getName(self):
        return self.name

    def getParent(self, flags):
        import libvirt
        if self.parent is None:
            raise libvirt.libvirtError('no parent')
        return self.snaps[self.parent]

    def getXMLDesc(self, flags):
        return '<domainsnapshot><name>%s</name></domainsnapshot>' % self.name


class FakeDomain:
    def __init__(self, tree, current):
        self.snaps = {}
        for name, parent in tree:
            self.snaps[name] = FakeSnapshot(name, parent, self.snaps)
        self.current = current

    def hasCurrentSnapshot(self, flags):
        return self.current is not None

    def snapshotCurrent(self, flags):
        return self.snaps[self.current]

    def listAllSnapshots(self, flags):
        return list(reversed(list(self.snaps.values())))


def test_snapshots_are_redefined_parents_first_and_the_current_one_marked():
    dom = FakeDomain([('z-root', None), ('a-child', 'z-root'), ('b-grandchild', 'a-child'), ('c-second-root', None)], 'a-child')
    order = migration._snapshots(dom)
    names = [s[0] for s in order]
    assert names.index('z-root') < names.index('a-child') < names.index('b-grandchild')
    assert [s[0] for s in order if s[3]] == ['a-child']


def test_the_digest_of_a_sparse_stream_is_the_sha256_of_the_file_holes_as_zeros():
    digest = _Digest()
    digest.data(b'head')
    digest.hole(3 * 1024 * 1024 + 5)
    digest.data(b'tail')
    assert digest.hexdigest() == hashlib.sha256(b'head' + b'\0' * (3 * 1024 * 1024 + 5) + b'tail').hexdigest()


def test_a_restarted_worker_reads_back_the_migration_intents_and_steps():
    rows = []
    own = clone.Ownership(save=lambda kind, key, detail: rows.append((kind, key, detail)))
    own.intend_file('/var/lib/libvirt/images/v.qcow2')
    own.intend_domain(migration._dest_key('kvm2', 'v'), '1234')
    own.intend_volume(migration._dest_key('kvm2', 'default'), 'v.qcow2')
    own.note('migrated')
    again = clone.Ownership.from_rows(rows)
    assert again.notes == {'migrated'} and again.domains == {'kvm2:v': '1234'} and again.volumes == {'kvm2:default/v.qcow2'}
    assert again.files == {'/var/lib/libvirt/images/v.qcow2'}


# -- a restarted worker's reconcile, against two real libvirt test-driver hypervisors (one node file each) ----------

NODE = """<node><pool type='dir'><name>default</name><target><path>/var/lib/libvirt/images</path></target></pool></node>"""
UUID = '11111111-2222-3333-4444-555555555555'
OTHER_UUID = '99999999-2222-3333-4444-555555555555'


def domain_xml(name, uuid):
    return ("<domain type='test'><name>%s</name><uuid>%s</uuid><memory>131072</memory><os><type>hvm</type></os><devices>"
            "<disk type='file' device='disk'><source file='/var/lib/libvirt/images/%s.qcow2'/><target dev='vda'/></disk>"
            "</devices></domain>" % (name, uuid, name))


def hypervisor(tmp_path, name):
    import libvirt
    path = tmp_path / ('%s.xml' % name)
    path.write_text(NODE)
    conn = libvirt.open('test://%s' % path)
    return conn


def volume(conn, name):
    return conn.storagePoolLookupByName('default').createXML(
        "<volume><name>%s</name><capacity>1048576</capacity><target><format type='qcow2'/></target></volume>" % name, 0)


def volumes(conn):
    return sorted(conn.storagePoolLookupByName('default').listVolumes())


def test_reconcile_rolls_back_an_unfinished_cold_migration_and_removes_only_what_it_recorded(tmp_path):
    src, dst = hypervisor(tmp_path, 'src'), hypervisor(tmp_path, 'dst')
    volume(src, 'v.qcow2')
    src.defineXML(domain_xml('v', UUID))
    # What the job had made on the destination before the worker died: the volume, the domain (not yet 'defined').
    own = clone.Ownership()
    own.intend_file('/var/lib/libvirt/images/v.qcow2')
    own.intend_domain(migration._dest_key('dst', 'v'), UUID)
    own.intend_volume(migration._dest_key('dst', 'default'), 'v.qcow2')
    volume(dst, 'v.qcow2')
    dst.defineXML(domain_xml('v', UUID))
    volume(dst, 'someone-else.qcow2')  # not recorded: stays
    with pytest.raises(HostError, match='interrupted by a worker restart: rolled back, v stays on src'):
        migration._reconcile(src, dst, {'name': 'v', 'destination': 'dst', 'live': False}, 'src', own)
    assert [d.name() for d in dst.listAllDomains(0)] == [] and volumes(dst) == ['someone-else.qcow2']
    assert [d.name() for d in src.listAllDomains(0)] == ['v'] and volumes(src) == ['v.qcow2'], 'the source is untouched'


def test_reconcile_finishes_a_cold_migration_found_complete(tmp_path):
    src, dst = hypervisor(tmp_path, 'src'), hypervisor(tmp_path, 'dst')
    volume(src, 'v.qcow2')
    src.defineXML(domain_xml('v', UUID))
    volume(dst, 'v.qcow2')
    dst.defineXML(domain_xml('v', UUID))
    own = clone.Ownership()
    own.intend_file('/var/lib/libvirt/images/v.qcow2')
    own.intend_domain(migration._dest_key('dst', 'v'), UUID)
    own.intend_volume(migration._dest_key('dst', 'default'), 'v.qcow2')
    own.note('defined')
    result = migration._reconcile(src, dst, {'name': 'v', 'destination': 'dst', 'live': False}, 'src', own)
    assert result['reconciled'] is True and result['destination'] == 'dst', result
    assert [d.name() for d in src.listAllDomains(0)] == [] and volumes(src) == [], 'the source is finished'
    assert [d.name() for d in dst.listAllDomains(0)] == ['v'] and volumes(dst) == ['v.qcow2']


def test_reconcile_never_removes_a_destination_domain_of_another_uuid(tmp_path):
    src, dst = hypervisor(tmp_path, 'src'), hypervisor(tmp_path, 'dst')
    volume(src, 'v.qcow2')
    src.defineXML(domain_xml('v', UUID))
    dst.defineXML(domain_xml('v', OTHER_UUID))  # someone else's v, there before the job recorded anything
    own = clone.Ownership()
    own.intend_domain(migration._dest_key('dst', 'v'), UUID)
    with pytest.raises(HostError, match='rolled back'):
        migration._reconcile(src, dst, {'name': 'v', 'destination': 'dst', 'live': False}, 'src', own)
    assert [d.UUIDString() for d in dst.listAllDomains(0)] == [OTHER_UUID]
    assert [d.name() for d in src.listAllDomains(0)] == ['v']
