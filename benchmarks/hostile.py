# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""bench-fuzz's hostile phases (issue 18, Proof): hostile images, hostile servers, hostile guest agents.

Every case is made here, from a seeded random.Random, for real:
- images: qemu-img makes qcow2 images with an external data file, a backing file or a json: name pointing at a
  host "secret" file (1 MiB of a random marker), VMDK descriptors with FLAT/SPARSE extents on it, enormous
  virtual sizes, raw files too small, and qcow2 headers with random bytes changed. Each is served by a real HTTP
  server on 127.0.0.1 and imported by the host worker's own run_import against libvirt's test driver, with a pool
  in a temporary directory. It must be refused (a garbled header may instead import as a self-contained image),
  leave no file and no domain, and no byte run of the marker may reach any file of the pool or any message.
- servers: the same HTTP server misbehaving (endless bodies, bad or lying Content-Length, redirects to ftp://,
  file://, data: and loops, a slow drip past max_download_time, silence, garbage status lines, bad chunks). Each
  import must end refused, for the reason its kind expects, within max_download_time plus a margin.
- agents: guest-agent replies (libvirt's interfaceAddresses) holding hostile values: lists, wildcards, line
  breaks, NULs, scope ids, huge strings, wrong types. Each hostile value must be dropped with a warning, and every
  known_hosts line made from what was kept must name only parsed addresses (and the VM's name); a hostile value
  handed to the known_hosts line maker itself must be refused.
"""

from __future__ import annotations

import hashlib
import http.server
import ipaddress
import json
import logging
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
import uuid

from maglica.protocol import messages
from maglica.controller import reach
from maglica.errors import MaglicaError
from maglica.host import image_fetch
from maglica.controller import known_hosts

# Kinds each phase makes (the unit test checks a generator makes them all).
IMAGE_KINDS = ('data_file', 'vmdk_descriptor', 'vmdk_binary', 'json_backing', 'backing', 'huge_virtual', 'raw_small',
               'file_url', 'garbled')
SERVER_KINDS = ('endless', 'cl_negative', 'cl_huge', 'cl_garbage', 'cl_short', 'cl_long', 'redirect_ftp',
                'redirect_file', 'redirect_data', 'redirect_http', 'redirect_loop', 'drip', 'silent_headers',
                'silent_body', 'garbage_status', 'chunked_garbage')
AGENT_KINDS = ('list', 'wildcard', 'newline', 'nul', 'space', 'scoped', 'prefix', 'bracket', 'option', 'name',
               'huge', 'wrong_type', 'leading_zero', 'unicode_digits')

# What each server kind's refusal must say (a refusal for another reason means the limit meant did not work).
SERVER_REASONS = {
    'endless': 'more than max_download_size',
    'cl_negative': 'bad Content-Length', 'cl_garbage': 'bad Content-Length',
    'cl_huge': r'announces \d+ bytes \(Content-Length\), over max_download_size',
    'cl_short': 'checksum mismatch', 'cl_long': 'checksum mismatch',
    'redirect_ftp': 'redirected .*refused', 'redirect_file': 'redirected .*refused',
    'redirect_data': 'redirected .*refused', 'redirect_http': 'redirected .*refused',
    'redirect_loop': r'HTTP 30\d',
    'drip': 'did not finish within max_download_time',
    'silent_headers': 'timed out', 'silent_body': 'timed out|TimeoutError|max_download_time',
    'garbage_status': 'cannot fetch', 'chunked_garbage': 'reading .* failed',
}
STALL_MARGIN_S = 3.0  # over max_download_time: a read waits at most the socket timeout (max_download_time) too
# reach logs every dropped value too: thousands of lines here, which the warnings list already holds.
logging.getLogger('maglica.reach').addHandler(logging.NullHandler())
logging.getLogger('maglica.reach').propagate = False
KEY = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHk6r9gRqgK0i2m3CJ6Bd3vq3ZyLkA7o2Yx0Hc1Zb9mX comment'


def qemu_img(*args: str) -> None:
    subprocess.run(('qemu-img',) + args, check=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def sha256(data: bytes) -> str:
    return 'sha256:' + hashlib.sha256(data).hexdigest()


class Secret(object):
    """A file of the host that must never reach an image: 1 MiB of a random marker."""

    def __init__(self, directory: str, rng) -> None:
        self.marker = b'MAGLICA-HOST-SECRET-%032x-' % rng.getrandbits(128)
        self.path = os.path.join(directory, 'host', 'secret.bin')
        os.makedirs(os.path.dirname(self.path))
        with open(self.path, 'wb') as handle:
            handle.write((self.marker * (2 ** 20 // len(self.marker) + 1))[:2 ** 20])

    def leaks_in(self, data: bytes) -> int:
        """Occurrences of the marker, or of any 16-byte piece of it (a copy cut at a cluster edge)."""
        if self.marker in data:
            return data.count(self.marker)
        pieces = (self.marker[i:i + 16] for i in range(0, len(self.marker) - 15, 8))
        return sum(1 for piece in pieces if piece in data)


class Server(object):
    """A real HTTP server on 127.0.0.1, in a thread: /file/NAME serves files[NAME]; /KIND/NAME misbehaves as KIND."""

    def __init__(self) -> None:
        self.files: dict = {}
        self.stop = threading.Event()
        served = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = 'HTTP/1.0'

            def log_message(self, *args):
                pass

            def do_GET(self):
                try:
                    served.answer(self)
                except OSError:  # the client went away: what the endless routes wait for
                    pass

        self.server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return 'http://127.0.0.1:%d%s' % (self.server.server_address[1], path)

    def answer(self, request) -> None:  # noqa: C901  one branch per misbehaviour
        parts = request.path.lstrip('/').split('/', 2)
        route, name = parts[0], (parts[1] if len(parts) > 1 else '')
        case = self.files.get(name)
        if route == 'file':
            body = case['body']
            request.send_response(200)
            request.send_header('Content-Length', str(len(body)))
            request.end_headers()
            request.wfile.write(body)
        elif route in ('endless', 'drip'):
            request.send_response(200)
            request.end_headers()
            block = os.urandom(64 * 1024) if route == 'endless' else b'x'
            while not self.stop.is_set():
                request.wfile.write(block)
                request.wfile.flush()
                if route == 'drip':
                    self.stop.wait(case['pace'])  # the server's pace, not synchronisation
        elif route == 'length':  # Content-Length as the case says, then the body the case holds
            request.send_response(200)
            for value in case['lengths']:
                request.send_header('Content-Length', value)
            request.end_headers()
            request.wfile.write(case['body'])
        elif route == 'redirect':
            request.send_response(case.get('code', 302))
            request.send_header('Location', case['to'] if 'to' in case else self.url(request.path))
            request.send_header('Content-Length', '0')
            request.end_headers()
        elif route == 'silent':  # no answer, or headers and then no body, until the client goes (or the end)
            if case['body_too']:
                request.send_response(200)
                request.send_header('Content-Length', '4096')
                request.end_headers()
                request.wfile.flush()
            self.stop.wait(30)
        elif route == 'raw':  # bytes straight onto the socket: garbage status lines and headers
            request.wfile.write(case['raw'])
            request.wfile.flush()
        elif route == 'chunked':
            request.wfile.write(b'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n' + case['raw'])
            request.wfile.flush()
        else:
            request.send_error(404)

    def close(self) -> None:
        self.stop.set()
        self.server.shutdown()
        self.server.server_close()


class Pool(object):
    """A directory storage pool of libvirt's test driver in a temporary directory, and run_import on it."""

    def __init__(self, directory: str) -> None:
        # Only the hostile phases need the bindings.
        import libvirt  # pylint: disable=import-outside-toplevel
        self.directory = directory
        self.name = 'pool-%s' % uuid.uuid4().hex[:12]
        self.conn = libvirt.open('test:///default')
        self.pool = self.conn.storagePoolCreateXML('<pool type="dir"><name>%s</name><target><path>%s</path></target></pool>'
                                                   % (self.name, directory), 0)
        self.domains = set(self.domain_names())

    def domain_names(self) -> list:
        return sorted(d.name() for d in self.conn.listAllDomains(0))

    def run(self, name: str, url: str, checksum: str, file_dirs=(), **args) -> dict:
        job = messages.new_job('kvm1', 'image.import', dict({'name': name, 'url': url, 'checksum': checksum,
                                                             'pool': self.name, 'domain_type': 'qemu'}, **args))
        return image_fetch.run_import(self.conn, 'kvm1', job['id'], job['args'], file_dirs=list(file_dirs))

    def files(self) -> list:
        return sorted(os.path.relpath(os.path.join(root, name), self.directory)
                      for root, _dirs, names in os.walk(self.directory) for name in names)

    def leaks(self, secret: Secret) -> int:
        found = 0
        for name in self.files():
            with open(os.path.join(self.directory, name), 'rb') as handle:
                found += secret.leaks_in(handle.read())
        return found

    def left_behind(self) -> list:
        return self.files() + ['domain %s' % d for d in self.domain_names() if d not in self.domains]

    def clear(self) -> None:
        """Remove what an accepted import made: its domain, its disk and the cache entry."""
        for dom in self.conn.listAllDomains(0):
            if dom.name() not in self.domains:
                dom.undefine()
        for name in self.files():
            os.unlink(os.path.join(self.directory, name))

    def close(self) -> None:
        self.pool.destroy()
        self.conn.close()


# -- hostile images --------------------------------------------------------------------------------------------

def vmdk_descriptor(rng, secret_path: str) -> bytes:
    extent = rng.choice(('FLAT', 'SPARSE', 'VMFS', 'VMFSSPARSE', 'ZERO'))
    target = rng.choice((secret_path, os.path.relpath(secret_path, '/'), '../host/secret.bin', '/etc/passwd'))
    create = rng.choice(('monolithicFlat', 'monolithicSparse', 'twoGbMaxExtentFlat', 'vmfs', 'streamOptimized'))
    lines = ['# Disk DescriptorFile', 'version=%d' % rng.choice((1, 2, 3)), 'CID=%08x' % rng.getrandbits(32),
             'parentCID=ffffffff', 'createType="%s"' % create, '',
             'RW %d %s "%s" %d' % (rng.choice((1, 2048, 2 ** 21)), extent, target, rng.choice((0, 512))), '',
             'ddb.adapterType = "ide"', 'ddb.geometry.cylinders = "2"']
    if rng.random() < 0.3:  # the header line first dropped: createType= alone marks a descriptor
        lines = lines[1:]
    return ('\n'.join(lines) + '\n').encode()


def garble(rng, data: bytes) -> bytes:
    """A valid qcow2 image with 1-8 random bytes changed in its header (the first 512 bytes)."""
    raw = bytearray(data)
    for _flip in range(rng.randint(1, 8)):
        raw[rng.randrange(4 if rng.random() < 0.9 else 0, 512)] = rng.randrange(256)
    return bytes(raw)


def image_case(rng, kind: str, work: str, secret: Secret) -> dict:
    """One hostile image: {'kind', 'body' (the served bytes), 'url_path' or 'url', 'args', 'must_refuse'}."""
    path = os.path.join(work, 'case.img')
    if os.path.exists(path):
        os.unlink(path)
    size = '%dM' % rng.randint(1, 64)
    case: dict = {'kind': kind, 'args': {}, 'must_refuse': True}
    if kind == 'data_file':
        dummy = os.path.join(work, 'dummy.raw')
        qemu_img('create', '-q', '-f', 'qcow2', '-o', 'data_file=%s,data_file_raw=%s' % (dummy, rng.choice(('on', 'off'))),
                 path, size)
        target = rng.choice((secret.path, os.path.relpath(secret.path, work)))
        qemu_img('amend', '-q', '-o', 'data_file=%s' % target, path)
    elif kind == 'vmdk_descriptor':
        case['body'] = vmdk_descriptor(rng, secret.path)
    elif kind == 'vmdk_binary':
        qemu_img('create', '-q', '-f', 'vmdk', path, size)
    elif kind in ('json_backing', 'backing'):
        if kind == 'json_backing':
            backing = 'json:' + json.dumps({'driver': 'raw', 'file': {'driver': 'file', 'filename': secret.path}})
        else:
            backing = rng.choice((secret.path, os.path.relpath(secret.path, work)))
        qemu_img('create', '-q', '-f', 'qcow2', '-u', '-b', backing, '-F', 'raw', path, size)
    elif kind == 'huge_virtual':
        if rng.random() < 0.5:
            qemu_img('create', '-q', '-f', 'qcow2', path, '%dT' % rng.randint(2, 64))  # over the default 1 TiB
        else:
            mib = rng.randint(2, 64)
            qemu_img('create', '-q', '-f', 'qcow2', path, '%dM' % mib)
            case['args'] = {'max_virtual_size': 2 ** 20 * rng.randint(1, mib - 1)}
    elif kind == 'raw_small':
        length = rng.choice((rng.randint(1, 2 ** 20 - 1), 2 ** 20 + rng.randint(1, 511), rng.randint(1, 4096) * 512 - rng.randint(1, 511)))
        body = bytes(rng.getrandbits(8) for _index in range(min(length, 4096))) + bytes(max(0, length - 4096))
        case['body'] = b'RAW!' + body[4:]  # no format's magic at its start
    elif kind == 'file_url':
        case['url'] = 'file://' + rng.choice((secret.path, '/etc/passwd', '/proc/self/environ', os.path.join(work, '..', 'host', 'secret.bin')))
        case['file_dirs'] = rng.choice(((), (work,)))
        case['body'] = b''
    elif kind == 'garbled':
        base = os.path.join(work, 'base-%s.qcow2' % size)
        if not os.path.exists(base):
            qemu_img('create', '-q', '-f', 'qcow2', base, size)
        with open(base, 'rb') as handle:
            case['body'] = garble(rng, handle.read())
        case['must_refuse'] = False  # a changed byte qemu does not read is a good image still: see run_image
    else:
        raise ValueError(kind)
    if 'body' not in case:
        with open(path, 'rb') as handle:
            case['body'] = handle.read()
    return case


def image_cases(rng, count: int, work: str, secret: Secret):
    """`count` hostile images, every kind in turn first, then kinds at random."""
    for index in range(count):
        kind = IMAGE_KINDS[index] if index < len(IMAGE_KINDS) else rng.choice(IMAGE_KINDS)
        yield image_case(rng, kind, work, secret)


def self_contained(pool: Pool) -> bool:
    """The accepted import's disk opens nothing but its own file (and, an overlay, the cache entry)."""
    disks = [n for n in pool.files() if n.endswith('.qcow2')]
    for name in disks:
        path = os.path.join(pool.directory, name)
        info = json.loads(subprocess.run(['qemu-img', 'info', '--output=json', '--backing-chain', '-U', path],
                                         check=True, stdout=subprocess.PIPE).stdout)
        for layer in info:
            if (layer.get('format-specific') or {}).get('data', {}).get('data-file'):
                return False
            backing = layer.get('full-backing-filename')
            if backing and not os.path.realpath(backing).startswith(os.path.realpath(pool.directory) + '/'):
                return False
    return bool(disks)


def run_image(rng, count: int, base: str) -> dict:
    os.makedirs(base)
    work = tempfile.mkdtemp(prefix='images-', dir=base)
    secret = Secret(base, rng)
    os.makedirs(os.path.join(base, 'pool'))
    pool = Pool(os.path.join(base, 'pool'))
    server = Server()
    counts = {'cases': 0, 'refused': 0, 'accepted': 0, 'garbled_imported_clean': 0, 'leaked': 0, 'left_behind': 0,
              'kinds': {}}
    problems = []
    try:
        for index, case in enumerate(image_cases(rng, count, work, secret)):
            name = 'hostile-%d' % index
            server.files[name] = case
            url = case.get('url') or server.url('/file/%s' % name)
            counts['kinds'][case['kind']] = counts['kinds'].get(case['kind'], 0) + 1
            try:
                pool.run(name, url, sha256(case['body']), file_dirs=case.get('file_dirs', ()), **case['args'])
                outcome, message = 'accepted', ''
            except MaglicaError as e:
                outcome, message = 'refused', str(e)
            leaked = pool.leaks(secret) + secret.leaks_in(message.encode('utf-8', 'replace'))
            if secret.path in message and case['kind'] != 'file_url':  # a file:// URL is quoted: the job named it
                leaked += 1
            counts['leaked'] += leaked
            if leaked:
                problems.append('image %d (%s): %d piece(s) of the host secret reached the pool or the message'
                                % (index, case['kind'], leaked))
            if outcome == 'refused':
                left = pool.left_behind()
                if left:
                    counts['left_behind'] += 1
                    problems.append('image %d (%s) refused but left %s' % (index, case['kind'], ', '.join(left[:5])))
            elif case['must_refuse']:
                problems.append('image %d (%s) was imported' % (index, case['kind']))
            elif self_contained(pool):
                counts['garbled_imported_clean'] += 1
            else:
                problems.append('garbled image %d was imported and is not self-contained' % index)
            if case['must_refuse']:
                counts['cases'] += 1
                counts['refused' if outcome == 'refused' else 'accepted'] += 1
            elif outcome == 'refused':
                counts['cases'] += 1
                counts['refused'] += 1
            pool.clear()
            del server.files[name]
    finally:
        server.close()
        pool.close()
        shutil.rmtree(work, ignore_errors=True)
    return {'counts': counts, 'problems': problems}


# -- hostile servers -------------------------------------------------------------------------------------------

GARBAGE_STATUS = (b'HTTP/1.1 abc OK\r\n\r\n', b'\x00\xff\xfe garbage\r\n\r\n', b'HTTP/9.9 200 OK\r\n\r\n',
                  b'ICY 200 OK\r\n\r\n', b'HTTP/1.1 200 OK\r\n' + b'X: ' + b'y' * 70000 + b'\r\n\r\n',
                  b'HTTP/1.1 200 OK\r\n' + b'X-A: b\r\n' * 150 + b'\r\n', b'HTTP/1.1 99999999999999999999 OK\r\n\r\n',
                  b'', b'\r\n\r\n')


def server_case(rng, kind: str) -> dict:
    """One hostile server behaviour: {'kind', 'route', 'case' (what the server serves), 'args'}."""
    limit = rng.randint(1, 4) * 2 ** 20
    args = {'max_download_time': rng.choice((1, 2)), 'max_download_size': limit}
    body = bytes(rng.getrandbits(8) for _index in range(rng.randint(16, 4096)))
    case: dict = {}
    route = kind
    checksum = sha256(body)
    if kind == 'endless':
        args['max_download_time'] = 30  # the size limit must stop it, not the deadline
    elif kind.startswith('cl_'):
        route = 'length'
        case['body'] = body
        if kind == 'cl_negative':
            case['lengths'] = [rng.choice(('-1', '-%d' % len(body), '-0'))]
        elif kind == 'cl_huge':
            case['lengths'] = [str(rng.choice((10 ** 15, 2 ** 63, limit + 1, 2 ** 50 + rng.randrange(2 ** 40))))]
        elif kind == 'cl_garbage':
            case['lengths'] = rng.choice((['abc'], ['1,2'], ['+5'], ['12e3'], ['0x10'], [str(len(body)), '7'],
                                          ['\u0661\u0662'.encode('utf-8').decode('latin-1')], ['9' * 40]))
        elif kind == 'cl_short':  # announces more than it sends, then closes: a cut download
            case['lengths'] = [str(len(body) + rng.randint(1, 10 ** 6))]
            checksum = sha256(body + b'the rest that never came')
        else:  # cl_long: announces less than it sends
            cut = rng.randint(1, len(body) - 1)
            case['lengths'] = [str(cut)]
    elif kind.startswith('redirect_'):
        route = 'redirect'
        case['code'] = rng.choice((301, 302, 303, 307, 308))
        if kind == 'redirect_ftp':
            case['to'] = rng.choice(('ftp://127.0.0.1/disk.img', 'FTP://127.0.0.1:21/x', 'ftp://user:pw@127.0.0.1/'))
        elif kind == 'redirect_file':
            case['to'] = rng.choice(('file:///etc/passwd', 'file:///proc/self/environ', 'file://localhost/etc/shadow',
                                     'FILE:///etc/hostname'))
        elif kind == 'redirect_data':
            case['to'] = rng.choice(('data:,hello', 'data:application/octet-stream;base64,AAAA', 'gopher://127.0.0.1/',
                                     'javascript:alert(1)', 'json:{"driver":"file"}'))
        elif kind == 'redirect_http':  # https only (the default): plain http is not followed
            case['to'] = 'http://127.0.0.1:9/disk.img'
        else:  # redirect_loop: http allowed, so the loop itself must end it
            args['redirect_schemes'] = ['http']
    elif kind == 'drip':
        case['pace'] = rng.choice((0.05, 0.1, 0.2))
        args['max_download_size'] = 2 ** 30
    elif kind.startswith('silent_'):
        route = 'silent'
        case['body_too'] = kind == 'silent_body'
    elif kind == 'garbage_status':
        route = 'raw'
        case['raw'] = rng.choice(GARBAGE_STATUS + (bytes(rng.getrandbits(8) for _index in range(rng.randint(1, 300))) + b'\r\n\r\n',))
    elif kind == 'chunked_garbage':
        route = 'chunked'
        case['raw'] = rng.choice((b'zz\r\nabc\r\n', b'-5\r\nabcde\r\n', b'ffffffffffffffffffff\r\nx', b'5\r\nab',
                                  b'4;' + b'x' * 70000 + b'\r\n', b'1\r\nx\r\nq\r\n'))
    else:
        raise ValueError(kind)
    return {'kind': kind, 'route': route, 'case': case, 'args': args, 'checksum': checksum}


def server_cases(rng, count: int):
    for index in range(count):
        yield server_case(rng, SERVER_KINDS[index] if index < len(SERVER_KINDS) else rng.choice(SERVER_KINDS))


def run_server(rng, count: int, base: str) -> dict:
    os.makedirs(os.path.join(base, 'pool'))
    pool = Pool(os.path.join(base, 'pool'))
    server = Server()
    counts = {'cases': 0, 'refused': 0, 'accepted': 0, 'stalls': 0, 'wrong_reason': 0, 'left_behind': 0,
              'slowest_over_deadline_s': 0.0, 'kinds': {}}
    problems = []
    try:
        for index, case in enumerate(server_cases(rng, count)):
            name = 'server-%d' % index
            server.files[name] = case['case']
            counts['cases'] += 1
            counts['kinds'][case['kind']] = counts['kinds'].get(case['kind'], 0) + 1
            started = time.monotonic()
            try:
                pool.run(name, server.url('/%s/%s' % (case['route'], name)), case['checksum'], **case['args'])
                outcome, message = 'accepted', ''
            except MaglicaError as e:
                outcome, message = 'refused', str(e)
            elapsed = time.monotonic() - started
            over = elapsed - case['args']['max_download_time']
            counts['slowest_over_deadline_s'] = round(max(counts['slowest_over_deadline_s'], over), 2)
            if over > STALL_MARGIN_S:
                counts['stalls'] += 1
                problems.append('server %d (%s) took %.1f s, over max_download_time %d s + %g s'
                                % (index, case['kind'], elapsed, case['args']['max_download_time'], STALL_MARGIN_S))
            if outcome == 'accepted':
                counts['accepted'] += 1
                problems.append('server %d (%s) was imported' % (index, case['kind']))
            else:
                counts['refused'] += 1
                if not re.search(SERVER_REASONS[case['kind']], message):
                    counts['wrong_reason'] += 1
                    problems.append('server %d (%s) refused for another reason than %r: %s'
                                    % (index, case['kind'], SERVER_REASONS[case['kind']], message[:200]))
            left = pool.left_behind()
            if left:
                counts['left_behind'] += 1
                problems.append('server %d (%s) left %s' % (index, case['kind'], ', '.join(left[:5])))
            pool.clear()
    finally:
        server.close()
        pool.close()
    return {'counts': counts, 'problems': problems}


# -- hostile guest agents --------------------------------------------------------------------------------------

def good_address(rng) -> str:
    if rng.random() < 0.6:
        return str(ipaddress.IPv4Address(rng.choice((0xC0000200, 0xC6336400, 0xCB007100)) + rng.randint(1, 254)))
    return str(ipaddress.IPv6Address(0x20010db8 << 96 | rng.getrandbits(64)))


def hostile_value(rng, kind: str):
    """A value a lying guest agent could report as an address, of `kind` (AGENT_KINDS). None of them is one."""
    good = good_address(rng)
    if kind == 'list':
        return rng.choice((good + ',' + good_address(rng), good + ',*', ',' + good, good + ','))
    if kind == 'wildcard':
        return rng.choice(('*', '?', good[:-1] + '*', good + '?', '10.0.0.*', '*.example'))
    if kind == 'newline':
        return good + rng.choice(('\n', '\r\n', '\n* ssh-rsa AAAAB3NzaC1yc2E', '\n@cert-authority * ')) + rng.choice(('', good))
    if kind == 'nul':
        return rng.choice((good + '\x00', '\x00' + good, good[:3] + '\x00' + good[3:]))
    if kind == 'space':
        return rng.choice((good + ' ', ' ' + good, good + '\t', good + ' ssh-ed25519'))
    if kind == 'scoped':
        if ':' in good:
            return rng.choice(('fe80::%x%%eth0' % rng.getrandbits(16), good + '%' + rng.choice(('1', 'eth0', 'x\ny', '*'))))
        return 'fe80::1%' + rng.choice(('eth0', '1', 'lo,*'))
    if kind == 'prefix':
        return good + '/' + str(rng.randint(0, 128))
    if kind == 'bracket':
        return rng.choice(('[%s]' % good, '[%s]:22' % good, '%s:22' % good if '.' in good else '[' + good))
    if kind == 'option':
        return rng.choice(('-oProxyCommand=touch /tmp/pwned', '!' + good, '@revoked', '|1|abc=|def='))
    if kind == 'name':
        return rng.choice(('evil.example', 'localhost', 'guest-%d' % rng.randrange(1000), 'a' * 63))
    if kind == 'huge':
        return good * rng.randint(1000, 20000)
    if kind == 'wrong_type':
        return rng.choice((None, 42, 3.5, True, b'10.0.0.9', [good], {'addr': [good]}, 2 ** 70, float('nan')))
    if kind == 'leading_zero':
        return '0' + good if '.' in good else '0' + good.replace(':', '0:', 1)  # 0192.0.2.1, 02001:db80:...
    if kind == 'unicode_digits':
        return good.translate(str.maketrans('0123456789', '\u0660\u0661\u0662\u0663\u0664\u0665\u0666\u0667\u0668\u0669'))
    raise ValueError(kind)


def agent_case(rng, index: int) -> dict:
    """A guest agent's reply with 1-3 interfaces, each with good addresses and hostile values mixed (and sometimes
    a hostile interface name or MAC): {'reply', 'good' (addresses that must be kept), 'hostile' [(kind, value)]}."""
    reply, good, hostile = {}, [], []
    for number in range(rng.randint(1, 3)):
        addrs = []
        for _slot in range(rng.randint(1, 5)):
            if rng.random() < 0.35:
                address = good_address(rng)
                good.append(address)
                addrs.append({'addr': address, 'prefix': rng.choice((24, 64, -1, 'x', None)), 'type': 0})
            else:
                kind = AGENT_KINDS[(index + len(hostile)) % len(AGENT_KINDS)] if rng.random() < 0.5 else rng.choice(AGENT_KINDS)
                value = hostile_value(rng, kind)
                hostile.append((kind, value))
                addrs.append({'addr': value, 'prefix': 24, 'type': rng.choice((0, 1, 7))} if rng.random() < 0.9 else value)
        name = 'eth%d' % number if rng.random() < 0.8 else '%s%d' % (rng.choice(('eth0\n', 'a,b', '*', 'x' * 100, 'ens3 ssh-rsa')), number)
        mac = '52:54:00:%02x:%02x:%02x' % tuple(rng.randrange(256) for _index in range(3)) if rng.random() < 0.8 else \
            rng.choice(('52:54:00:12:34:56\n', 'zz', 7, '*'))
        reply[name] = {'hwaddr': mac, 'addrs': addrs}
    return {'reply': reply, 'good': good, 'hostile': hostile}


class AgentDomain(object):
    """A domain whose guest agent answers `reply`. libvirt's test driver makes its addresses itself from parsed XML,
    so it cannot report a hostile string, and a real lying agent needs a booted guest (minutes of CPU here): so the
    reply is handed in at the libvirt API boundary, interfaceAddresses, as libvirt returns an agent's strings."""

    def __init__(self, reply: dict) -> None:
        self.reply = reply

    def name(self) -> str:
        return 'guest'

    def interfaceAddresses(self, source, flags):  # noqa: N802  libvirt's name
        return self.reply


def line_names(line: str) -> list:
    return line.split(' ')[0].split(',')


def run_agent(rng, count: int) -> dict:
    counts = {'cases': 0, 'refused': 0, 'accepted': 0, 'known_hosts_bad_lines': 0, 'kinds': {}}
    problems = []
    for index in range(count):
        case = agent_case(rng, index)
        warnings: list = []
        found = reach.guest_addresses(AgentDomain(case['reply']), warnings)
        kept = [a['address'] for a in found]
        if sorted(kept) != sorted(str(ipaddress.ip_address(a)) for a in case['good']):
            problems.append('agent %d: kept %r, not the good addresses %r' % (index, kept[:5], case['good'][:5]))
        if any('\n' in w or '\0' in w or len(w) > 300 for w in warnings):
            problems.append('agent %d: a warning holds a line break, a NUL or a huge value' % index)
        for kind, value in case['hostile']:
            counts['cases'] += 1
            counts['kinds'][kind] = counts['kinds'].get(kind, 0) + 1
            if value in kept:  # the exact hostile value kept (a string never equals a parsed one: none is one)
                counts['accepted'] += 1
                problems.append('agent %d: the hostile %s value %s was kept' % (index, kind, reach.shown(value)))
            else:
                counts['refused'] += 1
        if len(warnings) < len(case['hostile']):
            problems.append('agent %d: %d hostile values, %d warnings' % (index, len(case['hostile']), len(warnings)))
        # known_hosts lines from what was kept: only the VM's name and parsed addresses, one line per key.
        allowed = {'guest'} | set(kept)
        lines = known_hosts.known_hosts_lines(['guest'] + kept, [KEY])
        for line in lines:
            if '\n' in line or '\0' in line or len(line.split(' ')) != 3 or not set(line_names(line)) <= allowed:
                counts['known_hosts_bad_lines'] += 1
                problems.append('agent %d: known_hosts line %r' % (index, line[:200]))
        # Each hostile value handed to the line maker itself: refused, unless it is spelt like a host name (which
        # known_hosts_name takes by design: 'evil.example', 'e', '0192.0.2.1'), or empty (skipped, as ssh would).
        for kind, value in case['hostile']:
            if not value or (isinstance(value, str) and known_hosts.HOST_NAME_RE.fullmatch(value)):
                continue
            counts['cases'] += 1
            try:
                made = known_hosts.known_hosts_lines([value], [KEY])
            except MaglicaError:
                counts['refused'] += 1
            else:
                counts['accepted'] += 1
                problems.append('agent %d: known_hosts_lines took the hostile %s value %s: %r'
                                % (index, kind, reach.shown(value), made[0][:120]))
    return {'counts': counts, 'problems': problems}


def run_all(rng, images: int, servers: int, agents: int) -> dict:
    """The three phases; returns the fuzz.py result fields and the list of problems (what makes the run BROKEN)."""
    base = tempfile.mkdtemp(prefix='maglica-hostile-')
    phases, problems = {}, []
    try:
        for name, run in (('hostile_image', lambda: run_image(rng, images, os.path.join(base, 'image'))),
                          ('hostile_server', lambda: run_server(rng, servers, os.path.join(base, 'server'))),
                          ('hostile_agent', lambda: run_agent(rng, agents))):
            started = time.monotonic()
            done = run()
            done['counts']['seconds'] = round(time.monotonic() - started, 1)
            phases[name] = done['counts']
            problems.extend(done['problems'])
    finally:
        shutil.rmtree(base, ignore_errors=True)
    result = {
        'hostile_cases': sum(p['cases'] for p in phases.values()),
        'hostile_refused': sum(p['refused'] for p in phases.values()),
        'host_bytes_leaked': phases['hostile_image']['leaked'],
        'worker_stalls': phases['hostile_server']['stalls'],
    }
    result.update(phases)
    return {'result': result, 'problems': problems}
