# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Hostile inputs for image imports, made for real (issue 18): a misbehaving HTTP server on 127.0.0.1, images
made with qemu-img that name files of the host, and a storage pool of libvirt's test driver in a directory, with
the host worker's run_import on it. Used by the unit tests (benchmarks/hostile.py has the fuzz benchmark's own)."""

from __future__ import annotations

import hashlib
import http.server
import os
import subprocess
import threading
import urllib.parse
import uuid

from maglica.protocol import messages
from maglica.host import image_fetch


def qemu_img(*args):
    subprocess.run(('qemu-img',) + args, check=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def sha256_of(path):
    with open(str(path), 'rb') as handle:
        return 'sha256:' + hashlib.sha256(handle.read()).hexdigest()


def host_secret_file(directory):
    """A file of the host that must never reach an image: 1 MiB of a marker. Returns (path, marker bytes)."""
    marker = b'MAGLICA-HOST-SECRET-%s-' % uuid.uuid4().hex.encode()
    path = os.path.join(str(directory), 'secret.bin')
    with open(path, 'wb') as handle:
        handle.write((marker * (1024 * 1024 // len(marker) + 1))[:1024 * 1024])
    return path, marker


def data_file_qcow2(path, host_file):
    """A qcow2 whose external data file is `host_file` (made with a dummy one, then amended)."""
    qemu_img('create', '-q', '-f', 'qcow2', '-o', 'data_file=%s.dummy,data_file_raw=on' % path, str(path), '1M')
    qemu_img('amend', '-q', '-o', 'data_file=%s,data_file_raw=on' % host_file, str(path))
    return str(path)


def backed_qcow2(path, host_file):
    """A qcow2 whose backing file is `host_file`, named by a json: name."""
    qemu_img('create', '-q', '-f', 'qcow2', '-b', 'json:{"driver":"raw","file":{"driver":"file","filename":"%s"}}' % host_file,
             '-F', 'raw', str(path), '1M')
    return str(path)


def vmdk_descriptor(host_file):
    """A hand-written VMDK descriptor whose flat extent is 1 MiB of `host_file`."""
    return ('# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\ncreateType="monolithicFlat"\n\n'
            'RW 2048 FLAT "%s" 0\n\nddb.adapterType = "ide"\nddb.geometry.cylinders = "2"\n'
            'ddb.geometry.heads = "16"\nddb.geometry.sectors = "63"\n' % host_file).encode()


def good_qcow2(directory, size='2M'):
    path = os.path.join(str(directory), 'good.qcow2')
    qemu_img('create', '-q', '-f', 'qcow2', path, size)
    return path


class Pool(object):
    """A directory storage pool of libvirt's test driver in a temporary directory, and run_import on it."""

    def __init__(self, directory):
        import libvirt  # only these tests need the bindings
        self.directory = str(directory)
        self.name = 'pool-%s' % uuid.uuid4().hex[:12]
        self.conn = libvirt.open('test:///default')
        self.pool = self.conn.storagePoolCreateXML('<pool type="dir"><name>%s</name><target><path>%s</path></target></pool>'
                                                   % (self.name, self.directory), 0)
        self.progress = []

    def run(self, url, checksum, file_dirs=None, name=None, **args):
        job = messages.new_job('kvm1', 'image.import', dict({'name': name or 'hostile-%s' % uuid.uuid4().hex[:8],
                                                             'url': url, 'checksum': checksum, 'pool': self.name,
                                                             'domain_type': 'qemu'}, **args))
        extra = {'file_dirs': [str(d) for d in file_dirs]} if file_dirs is not None else {}
        return image_fetch.run_import(self.conn, 'kvm1', job['id'], job['args'],
                                      progress=lambda done, total: self.progress.append((done, total)), **extra)

    def files(self):
        return sorted(os.path.relpath(os.path.join(root, name), self.directory)
                      for root, _dirs, names in os.walk(self.directory) for name in names)

    def files_holding(self, data):
        return [name for name in self.files() if data in open(os.path.join(self.directory, name), 'rb').read()]

    def close(self):
        self.pool.destroy()
        self.conn.close()


class Server(object):
    """A real HTTP server on 127.0.0.1, in a thread, that misbehaves on demand:
    /file/NAME        the bytes of files[NAME] with their Content-Length
    /negative/NAME    the same bytes, announced as Content-Length: -1
    /huge             Content-Length 10**15 and a few bytes
    /endless          random bytes without a Content-Length, until the client goes
    /drip             one byte every 50 ms, until the client goes
    /redirect?to=URL  302 to URL"""

    def __init__(self):
        self.files = {}
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

    def url(self, path):
        return 'http://127.0.0.1:%d%s' % (self.server.server_address[1], path)

    def answer(self, request):
        route, _sep, rest = request.path.lstrip('/').partition('/')
        if route in ('file', 'negative'):
            body = self.files[rest]
            request.send_response(200)
            request.send_header('Content-Length', str(len(body)) if route == 'file' else '-1')
            request.end_headers()
            request.wfile.write(body)
        elif route == 'huge':
            request.send_response(200)
            request.send_header('Content-Length', str(10 ** 15))
            request.end_headers()
            request.wfile.write(b'x' * 4096)
        elif route in ('endless', 'drip'):
            request.send_response(200)
            request.end_headers()
            block = os.urandom(256 * 1024) if route == 'endless' else b'x'
            while not self.stop.is_set():
                request.wfile.write(block)
                request.wfile.flush()
                if route == 'drip':
                    self.stop.wait(0.05)  # the server's pace, not synchronisation
        elif route.startswith('redirect?to='):
            request.send_response(302)
            request.send_header('Location', urllib.parse.unquote(route[len('redirect?to='):]))
            request.send_header('Content-Length', '0')
            request.end_headers()
        else:
            request.send_error(404)

    def redirect(self, to):
        return self.url('/redirect?to=' + urllib.parse.quote(to, safe=''))

    def close(self):
        self.stop.set()
        self.server.shutdown()
        self.server.server_close()
