# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Liveness with real results: a clone whose customisation result is bigger than a frame."""

from __future__ import annotations

import os
import subprocess

from maglica_testbed import wait_until
from maglica.protocol import messages
from maglica.controller.client import Client

HOST = 'host1'


def image_with_big_hosts_file(testbed, tmp_path, size):
    """A copy of the Debian test image whose /etc/hosts is `size` bytes: every clone's diff of it is twice that."""
    image = str(tmp_path / 'bighosts.qcow2')
    subprocess.run(['cp', '--sparse=always', testbed.image('debian'), image], check=True)
    hosts = tmp_path / 'hosts'
    lines = ['127.0.0.1\tlocalhost', '127.0.1.1\tdebian']
    n = 0
    while sum(len(line) + 1 for line in lines) < size:
        lines.append('10.%d.%d.%d\tservice%d.internal.example.com' % (n >> 16 & 255, n >> 8 & 255, n & 255, n))
        n += 1
    hosts.write_text('\n'.join(lines) + '\n')
    subprocess.run(['guestfish', '--rw', '-a', image, '-i', 'upload', str(hosts), '/etc/hosts'],
                   env=testbed.env, check=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    return image


def test_oversized_clone_result_does_not_crash_loop_the_host_worker(cloud, testbed, tmp_path):
    """A clone of an image with a 160 KiB /etc/hosts: its result (the file's diff, before and after) is over a
    frame. The host worker used to exit on it at every start (MessageError in report). Now the job succeeds
    with the diff trimmed and a note, the worker stays up, and the job shows in a listing."""
    testbed.define_image(HOST, 'bighosts.original', image_with_big_hosts_file(testbed, tmp_path, 160 * 1024))
    worker = cloud.host_workers[HOST]
    job = messages.new_job(HOST, 'vm.clone', {'image': 'bighosts.original', 'hostname': 'bighosts-clone',
                                              'clone_mode': 'linked', 'start': False})
    with Client(cloud.config) as client:
        client.submit(job)
        wait_until(lambda: worker.poll() is not None or client.status(job['id'])['state'] in messages.FINAL_STATES, 300,
                   'the clone job to end')
        assert worker.poll() is None, 'the host worker exited'
        done = client.wait(job['id'], 5)
        cloud.wait_alive(HOST)
        customization = done['data']['customization']
        hosts_diff = [d for d in customization['diff'] if d['before_header'] == '/etc/hosts'][0]
        assert 'trimmed by maglica' in hosts_diff['before'] and 'trimmed by maglica' in hosts_diff['after']
        assert hosts_diff['after'].startswith('127.0.0.1\tlocalhost\n')
        assert any(note.startswith('customization.diff[') for note in done['data']['trimmed'])
        assert '/etc/hosts' in customization['changed_files'], 'what changed is reported whole'
        listed = [j for j in client.recent(50, host=HOST) if j['id'] == job['id']]
        assert listed and listed[0]['state'] == 'succeeded' and 'diff' not in listed[0]['data']['customization']
    assert 'bighosts-clone' in testbed.domains(HOST)
    with open(os.path.join(cloud.workdir, 'host_worker-%s.log' % HOST)) as handle:
        assert 'Traceback' not in handle.read()
    # Leave host1 as the session's other tests expect it: the clone first, then the image it is linked to.
    for name in ('bighosts-clone', 'bighosts.original'):
        testbed.virsh(HOST, 'undefine', name, '--remove-all-storage')
    assert not {'bighosts-clone', 'bighosts.original'} & testbed.domains(HOST)
