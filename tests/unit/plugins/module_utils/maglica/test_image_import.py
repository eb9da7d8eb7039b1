# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""image_import.py's pure parts: the sparse writer, checksums and URLs, qemu-img's verdict, the domain definition;
and the progress figures' way through the job log."""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import subprocess
import time
import xml.etree.ElementTree as ET

import pytest
from hypothesis import given, settings, strategies as st

from maglica.host import actions
from maglica.controller import cli
from maglica.cluster import config
from maglica.host import worker as host_worker
from maglica.controller import image_import
from maglica.protocol import messages
from maglica.errors import ConfigError, MaglicaError, MessageError
from maglica.client_worker.joblog import JobLog
from maglica.host import image_fetch
from maglica.protocol import import_job
from hostile_images import (Pool, Server, backed_qcow2, data_file_qcow2, good_qcow2, host_secret_file, qemu_img, sha256_of,
                            vmdk_descriptor)

DIGEST = 'ab' * 32

# A file's content as runs of data and zeros, of sizes that straddle blocks and chunks.
runs = st.lists(st.tuples(st.booleans(), st.integers(min_value=1, max_value=3 * import_job.BLOCK + 7)), max_size=12)


def content_of(spec):
    out = bytearray()
    for data, size in spec:
        out += (bytes((i % 251) + 1 for i in range(size)) if data else bytes(size))
    return bytes(out)


def chunks_of(data, size):
    return [data[i:i + size] for i in range(0, len(data), size)]


@settings(max_examples=60, deadline=None)
@given(spec=runs, chunk=st.sampled_from([1, 512, import_job.BLOCK, 3 * import_job.BLOCK + 1, import_job.CHUNK]))
def test_sparse_writer_round_trips_bytes_and_hash(tmp_path_factory, spec, chunk):
    data = content_of(spec)
    path = tmp_path_factory.mktemp('sparse') / 'out'
    seen = []
    with open(path, 'wb') as handle:
        size, digest = image_fetch.write_sparse(chunks_of(data, chunk), handle, seen.append)
    assert size == len(data) and digest == hashlib.sha256(data).hexdigest()
    assert path.read_bytes() == data
    assert seen == sorted(seen) and (not data or seen[-1] == len(data))


def test_sparse_writer_leaves_zero_blocks_as_holes(tmp_path):
    data = b'x' * 4096 + bytes(64 * 1024 * 1024) + b'y' * 4096
    path = tmp_path / 'thin'
    with open(path, 'wb') as handle:
        image_fetch.write_sparse(chunks_of(data, import_job.CHUNK), handle)
    assert os.path.getsize(path) == len(data) and path.read_bytes() == data
    assert os.stat(path).st_blocks * 512 <= 1024 * 1024  # 8 KiB of data: far from 64 MiB allocated


def test_sparse_writer_writes_a_trailing_hole_as_length(tmp_path):
    path = tmp_path / 'zeros'
    with open(path, 'wb') as handle:
        assert image_fetch.write_sparse([bytes(10 * 1024 * 1024)], handle)[0] == 10 * 1024 * 1024
    assert os.path.getsize(path) == 10 * 1024 * 1024 and os.stat(path).st_blocks == 0


@pytest.mark.parametrize('text', [DIGEST, 'sha256:' + DIGEST, 'SHA256:' + DIGEST.upper(), '  sha256:%s\n' % DIGEST])
def test_checksums_are_normalised(text):
    assert import_job.parse_checksum(text) == 'sha256:' + DIGEST


@pytest.mark.parametrize('text, words', [('md5:' + 'a' * 32, 'only sha256'), ('sha256:' + 'g' * 64, 'not sha256:<64'),
                                         ('sha256:' + DIGEST[:-1], 'not sha256:<64'), ('', 'not sha256:<64'),
                                         ('sha256:%s\nx' % DIGEST, 'not sha256:<64')])
def test_bad_checksums_are_refused_by_name(text, words):
    with pytest.raises(MaglicaError, match=words):
        import_job.parse_checksum(text)


@pytest.mark.parametrize('url', ['http://127.0.0.1:8080/a.qcow2', 'https://images.example.org/x/y.img', 'file:///srv/a.qcow2',
                                 'file://localhost/srv/a.qcow2'])
def test_fetchable_urls(url):
    import_job.check_url('url', url)


@pytest.mark.parametrize('url, words', [('ftp://h/a', 'only http'), ('data:,hello', 'only http'), ('/srv/a.qcow2', 'only http'),
                                        ('file://otherhost/a', 'absolute path on the host'), ('http:///a', 'has no host'),
                                        ('http://h/a b', 'space or control'), ('http://h/a\n', 'space or control')])
def test_unfetchable_urls_are_refused(url, words):
    with pytest.raises(MaglicaError, match=words):
        import_job.check_url('url', url)


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
    with pytest.raises(MaglicaError, match='is not a disk image: it has no image format .qcow2., and qemu-img info reads it as raw'):
        image_fetch.image_info(str(page), 'http://h/page.html')
    qcow = tmp_path / 'disk.qcow2'
    subprocess.run(['qemu-img', 'create', '-q', '-f', 'qcow2', str(qcow), '64M'], check=True)
    assert image_fetch.image_info(str(qcow), 'u')['format'] == 'qcow2'
    overlay = tmp_path / 'overlay.qcow2'
    subprocess.run(['qemu-img', 'create', '-q', '-f', 'qcow2', '-b', str(qcow), '-F', 'qcow2', str(overlay)], check=True)
    with pytest.raises(MaglicaError, match='with a backing file'):
        image_fetch.image_info(str(overlay), 'u')
    raw = tmp_path / 'disk.raw'
    raw.write_bytes(bytes(2 * 1024 * 1024))
    assert image_fetch.image_info(str(raw), 'u')['format'] == 'raw'


@pytest.mark.parametrize('args, expect', [
    ({}, ("network", "default", "bios", "kvm")),
    ({'bridge': 'br0', 'firmware': 'uefi', 'domain_type': 'qemu'}, ("bridge", "br0", "uefi", "qemu")),
])
def test_domain_definition(args, expect):
    root = ET.fromstring(image_fetch.domain_xml('deb.original', '/pool/deb.original.qcow2', dict(args, memory_mb=2048, vcpus=2),
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
    assert image_fetch.settle(str(first), str(entry)) is True
    assert image_fetch.settle(str(second), str(entry)) is False  # that job must never remove the entry
    assert entry.read_bytes() == b'one' and sorted(p.name for p in tmp_path.iterdir()) == [entry.name]


def import_job_in_state(state, done, total):
    return {'id': 'a' * 32, 'host': 'host0', 'action': 'image.import', 'state': state,
            'progress': {'done': done, 'total': total}}


def test_cli_progress_bar_shows_bytes_of_each_host_on_stderr(capsys):
    with cli.JobProgress(bars=True) as bars:  # rich, imported in there only
        bars.update(import_job_in_state('running', 100 * 10 ** 6, 400 * 10 ** 6))
        bars.update(import_job_in_state('succeeded', 400 * 10 ** 6, 400 * 10 ** 6))
    out, err = capsys.readouterr()
    assert out == '' and 'host0 succeeded' in err and '400.0/400.0 MB' in err


def test_cli_progress_without_a_terminal_is_a_line_per_state(capsys):
    bars = cli.JobProgress()
    for state in ('dispatched', 'running', 'running', 'succeeded'):
        bars.update(import_job_in_state(state, 0, 0))
    lines = capsys.readouterr().err.splitlines()
    assert [line.rsplit(' ', 1)[1] for line in lines] == ['dispatched', 'running', 'succeeded']


# -- hostile image files, URLs and servers (issue 18) -----------------------------------------------------
# Each hostile input is made here for real (qemu-img, a hand-written VMDK descriptor, a local HTTP server) and fed
# to the host worker's run_import against libvirt's test driver, with a storage pool in a temporary directory.

@pytest.fixture
def host_secret(tmp_path):
    """A file of the host that must never reach an image: 1 MiB of a marker. Returns (path, marker)."""
    (tmp_path / 'host').mkdir()
    path, marker = host_secret_file(tmp_path / 'host')
    return pathlib.Path(path), marker


@pytest.fixture
def pool(tmp_path):
    directory = tmp_path / 'pool'
    directory.mkdir()
    made = Pool(directory)
    yield made
    made.close()


@pytest.fixture
def server():
    made = Server()
    yield made
    made.close()


def refused(pool, words, secrets=(), **kwargs):
    """run_import refused with a message matching `words`; nothing is left in the pool; the message quotes no
    secret. Returns the message."""
    with pytest.raises(MaglicaError, match=words) as caught:
        pool.run(**kwargs)
    message = str(caught.value)
    assert pool.files() == [], 'left behind: %s' % pool.files()
    for secret in secrets:
        assert secret not in message, 'the refusal tells %r' % secret
    return message


def test_qcow2_with_an_external_data_file_on_the_host_is_refused(tmp_path, pool, server, host_secret):
    secret, marker = host_secret
    image = pathlib.Path(data_file_qcow2(tmp_path / 'datafile.qcow2', secret))
    server.files['datafile.qcow2'] = image.read_bytes()
    for mode in ('copy', 'overlay'):
        refused(pool, 'qcow2 image with an external data file', [marker.decode(), str(secret)],
                url=server.url('/file/datafile.qcow2'), checksum=sha256_of(image), disk_mode=mode)
    with pytest.raises(MaglicaError, match='external data file'):  # on its own, and before qemu-img reads it
        image_fetch.sniff_format(str(image), 'u')
    # The data file's name without the header bit that makes qemu open it: qemu-img info still shows the name.
    unflagged = tmp_path / 'unflagged.qcow2'
    header = bytearray(image.read_bytes())
    header[79] &= ~image_fetch.QCOW2_DATA_FILE
    unflagged.write_bytes(bytes(header))
    assert image_fetch.sniff_format(str(unflagged), 'u') == 'qcow2'
    server.files['unflagged.qcow2'] = unflagged.read_bytes()
    refused(pool, 'qcow2 image with an external data file', [marker.decode(), str(secret)],
            url=server.url('/file/unflagged.qcow2'), checksum=sha256_of(unflagged))
    assert pool.files_holding(marker) == []


def test_vmdk_descriptor_with_a_host_extent_is_refused(tmp_path, pool, server, host_secret):
    secret, marker = host_secret
    descriptor = vmdk_descriptor(secret)
    server.files['disk.vmdk'] = descriptor
    checksum = 'sha256:' + hashlib.sha256(descriptor).hexdigest()
    message = refused(pool, 'is a VMDK descriptor .*only qcow2 and raw images are imported', [marker.decode(), str(secret)],
                      url=server.url('/file/disk.vmdk'), checksum=checksum)
    assert 'RW 2048' not in message
    # A binary VMDK (and VDI, VHDX...) is refused by name too, never handed to qemu-img's probing.
    sparse = tmp_path / 'sparse.vmdk'
    qemu_img('create', '-q', '-f', 'vmdk', str(sparse), '1M')
    server.files['sparse.vmdk'] = sparse.read_bytes()
    refused(pool, 'is a vmdk image: only qcow2 and raw', url=server.url('/file/sparse.vmdk'), checksum=sha256_of(sparse))
    assert pool.files_holding(marker) == []


def test_qcow2_with_a_backing_file_on_the_host_is_refused(tmp_path, pool, server, host_secret):
    secret, marker = host_secret
    image = pathlib.Path(backed_qcow2(tmp_path / 'backed.qcow2', secret))
    server.files['backed.qcow2'] = image.read_bytes()
    refused(pool, 'qcow2 image with a backing file', [marker.decode(), str(secret)],
            url=server.url('/file/backed.qcow2'), checksum=sha256_of(image))


def test_a_virtual_size_over_the_limit_is_refused(tmp_path, pool, server):
    huge = tmp_path / 'huge.qcow2'
    qemu_img('create', '-q', '-f', 'qcow2', str(huge), '2T')  # over the default max_virtual_size, 1 TiB
    server.files['huge.qcow2'] = huge.read_bytes()
    refused(pool, 'virtual size %d bytes, over max_virtual_size %d' % (2 * 2 ** 40, 2 ** 40),
            url=server.url('/file/huge.qcow2'), checksum=sha256_of(huge))
    small = good_qcow2(tmp_path, '64M')
    server.files['small.qcow2'] = open(small, 'rb').read()
    refused(pool, 'over max_virtual_size %d' % (32 * 2 ** 20), url=server.url('/file/small.qcow2'), checksum=sha256_of(small),
            max_virtual_size=32 * 2 ** 20)


@pytest.fixture
def small_pool(tmp_path):
    """A pool on a 16 MiB tmpfs: a pool that is really (nearly) full. Mounting needs root."""
    if os.geteuid() != 0:
        pytest.skip('mounting a small tmpfs for a full pool needs root')
    directory = tmp_path / 'small'
    directory.mkdir()
    subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=16m', 'tmpfs', str(directory)], check=True)
    made = Pool(directory)
    try:
        yield made
    finally:
        made.close()
        subprocess.run(['umount', str(directory)], check=True)


def test_a_compressed_qcow2_that_would_not_fit_once_copied_is_refused_before_the_copy(tmp_path, small_pool, server):
    data = tmp_path / 'data.raw'
    data.write_bytes(b'maglica ' * (64 * 2 ** 20 // 8))  # 64 MiB that compress to almost nothing
    packed = tmp_path / 'packed.qcow2'
    qemu_img('convert', '-q', '-c', '-f', 'raw', '-O', 'qcow2', str(data), str(packed))
    assert packed.stat().st_size < 4 * 2 ** 20
    server.files['packed.qcow2'] = packed.read_bytes()
    # Copied from a kept cache entry, it would expand: refused before the copy.
    refused(small_pool, 'no room for the copy of .* it needs \\d+ bytes, \\d+ are free',
            url=server.url('/file/packed.qcow2'), checksum=sha256_of(packed), keep_cache=True)
    # A copy that keeps no cache entry takes the download as the disk, compressed as it came: no room needed.
    made = small_pool.run(name='packed.copy', url=server.url('/file/packed.qcow2'), checksum=sha256_of(packed))
    assert made['cache_kept'] is False and made['allocation'] < 4 * 2 ** 20
    # As an overlay it takes no room: imported (the compressed file is the read-only base).
    made = small_pool.run(url=server.url('/file/packed.qcow2'), checksum=sha256_of(packed), disk_mode='overlay')
    assert made['format'] == 'qcow2' and made['capacity'] == 64 * 2 ** 20


def test_good_images_are_still_imported_copied_and_as_overlays(tmp_path, pool, server):
    image = good_qcow2(tmp_path)
    raw = tmp_path / 'disk.raw'
    raw.write_bytes(b'\x55' * 2 ** 20 + bytes(2 ** 20))
    server.files['good.qcow2'] = open(image, 'rb').read()
    server.files['disk.raw'] = raw.read_bytes()
    for path, checksum in (('good.qcow2', sha256_of(image)), ('disk.raw', sha256_of(raw))):
        for mode in ('copy', 'overlay'):
            made = pool.run(url=server.url('/file/' + path), checksum=checksum, disk_mode=mode, disk_size=4 * 2 ** 20)
            assert made['capacity'] == 4 * 2 ** 20 and made['disk_mode'] == mode
            info = json.loads(subprocess.run(['qemu-img', 'info', '--output=json', '-U', '-f', 'qcow2', made['path']],
                                             check=True, stdout=subprocess.PIPE).stdout)
            assert info['virtual-size'] == 4 * 2 ** 20
            assert (info.get('backing-filename') == made['cache']) == (mode == 'overlay')


# -- file:// URLs ------------------------------------------------------------------------------------------

def test_file_urls_are_refused_without_allowed_directories(tmp_path, pool, host_secret):
    secret, marker = host_secret
    digest = sha256_of(secret)
    for url in ('file:///dev/zero', 'file://%s' % secret, 'file:///etc/hostname', 'file:///nonexistent/at/all'):
        message = refused(pool, 'file:// URLs may name only regular files inside no directory', [marker.decode()],
                          url=url, checksum='sha256:' + DIGEST)
        # Nothing of the file: not its checksum, not its size, not whether it exists.
        assert digest.split(':')[1] not in message and str(secret.stat().st_size) not in message
        assert 'No such file' not in message


def test_file_urls_reach_only_regular_files_inside_the_allowed_directories(tmp_path, pool, host_secret):
    secret, marker = host_secret
    allowed = tmp_path / 'images'
    allowed.mkdir()
    os.symlink(str(secret), str(allowed / 'link-out.img'))
    os.symlink('/dev/zero', str(allowed / 'zero.img'))
    os.mkfifo(str(allowed / 'fifo.img'))
    inner = allowed / 'sub'
    os.symlink(str(secret.parent), str(inner))  # a directory link out of it
    for url in ('file://%s' % (allowed / 'link-out.img'), 'file://%s' % (allowed / 'zero.img'),
                'file://%s' % (allowed / 'fifo.img'), 'file://%s/secret.bin' % inner, 'file://%s' % secret,
                'file://%s/../host/secret.bin' % allowed, 'file:///dev/zero', 'file://%s' % allowed,
                'file://%s/good.qcow2%%00' % allowed):
        message = refused(pool, 'may name only regular files inside %s' % allowed, [marker.decode()],
                          url=url, checksum=sha256_of(secret), file_dirs=[allowed])
        assert sha256_of(secret).split(':')[1] not in message
    good = good_qcow2(allowed)
    made = pool.run(url='file://' + good, checksum=sha256_of(good), file_dirs=[allowed])
    assert made['format'] == 'qcow2' and made['fetched_bytes'] == os.path.getsize(good)
    assert pool.files_holding(marker) == []


# -- hostile servers ------------------------------------------------------------------------------------

def test_an_endless_body_stops_at_max_download_size(pool, server):
    refused(pool, 'more than max_download_size %d bytes' % (8 * 2 ** 20), url=server.url('/endless'),
            checksum='sha256:' + DIGEST, max_download_size=8 * 2 ** 20)
    assert max(done for done, _total in pool.progress) <= 8 * 2 ** 20 + import_job.CHUNK


def test_a_content_length_over_max_download_size_is_refused_before_reading(pool, server):
    refused(pool, 'announces %d bytes .*over max_download_size %d' % (10 ** 15, import_job.DEFAULT_MAX_DOWNLOAD_SIZE),
            url=server.url('/huge'), checksum='sha256:' + DIGEST)
    assert pool.progress == []


def test_a_slow_drip_stops_at_max_download_time(pool, server):
    started = time.monotonic()
    refused(pool, 'did not finish within max_download_time 1s', url=server.url('/drip'), checksum='sha256:' + DIGEST,
            max_download_time=1)
    assert time.monotonic() - started < 10


def test_a_negative_content_length_is_refused_and_progress_stays_in_the_schema(tmp_path, pool, server):
    image = good_qcow2(tmp_path)
    server.files['good.qcow2'] = open(image, 'rb').read()
    refused(pool, 'bad Content-Length', url=server.url('/negative/good.qcow2'), checksum=sha256_of(image))
    for done, total in pool.progress:
        messages.check_fields('progress', {'done': done, 'total': total}, messages.PROGRESS)


@pytest.mark.parametrize('target, words', [
    ('ftp://127.0.0.1/pub/image.qcow2', 'redirected \\(HTTP 302\\) to ftp://127.0.0.1/pub/image.qcow2; refused: only redirects to https://'),
    ('file:///etc/hostname', 'redirected \\(HTTP 302\\) to file:///etc/hostname; refused'),
    ('http://127.0.0.2:9/elsewhere', 'redirected \\(HTTP 302\\) to http://127.0.0.2:9/elsewhere; refused: only redirects to https://'),
])
def test_redirects_go_only_to_the_allowed_schemes(pool, server, target, words):
    refused(pool, words, url=server.redirect(target), checksum='sha256:' + DIGEST)


def test_a_redirect_to_http_is_followed_when_the_user_allows_http(tmp_path, pool, server):
    image = good_qcow2(tmp_path)
    server.files['good.qcow2'] = open(image, 'rb').read()
    url = server.redirect(server.url('/file/good.qcow2'))
    refused(pool, 'refused: only redirects to https://', url=url, checksum=sha256_of(image))
    made = pool.run(url=url, checksum=sha256_of(image), redirect_schemes=['http', 'https'])
    assert made['fetched_bytes'] == os.path.getsize(image)


def test_import_limits_are_validated_in_the_job():
    args = {'name': 'x', 'url': 'http://h/x', 'checksum': DIGEST}
    messages.new_job('kvm1', 'image.import', dict(args, max_virtual_size=2 ** 30, max_download_size=1, max_download_time=60,
                                                  redirect_schemes=['http', 'https']))
    for bad in ({'redirect_schemes': ['ftp']}, {'redirect_schemes': ['file']}, {'max_download_size': 0},
                {'max_download_time': 0}, {'max_virtual_size': -1}, {'max_download_size': '1G'}):
        with pytest.raises(MessageError):
            messages.new_job('kvm1', 'image.import', dict(args, **bad))


@pytest.mark.parametrize('done, total, expect', [(100, -1, (100, 0)), (-5, 10, (0, 10)), (5, 2 ** 70, (5, 2 ** 62)),
                                                 (10, 5, (10, 0)), ('x', None, (0, 0)), (3, 10, (3, 10))])
def test_host_worker_progress_figures_always_fit_the_report_schema(done, total, expect):
    figures = host_worker.progress_figures(done, total)
    assert figures == expect
    messages.check_fields('progress', {'id': 'a' * 32, 'done': figures[0], 'total': figures[1]}, messages.PROGRESS_ENTRY)


def test_cli_import_limits_reach_the_job_arguments():
    parser = cli.build_parser()
    base = ['image', 'import', '--name', 'deb.original', '--url', 'https://h/x.qcow2', '--checksum', DIGEST]
    args = parser.parse_args(base + ['--max-virtual-size', '200G', '--max-download-size', '8G', '--max-download-time', '600',
                                     '--redirect-scheme', 'https', '--redirect-scheme', 'http'])
    job = messages.new_job('kvm1', 'image.import', image_import.job_args('deb.original', 'sha256:' + DIGEST, args.url,
                                                                         cli.import_settings(args)))
    assert {k: job['args'][k] for k in ('max_virtual_size', 'max_download_size', 'max_download_time', 'redirect_schemes')} == {
        'max_virtual_size': 200 * 2 ** 30, 'max_download_size': 8 * 2 ** 30, 'max_download_time': 600,
        'redirect_schemes': ['http', 'https']}
    plain = image_import.job_args('deb.original', 'sha256:' + DIGEST, args.url, cli.import_settings(parser.parse_args(base)))
    assert not set(plain) & {'max_virtual_size', 'max_download_size', 'max_download_time', 'redirect_schemes'}
    assert import_job.job_limits(plain) == import_job.Limits()  # unset: the host worker's defaults
    with pytest.raises(SystemExit):
        parser.parse_args(base + ['--redirect-scheme', 'ftp'])


def test_file_url_dirs_come_from_the_host_worker_configuration(tmp_path, pool, host_secret):
    """The allowed directories are the host worker's configuration (host_worker.file_url_dirs), never the job's:
    the action table passes them to run_import."""
    secret, marker = host_secret
    allowed = tmp_path / 'images'
    allowed.mkdir()
    good = good_qcow2(allowed)
    base = {'hosts': [{'name': 'kvm1', 'uri': 'test:///default'}]}
    assert config.validate(base).host_worker['file_url_dirs'] == []
    for bad in (['relative/dir'], ['/'], [7], str(allowed)):
        with pytest.raises(ConfigError, match='file_url_dirs'):
            config.validate(dict(base, host_worker={'file_url_dirs': bad}))
    settings = config.validate(dict(base, host_worker={'file_url_dirs': [str(allowed)]}))
    for url, checksum, outcome in (('file://' + good, sha256_of(good), 'succeeded'),
                                   ('file://%s' % secret, sha256_of(secret), 'failed')):
        job = messages.new_job('kvm1', 'image.import', {'name': 'from-file-%s' % outcome, 'url': url, 'checksum': checksum,
                                                        'pool': pool.name, 'domain_type': 'qemu'})
        result = actions.run(actions.Context(settings, settings.host('kvm1'), job))
        assert result['status'] == outcome, result
    assert 'may name only regular files inside %s' % allowed in result['message'] and marker.decode() not in result['message']
    assert pool.files_holding(marker) == []
