# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""build_bootable.sh inside a network namespace while CI's image build still runs outside it (.ci/run starts the
integration tests before the images are done): it waits for the build to cache the image, and stops with the
"not built" message when the build ends without it. The builder here is a real process that writes the cache
entries (or not); the real build takes minutes and needs Debian's mirror."""

from __future__ import annotations

import hashlib
import os
import subprocess
import uuid

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..', '..'))
SCRIPT = os.path.join(ROOT, 'tests', 'testbed', 'build_bootable.sh')


@pytest.fixture
def netns():
    name = 'mg-unit-%s' % uuid.uuid4().hex[:8]
    subprocess.run(['ip', 'netns', 'add', name], check=True)
    try:
        yield name
    finally:
        subprocess.run(['ip', 'netns', 'del', name], check=False)


def cached_path(cache):
    with open(SCRIPT, 'rb') as handle:
        digest = hashlib.sha256(handle.read()).hexdigest()[:12]
    return os.path.join(cache, 'bootable-ifupdown-%s.qcow2' % digest)


def run_in(netns, cache, builder_pid, out):
    env = dict(os.environ, MAGLICA_IMAGE_CACHE=cache, MAGLICA_IMAGE_BUILDER_PID=str(builder_pid), MAGLICA_IMAGE_WAIT_S='60')
    return subprocess.run(['ip', 'netns', 'exec', netns, 'bash', SCRIPT, 'ifupdown', out], env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, universal_newlines=True, timeout=120, check=False)


def test_waits_for_the_running_build_to_cache_the_image(netns, tmp_path):
    cache = str(tmp_path / 'cache')
    os.makedirs(cache)
    cached = cached_path(cache)
    log = tmp_path / 'log'
    # The builder caches the image (written aside, then renamed, as the script does) only once the caller has said
    # it waits: the caller cannot have found the image at its start.
    builder = subprocess.Popen(['bash', '-c', 'until grep -qs "waiting for" "$0"; do sleep 0.05; done; '
                                'echo image >"$1.tmp" && mv "$1.tmp" "$1"', str(log), cached])
    try:
        env = dict(os.environ, MAGLICA_IMAGE_CACHE=cache, MAGLICA_IMAGE_BUILDER_PID=str(builder.pid), MAGLICA_IMAGE_WAIT_S='60')
        with open(log, 'w') as stderr:
            result = subprocess.run(['ip', 'netns', 'exec', netns, 'bash', SCRIPT, 'ifupdown', str(tmp_path / 'out.qcow2')],
                                    env=env, stderr=stderr, timeout=120, check=False)
    finally:
        builder.wait(timeout=60)
    assert result.returncode == 0, log.read_text()
    assert 'waiting for %s' % cached in log.read_text()
    assert (tmp_path / 'out.qcow2').read_text() == 'image\n'


def test_a_build_that_ends_without_the_image_is_reported(netns, tmp_path):
    cache = str(tmp_path / 'cache')
    os.makedirs(cache)
    builder = subprocess.Popen(['true'])
    builder.wait()
    # A pid that has ended: the script must not wait for it at all, and must say what is missing.
    result = run_in(netns, cache, builder.pid, str(tmp_path / 'out.qcow2'))
    assert result.returncode == 1
    assert 'is not built, and mmdebstrap cannot reach' in result.stderr
    assert not os.path.exists(tmp_path / 'out.qcow2')
