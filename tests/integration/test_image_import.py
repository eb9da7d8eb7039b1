# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""maglica_image on the testbed: a URL served by an HTTP server this test starts on a loopback address, fetched by
each target's host worker; the image boots as a clone; reruns fetch nothing; bad input leaves nothing anywhere."""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import threading

import pytest

from maglica_testbed import PYTHON, TESTBED, file_sha256, run_playbook  # pylint: disable=wrong-import-order
from maglica.controller import cloud as maglica_cloud  # pylint: disable=wrong-import-order
from maglica.host import image_fetch  # pylint: disable=wrong-import-order
from test_boot import BOOT_TIMEOUT, Booted  # pylint: disable=wrong-import-order

PLAYBOOKS = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'playbooks')
IMAGE = 'deb12.imported'
POOL = '/var/lib/libvirt/images'
CACHE = os.path.join(POOL, image_fetch.CACHE_DIR)
GIB = 1024 ** 3
OTHER_CHECKSUM = 'sha256:' + '0' * 64


def sha256_of(path):
    return 'sha256:' + file_sha256(path)


class Server:
    """An HTTP server on a loopback address of this testbed's own: serves `files` {url path: file}, counts requests."""

    def __init__(self, files):
        self.files = files
        self.requests = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - the name http.server calls
                server.requests.append(self.path)
                path = server.files.get(self.path)
                if path is None:
                    self.send_error(404, 'Not Found')
                    return
                self.send_response(200)
                self.send_header('Content-Length', str(os.path.getsize(path)))
                self.end_headers()
                with open(path, 'rb') as handle:
                    while True:
                        block = handle.read(1 << 20)
                        if not block:
                            break
                        self.wfile.write(block)

            def log_message(self, *args):
                pass

        address = '127.0.0.%d' % (int(os.environ.get('MAGLICA_TEST_ADDRESS_BASE', '11')) + 9)
        self.httpd = http.server.ThreadingHTTPServer((address, 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        self.base = 'http://%s:%d' % self.httpd.server_address

    def url(self, path):
        return self.base + path

    def count(self, path):
        return self.requests.count(path)

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def run_import(cloud, check=False, **variables):
    variables['maglica_config'] = cloud.path
    return run_playbook(os.path.join(PLAYBOOKS, 'image.yml'), variables, check=check)


def pool_files(testbed, host):
    """Every file of the host's pool and of its image cache (a tmpfs mounted there too: listed inside its namespace)."""
    # The cache directory itself stays once made (jobs at once share it); what is in it is listed.
    out = subprocess.run(['bash', os.path.join(TESTBED, 'testbed.sh'), 'exec', host, 'find', POOL, '-mindepth', '1',
                          '-not', '-path', CACHE],
                         env=testbed.env, stdout=subprocess.PIPE, universal_newlines=True, check=True).stdout
    return set(out.split())


def everything(testbed, cloud):
    """What exists on every host (domains, pool and cache files) and how many jobs were ever submitted."""
    return {host: (testbed.domains(host), pool_files(testbed, host)) for host in testbed.hosts}, len(cloud.jobs())


@pytest.fixture(scope='module')
def served(testbed, tmp_path_factory):
    work = tmp_path_factory.mktemp('served')
    disk = testbed.bootable_image('ifupdown')
    text = work / 'notes.txt'
    text.write_text('this is a text file, not a disk image\n' * 1000)
    # A qcow2 whose external data file is a file of the host (/etc/hostname): it must never be copied in.
    datafile = str(work / 'datafile.qcow2')
    subprocess.run(['qemu-img', 'create', '-q', '-f', 'qcow2', '-o', 'data_file=%s,data_file_raw=on' % (work / 'dummy.raw'),
                    datafile, '1M'], check=True)
    subprocess.run(['qemu-img', 'amend', '-q', '-o', 'data_file=/etc/hostname,data_file_raw=on', datafile], check=True)
    server = Server({'/deb12.qcow2': disk, '/notes.txt': str(text), '/datafile.qcow2': datafile})
    server.disk, server.checksum, server.text, server.datafile = disk, sha256_of(disk), str(text), datafile
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope='module')
def imported(testbed, cloud, served):
    """The bootable Debian image imported onto host0 and host1 through the module (after a check-mode run), its
    cache entry kept (keep_cache) for the tests of the cache below."""
    before = everything(testbed, cloud)
    check = run_import(cloud, check=True, image_name=IMAGE, image_url=served.url('/deb12.qcow2'),
                       image_checksum=served.checksum, targets=['host0', 'host1'])
    checked_after = everything(testbed, cloud)
    run = run_import(cloud, image_name=IMAGE, image_url=served.url('/deb12.qcow2'), image_checksum=served.checksum,
                     targets=['host0', 'host1'], disk_size='4G', memory='1G', keep_cache=True)
    try:
        yield {'check': check, 'before_check': before, 'after_check': checked_after, 'run': run}
    finally:
        for host in ('host0', 'host1'):
            testbed.virsh(host, 'undefine', '--remove-all-storage', IMAGE, check=False)


def test_check_mode_says_who_would_fetch_and_changes_nothing(imported):
    check = imported['check']
    assert check.rc == 0 and check.last['changed'] is True, check
    assert check.last['fetch'] == ['host0', 'host1'] and check.last['present'] == [] and check.last['jobs'] == {}
    assert imported['after_check'] == imported['before_check']


def test_import_makes_the_image_on_exactly_the_targets(imported, testbed, cloud, served):
    run = imported['run']
    assert run.rc == 0 and run.last['changed'] is True, run
    assert sorted(run.last['jobs']) == ['host0', 'host1']
    assert all(job['action'] == 'image.import' and job['state'] == 'succeeded' for job in run.last['jobs'].values())
    size = os.path.getsize(served.disk)
    assert served.count('/deb12.qcow2') == 2  # each host worker fetched it once itself
    for host in ('host0', 'host1'):
        result = run.last['imported'][host]
        assert result['cache_hit'] is False and result['fetched_bytes'] == size and result['cache_kept'] is True
        assert result['path'] == os.path.join(POOL, IMAGE + '.qcow2') and result['capacity'] == 4 * GIB
        # The job log kept the host worker's last progress figures: the whole file.
        assert run.last['jobs'][host]['progress'] == {'done': size, 'total': size}
        xml = testbed.virsh(host, 'dumpxml', IMAGE)
        assert "<maglica-image:image" in xml and served.checksum in xml and served.url('/deb12.qcow2') in xml
        assert 'maglica:clone' not in xml
    assert IMAGE not in testbed.domains('host2')
    listing = run_playbook(os.path.join(PLAYBOOKS, 'image_info.yml'), {'maglica_config': cloud.path, 'image_names': [IMAGE]})
    images = listing.last['images']
    assert sorted(i['host'] for i in images) == ['host0', 'host1'], listing
    for entry in images:
        disk = entry['disks'][0]
        assert disk['capacity'] == 4 * GIB and entry['memory_mb'] == 1024
        # Sparse: about the data of the source file, far under the virtual size.
        assert disk['allocation'] <= size * 1.1 and disk['allocation'] < disk['capacity'] / 3, disk
        assert entry['image']['checksum'] == served.checksum


def test_the_cached_file_is_untouched_by_the_resize(imported, testbed, served):
    assert imported['run'].rc == 0
    cached = testbed.outside_path('host0', os.path.join(CACHE, served.checksum.split(':')[1] + '.img'))
    info = json.loads(subprocess.run(['qemu-img', 'info', '--output=json', '-U', cached], stdout=subprocess.PIPE, check=True).stdout)
    source = json.loads(subprocess.run(['qemu-img', 'info', '--output=json', '-U', served.disk], stdout=subprocess.PIPE, check=True).stdout)
    assert info['virtual-size'] == source['virtual-size'] < 4 * GIB
    assert sha256_of(cached) == served.checksum
    assert os.stat(cached).st_mode & 0o222 == 0  # a read-only base


def test_rerun_changes_nothing_and_downloads_nothing(imported, cloud, served):
    assert imported['run'].rc == 0
    fetched = len(served.requests)
    jobs = len(cloud.jobs())
    again = run_import(cloud, image_name=IMAGE, image_url=served.url('/deb12.qcow2'), image_checksum=served.checksum,
                       targets=['host0', 'host1'])
    assert again.rc == 0 and again.last['changed'] is False and again.last['present'] == ['host0', 'host1'], again
    assert len(served.requests) == fetched and len(cloud.jobs()) == jobs


def test_a_second_image_from_the_same_file_comes_from_the_cache(imported, testbed, cloud, served):
    assert imported['run'].rc == 0
    fetched = len(served.requests)
    run = run_import(cloud, image_name='deb12.overlay', image_url=served.url('/deb12.qcow2'), image_checksum=served.checksum,
                     targets=['host0'], disk_mode='overlay', disk_size='5G')
    try:
        assert run.rc == 0 and run.last['changed'] is True, run
        result = run.last['imported']['host0']
        assert result['cache_hit'] is True and result['fetched_bytes'] == 0 and len(served.requests) == fetched
        overlay = testbed.outside_path('host0', result['path'])
        assert result['capacity'] == 5 * GIB and os.stat(overlay).st_blocks * 512 < 16 * 1024 * 1024
        assert result['cache'] in testbed.virsh('host0', 'vol-dumpxml', result['path'])  # backed by the cache
    finally:
        testbed.virsh('host0', 'undefine', '--remove-all-storage', 'deb12.overlay', check=False)


def test_the_imported_image_clones_and_boots(imported, testbed, cloud, tmp_path):
    assert imported['run'].rc == 0
    boot = Booted(testbed, cloud, str(tmp_path))
    name = 'imp-a.boot.test'
    try:
        boot.results['imp-a'] = maglica_cloud.clone(cloud.config, IMAGE, name, host='host0', wait_for='ssh',
                                                    ssh_authorized_keys=[boot.public_key], wait_for_timeout=BOOT_TIMEOUT)
        assert boot.results['imp-a']['ip'], boot.results['imp-a']
        assert boot.ssh('imp-a', 'hostname -f').stdout.strip() == name
        assert boot.ssh('imp-a', 'systemctl is-active ssh').stdout.strip() == 'active'
        # Grown to 4G: the guest sees the bigger disk.
        assert boot.ssh('imp-a', 'cat /sys/block/vda/size').stdout.strip() == str(4 * GIB // 512)
        # A name taken by a VM (this clone, running): refused before anything is submitted, nothing made.
        before = everything(testbed, cloud)
        taken = run_import(cloud, image_name=name, image_url='http://127.0.0.1:9/none', image_checksum=OTHER_CHECKSUM,
                           targets=['host0'])
        assert taken.rc != 0 and 'is taken on host0 by a VM' in taken.last['msg'], taken
        assert everything(testbed, cloud) == before
    finally:
        testbed.virsh('host0', 'destroy', name, check=False)
        testbed.virsh('host0', 'undefine', '--remove-all-storage', name, check=False)


@pytest.fixture
def small_cache_on_host2(testbed):
    """host2's image cache on a tmpfs of 8 MiB of its own (inside its namespace): a real full disk."""
    def exec_in(*command, check=True):
        return subprocess.run(['bash', os.path.join(TESTBED, 'testbed.sh'), 'exec', 'host2'] + list(command),
                              env=testbed.env, check=check, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    exec_in('mkdir', '-p', CACHE)
    exec_in('mount', '-t', 'tmpfs', '-o', 'size=8m', 'maglica-small-cache', CACHE)
    try:
        yield
    finally:
        exec_in('umount', CACHE, check=False)
        exec_in('rmdir', CACHE, check=False)


BAD_INPUTS = {
    # case: (url path or full URL, checksum or None for the right one, words in the message)
    'wrong_checksum': ('/deb12.qcow2', 'sha256:' + 'e' * 64, ['checksum mismatch', 'expected sha256:' + 'e' * 64, 'got sha256:']),
    # A checksum no cache holds: with one that a host has cached, the host makes the image without the URL.
    'http_404': ('/missing.qcow2', 'sha256:' + '1' * 64, ['HTTP 404']),
    'refused': ('http://127.0.0.1:1/x.qcow2', 'sha256:' + '1' * 64, ['Connection refused']),
    'not_an_image': ('/notes.txt', 'text', ['is not a disk image', 'qemu-img info']),
    'external_data_file': ('/datafile.qcow2', 'datafile', ['qcow2 image with an external data file']),
    # No host_worker.file_url_dirs in the testbed: no file:// URL is read, and the refusal says nothing of the file.
    'file_url': ('file:///etc/hostname', 'sha256:' + '1' * 64, ['file:// URLs may name only regular files inside no directory']),
}


@pytest.mark.parametrize('case', list(BAD_INPUTS))
def test_bad_input_is_refused_by_name_and_leaves_nothing(case, testbed, cloud, served):
    path, checksum, words = BAD_INPUTS[case]
    url = path if path.startswith(('http', 'file')) else served.url(path)
    if checksum in ('text', 'datafile'):
        checksum = sha256_of(served.text if checksum == 'text' else served.datafile)
    before = everything(testbed, cloud)
    try:
        run = run_import(cloud, image_name='bad.image', image_url=url, image_checksum=checksum, targets=['host1', 'host2'])
    finally:
        after = everything(testbed, cloud)
        for host in testbed.hosts:  # a failed case must not break the next
            testbed.virsh(host, 'undefine', '--remove-all-storage', 'bad.image', check=False)
    assert run.rc != 0, run
    message = run.last['msg']
    assert all(w in message for w in words) and 'host1' in message and 'host2' in message, message
    assert after[0] == before[0], (before, after)  # no domain, no volume, no cache entry or part file anywhere
    assert after[1] == before[1] + 2  # one job per target ran and failed


def test_disk_full_is_refused_and_leaves_nothing(testbed, cloud, served, small_cache_on_host2):
    """The download goes into the (full) cache: keep_cache. (A copy that keeps no entry fetches into the pool.)"""
    before = everything(testbed, cloud)
    try:
        run = run_import(cloud, image_name='full.image', image_url=served.url('/deb12.qcow2'), image_checksum=served.checksum,
                         targets=['host2'], keep_cache=True)
        assert run.rc != 0 and 'no space left' in run.last['msg'].lower() and 'host2' in run.last['msg'], run
        after = everything(testbed, cloud)
        assert after[0] == before[0], (before, after)
    finally:  # an import that was not refused must not stay for the tests after this one
        testbed.virsh('host2', 'undefine', '--remove-all-storage', 'full.image', check=False)


def test_a_target_not_in_the_configuration_is_refused_before_anything(testbed, cloud, served):
    before = everything(testbed, cloud)
    run = run_import(cloud, image_name='bad.image', image_url=served.url('/deb12.qcow2'), image_checksum=served.checksum,
                     targets=['host1', 'host9'])
    assert run.rc != 0 and "host 'host9' is not in the configuration" in run.last['msg'], run
    assert 'known hosts: host0, host1, host2' in run.last['msg']
    assert everything(testbed, cloud) == before


def test_an_image_made_from_another_file_is_not_replaced(testbed, cloud, served):
    before = everything(testbed, cloud)
    run = run_import(cloud, image_name='debian.original', image_url=served.url('/deb12.qcow2'), image_checksum=served.checksum,
                     targets=['host0'])
    assert run.rc != 0 and 'debian.original on host0 is an image made from something else' in run.last['msg'], run
    assert everything(testbed, cloud) == before


def test_cli_import_json_reports_present_hosts(imported, cloud, served):
    assert imported['run'].rc == 0
    proc = subprocess.run([PYTHON, '-m', 'maglica.controller.cli', '--config', cloud.path, '--json', 'image', 'import', '--name', IMAGE,
                           '--url', served.url('/deb12.qcow2'), '--checksum', served.checksum, '--on', 'host0', '--on', 'host1'],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, env=cloud.testbed.env, check=False)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result['changed'] is False and result['present'] == ['host0', 'host1'] and result['fetch'] == []
    bad = subprocess.run([PYTHON, '-m', 'maglica.controller.cli', '--config', cloud.path, 'image', 'import', '--name', IMAGE,
                          '--url', served.url('/deb12.qcow2'), '--checksum', 'md5:abc'],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, env=cloud.testbed.env, check=False)
    assert bad.returncode == 1 and 'only sha256' in bad.stderr


def test_a_copy_keeps_no_cache_entry_by_default(testbed, cloud, served):
    """disk_mode copy, the default: the host stores the data once - the disk, not the disk and the fetched file."""
    name = 'deb12.once'
    before = pool_files(testbed, 'host2')
    try:
        run = run_import(cloud, image_name=name, image_url=served.url('/deb12.qcow2'), image_checksum=served.checksum,
                         targets=['host2'])
        assert run.rc == 0 and run.last['changed'] is True, run
        result = run.last['imported']['host2']
        assert result['cache_hit'] is False and result['cache_kept'] is False
        assert pool_files(testbed, 'host2') - before == {result['path']}, 'only the disk may be left'
    finally:
        testbed.virsh('host2', 'undefine', '--remove-all-storage', name, check=False)


def test_a_local_file_is_uploaded_through_libvirt_streams(testbed, cloud, served):
    name = 'deb12.uploaded'
    fetched = len(served.requests)
    try:
        run = run_import(cloud, image_name=name, image_path=served.disk, targets=['host2'], disk_mode='overlay')
        assert run.rc == 0 and run.last['changed'] is True and run.last['checksum'] == served.checksum, run
        result = run.last['imported']['host2']
        assert result['cache_hit'] is False and result['fetched_bytes'] == os.path.getsize(served.disk)
        assert len(served.requests) == fetched  # nothing was fetched over HTTP
        cached = testbed.outside_path('host2', result['cache'])
        assert sha256_of(cached) == served.checksum
        # Holes went as holes: the cached copy is no more allocated than the source file.
        assert os.stat(cached).st_blocks <= os.stat(served.disk).st_blocks * 1.05
        assert not [f for f in pool_files(testbed, 'host2') if '.maglica-upload-' in f]  # taken into the cache
        xml = testbed.virsh('host2', 'dumpxml', name)
        assert 'upload:%s' % served.disk in xml and served.checksum in xml
        again = run_import(cloud, image_name=name, image_path=served.disk, targets=['host2'])
        assert again.rc == 0 and again.last['changed'] is False, again
    finally:
        testbed.virsh('host2', 'undefine', '--remove-all-storage', name, check=False)
