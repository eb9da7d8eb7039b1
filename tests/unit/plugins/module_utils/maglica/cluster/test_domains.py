# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""domains.py on libvirt's test driver (test:///default is shared by the process: what a test defines, it undefines)."""

from __future__ import annotations

import uuid

from maglica.cluster import domains, virt

TEST_NS = "xmlns:test='http://libvirt.org/schemas/domain/test/1.0'"


def domain_xml(name, disk):
    return ("<domain type='test' %s><name>%s</name><memory>262144</memory><vcpu>1</vcpu><os><type>hvm</type></os>"
            "<test:runstate>5</test:runstate><devices><disk type='file' device='disk'><driver name='qemu' type='qcow2'/>"
            "<source file='%s'/><target dev='vda' bus='virtio'/></disk></devices></domain>" % (TEST_NS, name, disk))


class ListedBefore(object):
    """A connection whose listing was taken before a domain was undefined: what a job sees when another job of the
    same host worker (a migration, a removal) undefines a domain between its listing and its reading of each."""

    def __init__(self, conn, listing):
        self.conn = conn
        self.listing = listing

    def listAllDomains(self, flags=0):  # pylint: disable=invalid-name
        return self.listing

    def __getattr__(self, name):
        return getattr(self.conn, name)


def test_disk_users_skips_a_domain_undefined_since_the_listing():
    conn = virt.connect('test:///default')
    tag = uuid.uuid4().hex[:8]
    kept = conn.defineXML(domain_xml('kept-%s' % tag, '/images/kept-%s.qcow2' % tag))
    gone = conn.defineXML(domain_xml('gone-%s' % tag, '/images/gone-%s.qcow2' % tag))
    try:
        listing = conn.listAllDomains(0)
        gone.undefine()
        users = domains.disk_users(ListedBefore(conn, listing), ['/images/kept-%s.qcow2' % tag, '/images/gone-%s.qcow2' % tag])
        assert users == {'/images/kept-%s.qcow2' % tag: ['kept-%s' % tag]}
    finally:
        kept.undefine()
        conn.close()
