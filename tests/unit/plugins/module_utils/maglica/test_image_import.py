# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""image_import.py's pure parts: the sparse writer, checksums and URLs, qemu-img's verdict, the domain definition;
and the progress figures' way through the job log."""

from __future__ import annotations

import hashlib
import os
import subprocess
import xml.etree.ElementTree as ET

import pytest
from hypothesis import given, settings, strategies as st

from maglica import cli, image_import, messages
from maglica.errors import MaglicaError, MessageError
from maglica.joblog import JobLog

DIGEST = 'ab' * 32

# A file's content as runs of data and zeros, of sizes that straddle blocks and chunks.
runs = st.lists(st.tuples(st.booleans(), st.integers(min_value=1, max_value=3 * image_import.BLOCK + 7)), max_size=12)


def content_of(spec):
    out = bytearray()
    for data, size in spec:
        out += (bytes((i % 251) + 1 for i in range(size)) if data else bytes(size))
    return bytes(out)


def chunks_of(data, size):
    return [data[i:i + size] for i in range(0, len(data), size)]


@settings(max_examples=60, deadline=None)
@given(spec=runs, chunk=st.sampled_from([1, 512, image_import.BLOCK, 3 * image_import.BLOCK + 1, image_import.CHUNK]))
def test_sparse_writer_round_trips_bytes_and_hash(tmp_path_factory, spec, chunk):
    data = content_of(spec)
    path = tmp_path_factory.mktemp('sparse') / 'out'
    seen = []
    with open(path, 'wb') as handle:
        size, digest = image_import.write_sparse(chunks_of(data, chunk), handle, seen.append)
    assert size == len(data) and digest == hashlib.sha256(data).hexdigest()
    assert path.read_bytes() == data
    assert seen == sorted(seen) and (not data or seen[-1] == len(data))


def test_sparse_writer_leaves_zero_blocks_as_holes(tmp_path):
    data = b'x' * 4096 + bytes(64 * 1024 * 1024) + b'y' * 4096
    path = tmp_path / 'thin'
    with open(path, 'wb') as handle:
        image_import.write_sparse(chunks_of(data, image_import.CHUNK), handle)
    assert os.path.getsize(path) == len(data) and path.read_bytes() == data
    assert os.stat(path).st_blocks * 512 <= 1024 * 1024  # 8 KiB of data: far from 64 MiB allocated


def test_sparse_writer_writes_a_trailing_hole_as_length(tmp_path):
    path = tmp_path / 'zeros'
    with open(path, 'wb') as handle:
        assert image_import.write_sparse([bytes(10 * 1024 * 1024)], handle)[0] == 10 * 1024 * 1024
    assert os.path.getsize(path) == 10 * 1024 * 1024 and os.stat(path).st_blocks == 0


@pytest.mark.parametrize('text', [DIGEST, 'sha256:' + DIGEST, 'SHA256:' + DIGEST.upper(), '  sha256:%s\n' % DIGEST])
def test_checksums_are_normalised(text):
    assert image_import.parse_checksum(text) == 'sha256:' + DIGEST


@pytest.mark.parametrize('text, words', [('md5:' + 'a' * 32, 'only sha256'), ('sha256:' + 'g' * 64, 'not sha256:<64'),
                                         ('sha256:' + DIGEST[:-1], 'not sha256:<64'), ('', 'not sha256:<64'),
                                         ('sha256:%s\nx' % DIGEST, 'not sha256:<64')])
def test_bad_checksums_are_refused_by_name(text, words):
    with pytest.raises(MaglicaError, match=words):
        image_import.parse_checksum(text)


@pytest.mark.parametrize('url', ['http://127.0.0.1:8080/a.qcow2', 'https://images.example.org/x/y.img', 'file:///srv/a.qcow2',
                                 'file://localhost/srv/a.qcow2'])
def test_fetchable_urls(url):
    image_import.check_url('url', url)


@pytest.mark.parametrize('url, words', [('ftp://h/a', 'only http'), ('data:,hello', 'only http'), ('/srv/a.qcow2', 'only http'),
                                        ('file://otherhost/a', 'absolute path on the host'), ('http:///a', 'has no host'),
                                        ('http://h/a b', 'space or control'), ('http://h/a\n', 'space or control')])
def test_unfetchable_urls_are_refused(url, words):
    with pytest.raises(MaglicaError, match=words):
        image_import.check_url('url', url)


def test_import_job_arguments_are_validated():
    args = {'name': 'deb.original', 'url': 'http://127.0.0.1/x', 'checksum': 'SHA256:' + DIGEST.upper(), 'disk_size': 2 ** 30}
    job = messages.new_job('kvm1', 'image.import', dict(args))
    assert job['args']['checksum'] == 'sha256:' + DIGEST
    for bad in ({'url': 'ftp://x/y'}, {'checksum': 'md5:' + 'a' * 32}, {'name': 'a b'}, {'firmware': 'coreboot'},
                {'disk_mode': 'reflink'}, {'bridge': 'br0\n'}, {'extra': 1}):
        with pytest.raises(MessageError):
            messages.new_job('kvm1', 'image.import', dict(args, **bad))


def test_qemu_img_tells_images_from_other_files(tmp_path):
    page = tmp_path / 'page.html'
    page.write_text('<html><body>404 Not Found</body></html>\n')
    with pytest.raises(MaglicaError, match='is not a disk image: qemu-img info finds no image format'):
        image_import.image_info(str(page), 'http://h/page.html')
    qcow = tmp_path / 'disk.qcow2'
    subprocess.run(['qemu-img', 'create', '-q', '-f', 'qcow2', str(qcow), '64M'], check=True)
    assert image_import.image_info(str(qcow), 'u')['format'] == 'qcow2'
    overlay = tmp_path / 'overlay.qcow2'
    subprocess.run(['qemu-img', 'create', '-q', '-f', 'qcow2', '-b', str(qcow), '-F', 'qcow2', str(overlay)], check=True)
    with pytest.raises(MaglicaError, match='with a backing file'):
        image_import.image_info(str(overlay), 'u')
    raw = tmp_path / 'disk.raw'
    raw.write_bytes(bytes(2 * 1024 * 1024))
    assert image_import.image_info(str(raw), 'u')['format'] == 'raw'


@pytest.mark.parametrize('args, expect', [
    ({}, ("network", "default", "bios", "kvm")),
    ({'bridge': 'br0', 'firmware': 'uefi', 'domain_type': 'qemu'}, ("bridge", "br0", "uefi", "qemu")),
])
def test_domain_definition(args, expect):
    root = ET.fromstring(image_import.domain_xml('deb.original', '/pool/deb.original.qcow2', dict(args, memory_mb=2048, vcpus=2),
                                                 'f' * 8 + '-' + 'f' * 4 + '-' + 'f' * 4 + '-' + 'f' * 4 + '-' + 'f' * 12))
    kind, source, firmware, domain_type = expect
    assert root.get('type') == domain_type and root.findtext('name') == 'deb.original'
    assert root.findtext('memory') == '2048' and root.findtext('vcpu') == '2'
    assert root.find("./devices/disk/target").attrib == {'dev': 'vda', 'bus': 'virtio'}
    assert root.find("./devices/disk/source").get('file') == '/pool/deb.original.qcow2'
    iface = root.find('./devices/interface')
    assert iface.get('type') == kind and iface.find('source').get(kind) == source and iface.find('model').get('type') == 'virtio'
    assert root.find("./devices/serial/log").get('file') == '/var/log/libvirt/qemu/deb.original-console.log'
    assert root.find("./devices/channel/target").get('name') == 'org.qemu.guest_agent.0'
    assert (root.find('os').get('firmware') == 'efi') == (firmware == 'uefi')
    assert (root.find('./features/tcg') is not None) == (domain_type == 'qemu')


def test_progress_reaches_the_job_row_of_its_host_only(tmp_path):
    log = JobLog(str(tmp_path / 'jobs.sqlite'))
    try:
        job = messages.new_job('kvm1', 'image.import', {'name': 'x', 'url': 'http://h/x', 'checksum': DIGEST})
        log.add(job, 60)
        assert log.get(job['id'])['progress'] is None
        log.set_progress('kvm2', [{'id': job['id'], 'done': 5, 'total': 10}])  # not its host: ignored
        assert log.get(job['id'])['progress'] is None
        log.set_progress('kvm1', [{'id': job['id'], 'done': 5, 'total': 10}])
        row = log.get(job['id'])
        assert row['progress'] == {'done': 5, 'total': 10}
        messages.check_fields('row', dict(row), messages.JOB_ROW)  # what status replies carry validates
        log.finish('kvm1', {'id': job['id'], 'status': 'succeeded'})
        log.set_progress('kvm1', [{'id': job['id'], 'done': 1, 'total': 10}])  # ended: kept as it was
        assert log.get(job['id'])['progress'] == {'done': 5, 'total': 10}
    finally:
        log.close()


def test_report_progress_entries_are_validated():
    messages.check_fields('report', {'host': 'kvm1', 'progress': [{'id': 'a' * 32, 'done': 1, 'total': 0}]},
                          messages.REQUESTS['report'])
    with pytest.raises(MessageError):
        messages.check_fields('report', {'host': 'kvm1', 'progress': [{'id': 'a' * 32, 'done': -1, 'total': 0}]},
                              messages.REQUESTS['report'])


def test_import_job_takes_a_url_or_an_upload_never_both():
    base = {'name': 'deb.original', 'checksum': 'sha256:' + DIGEST}
    upload = image_import.upload_volume_name('0' * 32)
    messages.new_job('kvm1', 'image.import', dict(base, upload=upload, origin='/srv/deb.qcow2'))
    for args in (dict(base), dict(base, url='http://h/x', upload=upload)):
        with pytest.raises(MessageError, match='url or upload'):
            messages.new_job('kvm1', 'image.import', args)
    with pytest.raises(MessageError):  # only the library's own upload names: no path into the pool's parent
        messages.new_job('kvm1', 'image.import', dict(base, upload='../etc/passwd'))


def test_a_path_import_refuses_a_file_whose_checksum_differs_before_anything(tmp_path):
    disk = tmp_path / 'disk.raw'
    disk.write_bytes(bytes(1024 * 1024))
    actual = hashlib.sha256(bytes(1024 * 1024)).hexdigest()
    with pytest.raises(MaglicaError, match='checksum mismatch for .*expected sha256:%s, got sha256:%s' % (DIGEST, actual)):
        image_import.import_image(None, 'x', None, 'sha256:' + DIGEST, path=str(disk))
    with pytest.raises(MaglicaError, match='give url or path'):
        image_import.import_image(None, 'x', 'http://h/x', 'sha256:' + DIGEST, path=str(disk))
    with pytest.raises(MaglicaError, match='checksum is required with url'):
        image_import.import_image(None, 'x', 'http://h/x', None)


def test_the_first_verified_copy_settles_in_the_cache_and_a_second_one_goes(tmp_path):
    entry = tmp_path / ('%s.img' % DIGEST)
    first, second = tmp_path / 'a.part', tmp_path / 'b.part'
    first.write_bytes(b'one')
    second.write_bytes(b'one')
    assert image_import.settle(str(first), str(entry)) is True
    assert image_import.settle(str(second), str(entry)) is False  # that job must never remove the entry
    assert entry.read_bytes() == b'one' and sorted(p.name for p in tmp_path.iterdir()) == [entry.name]


def import_job(state, done, total):
    return {'id': 'a' * 32, 'host': 'host0', 'action': 'image.import', 'state': state,
            'progress': {'done': done, 'total': total}}


def test_cli_progress_bar_shows_bytes_of_each_host_on_stderr(capsys):
    with cli.ProgressBars(enabled=True) as bars:  # rich, imported in there only
        bars.update(import_job('running', 100 * 10 ** 6, 400 * 10 ** 6))
        bars.update(import_job('succeeded', 400 * 10 ** 6, 400 * 10 ** 6))
    out, err = capsys.readouterr()
    assert out == '' and 'host0 succeeded' in err and '400.0/400.0 MB' in err


def test_cli_progress_without_a_terminal_is_a_line_per_state(capsys):
    bars = cli.ProgressBars(enabled=False)
    for state in ('dispatched', 'running', 'running', 'succeeded'):
        bars.update(import_job(state, 0, 0))
    lines = capsys.readouterr().err.splitlines()
    assert [line.rsplit(' ', 1)[1] for line in lines] == ['dispatched', 'running', 'succeeded']
