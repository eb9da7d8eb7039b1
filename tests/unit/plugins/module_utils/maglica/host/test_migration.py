# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""host/migration.py, the parts that need no second hypervisor (the rest: tests/integration/test_migrate.py): which
snapshots cannot travel, the destination XML of a disk copied whole, the order snapshots are redefined in, the sha256
of a sparse stream, and the intents a restarted worker reads back."""

from __future__ import annotations

import hashlib

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
    tree of internal snapshots is made by tests/integration/test_migrate.py)."""

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
