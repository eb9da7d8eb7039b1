# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What an image import may delete (issue 18 item 7): only what its own job made - never another job's disk of the
same name, never a cache entry an overlay image depends on.

Real run_import on real files made by real qemu-img, against libvirt's test driver with a pool whose directory is
the test's own. Two jobs are interleaved by running the first inside a qemu-img call of the second: the call goes
through, so nothing is faked, only ordered.
"""

from __future__ import annotations

import os
import subprocess

import pytest

from maglica.host import clone
from maglica.controller import image_import
from maglica.cluster import virt
from maglica.errors import ConflictError, MaglicaError
from maglica.host import image_fetch
from maglica.cluster import domains

NODE = """<node>
  <pool type='dir'><name>default</name><uuid>35bb2ad9-388a-cdfe-461a-b8907f6e53fe</uuid>
    <capacity>107374182400</capacity><allocation>0</allocation><available>107374182400</available>
    <target><path>%s</path></target></pool>
</node>
"""


class Host(object):
    def __init__(self, base):
        self.pool = os.path.join(base, 'pool')
        os.mkdir(self.pool)
        node = os.path.join(base, 'node.xml')
        with open(node, 'w') as handle:
            handle.write(NODE % self.pool)
        self.conn = virt.libvirt().open('test://%s' % node)
        self.source = os.path.join(base, 'source.qcow2')
        subprocess.run(['qemu-img', 'create', '-q', '-f', 'qcow2', self.source, '1M'], check=True)
        self.checksum = image_import.file_sha256(self.source)
        self.cache = os.path.join(self.pool, image_fetch.CACHE_DIR, '%s.img' % self.checksum.split(':', 1)[1])

    def args(self, name, **extra):
        return dict({'name': name, 'checksum': self.checksum, 'url': 'file://' + self.source, 'domain_type': 'qemu'}, **extra)

    def run(self, job_id, name, reconcile=False, ownership=None, **extra):
        # file:// URLs are read only inside the directories the host worker allows: the source's is.
        return image_fetch.run_import(self.conn, 'kvm1', job_id, self.args(name, **extra), reconcile, ownership,
                                      file_dirs=[os.path.dirname(self.source)])

    def disk_of(self, name):
        return domains.domain_disks(virt.describe(self.conn.lookupByName(name), with_sizes=False))[0]

    def files(self):
        return sorted(os.listdir(self.pool)), sorted(os.listdir(os.path.join(self.pool, image_fetch.CACHE_DIR)))


@pytest.fixture
def host(tmp_path):
    made = Host(str(tmp_path))
    yield made
    made.conn.close()


def during(monkeypatch, step, action):
    """Run `action` once, when the job under test first calls qemu-img `step`; then the call goes on."""
    real = image_fetch.qemu_img
    started, done = [], []

    def qemu_img(*args):
        if args[0] == step and not started:
            started.append(step)  # before the action: its own qemu-img calls go straight through
            done.append(action())
        return real(*args)
    monkeypatch.setattr(image_fetch, 'qemu_img', qemu_img)
    return done


def test_a_second_import_of_a_name_never_takes_the_first_ones_disk(host, monkeypatch):
    """Two jobs import `deb` at once (a re-run that the claim did not stop, e.g. a job log lost): the one that ends
    second is refused when it would name its disk, and its rollback leaves the first one's disk alone. (The second
    grows its disk: the first runs inside that step.)"""
    def first():
        data = host.run('job1', 'deb')
        return data, os.stat(data['path']).st_ino
    done = during(monkeypatch, 'resize', first)
    with pytest.raises(MaglicaError) as refused:
        host.run('job2', 'deb', disk_size=2 * 1048576)
    (data, inode), = done
    assert host.disk_of('deb') == data['path']
    assert os.path.exists(data['path']) and os.stat(data['path']).st_ino == inode, "the first import's disk is kept"
    assert isinstance(refused.value, ConflictError), refused.value
    pool_files, _cache = host.files()
    assert pool_files == sorted([image_fetch.CACHE_DIR, 'deb.qcow2']), 'the second left nothing of its own'


def test_a_cache_entry_with_a_dependant_overlay_survives_a_failed_import(host, monkeypatch):
    """The job that fetched the cache entry (kept: keep_cache) fails after an overlay image was made on it: the entry
    stays."""
    done = during(monkeypatch, 'convert', lambda: host.run('job1', 'ovl', disk_mode='overlay'))
    with pytest.raises(MaglicaError, match='smaller than the image'):
        host.run('job2', 'deb', disk_size=512, keep_cache=True)
    (overlay,), = [[d['path']] for d in done]
    assert os.path.exists(host.cache), 'the backing file of the image ovl was deleted'
    assert image_fetch.qcow2_backing(overlay) == host.cache
    pool_files, _cache = host.files()
    assert pool_files == sorted([image_fetch.CACHE_DIR, 'ovl.qcow2'])


def test_a_restarted_import_removes_only_what_it_made(host):
    """A job restarted midway removes its own part files; a cache entry it recorded but another job made (and an
    overlay image depends on) stays, and so does a disk of that name that a domain uses."""
    host.run('job1', 'ovl', disk_mode='overlay')
    inode = os.stat(host.cache).st_ino
    leftovers = [host.cache + '.part-job2', os.path.join(host.pool, 'deb.qcow2.part-job2')]
    for path in leftovers:
        with open(path, 'wb') as handle:
            handle.write(b'half made')
    # What a job that lost the race for the cache entry had recorded, before this fix recorded it only once made.
    ownership = clone.Ownership(files=set(leftovers + [host.cache, os.path.join(host.pool, 'deb.qcow2')]))
    data = host.run('job2', 'deb', reconcile=True, ownership=ownership, disk_mode='overlay')
    assert data['cache_hit'] and os.stat(host.cache).st_ino == inode, 'the cache entry was removed and fetched again'
    assert not any(os.path.exists(path) for path in leftovers)
    assert image_fetch.qcow2_backing(host.disk_of('ovl')) == host.cache


def test_qcow2_backing_names_an_overlays_backing_file_only(host):
    """The qcow2 header reading that finds an overlay's backing file: none for an image without one or a copy."""
    host.run('job1', 'cpy')
    assert image_fetch.qcow2_backing(host.disk_of('cpy')) is None
    assert image_fetch.qcow2_backing(host.source) is None
    assert image_fetch.qcow2_backing(host.cache) is None


def test_a_copy_drops_the_cache_entry_it_fetched(host):
    """disk_mode copy (the default): once the image is defined, the entry it was copied from goes, so a host stores
    the data once (issue 21: bytes per host <= 1.1 x the data)."""
    data = host.run('job1', 'cpy')
    assert not os.path.exists(host.cache) and data['cache_kept'] is False
    assert image_fetch.qcow2_backing(host.disk_of('cpy')) is None, 'the copy must not need the entry'
    assert host.files() == (sorted([image_fetch.CACHE_DIR, 'cpy.qcow2']), [])


def test_keep_cache_keeps_the_entry_for_the_next_import(host):
    first = host.run('job1', 'cpy', keep_cache=True)
    inode = os.stat(host.cache).st_ino
    second = host.run('job2', 'cpy2')
    assert first['cache_kept'] and not first['cache_hit']
    assert second['cache_hit'], 'the kept entry was fetched again'
    # An entry this job did not make (kept by the first) stays after the second copy.
    assert second['cache_kept'] and os.stat(host.cache).st_ino == inode


def test_an_overlay_keeps_the_entry_it_is_backed_by(host):
    data = host.run('job1', 'ovl', disk_mode='overlay')
    assert data['cache_kept'] and image_fetch.qcow2_backing(host.disk_of('ovl')) == host.cache


def test_a_copy_restarted_after_its_define_drops_the_entry(host):
    """The host worker restarted between the define and the drop: the reconciled job drops the entry it recorded."""
    host.run('job1', 'cpy', keep_cache=True)  # as if the drop had not happened yet
    dom = host.conn.lookupByName('cpy')
    ownership = clone.Ownership(files={host.cache})
    ownership.intend_domain('cpy', dom.UUIDString())
    data = host.run('job1', 'cpy', reconcile=True, ownership=ownership)
    assert data == {'name': 'cpy', 'reconciled': True}
    assert not os.path.exists(host.cache)


def test_a_copy_of_a_fetched_qcow2_is_the_fetched_file_itself(host):
    """No cache entry kept: the verified download becomes the disk (one write of the data, not two)."""
    data = host.run('job1', 'cpy')
    disk = host.disk_of('cpy')
    assert image_import.file_sha256(disk) == host.checksum, 'the disk is not the fetched file as it was'
    assert data['fetched_bytes'] == os.path.getsize(host.source) and os.stat(disk).st_mode & 0o777 == 0o600


def test_a_fetched_raw_file_or_one_with_snapshots_is_converted(host, tmp_path):
    raw = str(tmp_path / 'source.raw')
    subprocess.run(['qemu-img', 'create', '-q', '-f', 'raw', raw, '1M'], check=True)
    with_snapshot = str(tmp_path / 'snap.qcow2')
    subprocess.run(['qemu-img', 'create', '-q', '-f', 'qcow2', with_snapshot, '1M'], check=True)
    subprocess.run(['qemu-img', 'snapshot', '-c', 'vendor', with_snapshot], check=True)
    for name, source in (('from-raw', raw), ('from-snap', with_snapshot)):
        host.source = source
        host.checksum = image_import.file_sha256(source)
        host.run('job-' + name, name)
        info = subprocess.run(['qemu-img', 'info', '--output=json', host.disk_of(name)], stdout=subprocess.PIPE,
                              universal_newlines=True, check=True).stdout
        assert '"format": "qcow2"' in info and 'vendor' not in info, info
    assert host.files() == (sorted([image_fetch.CACHE_DIR, 'from-raw.qcow2', 'from-snap.qcow2']), [])


def test_a_failed_fetch_of_a_copy_leaves_nothing(host):
    with pytest.raises(MaglicaError, match='checksum mismatch'):
        host.run('job1', 'cpy', checksum='sha256:' + '0' * 64)
    assert host.files() == ([image_fetch.CACHE_DIR], [])
