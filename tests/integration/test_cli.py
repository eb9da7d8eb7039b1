# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The `maglica` command (python3 -m maglica.controller.cli) against the testbed: its words, tables, --json and exit codes."""

from __future__ import annotations

import json
import os
import re
import subprocess

import pytest

from maglica_testbed import MODULE_UTILS, PYTHON

OK, FAILED, USAGE, NOT_FOUND, CONFLICT = 0, 1, 2, 3, 4
ISO = '/var/lib/libvirt/images/cli.iso'


def maglica(cloud, *args, config=True):
    env = dict(cloud.env, PYTHONPATH=MODULE_UTILS)
    command = [PYTHON, '-m', 'maglica.controller.cli'] + (['--config', cloud.path] if config else []) + list(args)
    return subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, env=env,
                          stdin=subprocess.DEVNULL, timeout=600, check=False)


def data(proc):
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def columns(table):
    """Split an aligned table into dicts, cutting each line at the header's column starts."""
    lines = table.rstrip('\n').split('\n')
    starts = [m.start() for m in re.finditer(r'\S+', lines[0])]
    names = lines[0].split()
    rows = []
    for line in lines[1:]:
        cells = [line[a:b].strip() for a, b in zip(starts, starts[1:] + [None])]
        for start in starts[1:]:
            assert start >= len(line) or line[start - 1] == ' ', 'column not aligned in %r' % line
        rows.append(dict(zip(names, cells)))
    return rows


@pytest.mark.parametrize('words', [
    [], ['image'], ['vm'], ['log'], ['host'], ['image', 'list'], ['image', 'copy'], ['vm', 'list'], ['vm', 'clone'],
    ['vm', 'start'], ['vm', 'stop'], ['vm', 'destroy'], ['vm', 'remove'], ['vm', 'attach-iso'], ['vm', 'set-boot-device'],
    ['vm', 'attach-disk'], ['vm', 'set-vcpus'], ['vm', 'set-memory'], ['vm', 'info'], ['vm', 'console'],
    ['log', 'status'], ['log', 'tail'], ['host', 'list'], ['host', 'drain'], ['host', 'activate'],
])
def test_help_at_every_level(cloud, words):
    proc = maglica(cloud, *(words + ['--help']), config=False)
    assert proc.returncode == OK, proc.stderr
    assert proc.stdout.startswith('usage: maglica %s' % ' '.join(words)) if words else proc.stdout.startswith('usage: maglica ')


@pytest.mark.parametrize('args, message', [
    ([], 'the following arguments are required'),
    (['vm'], 'the following arguments are required: COMMAND'),
    (['vm', 'frobnicate'], "invalid choice: 'frobnicate'"),
    (['vm', 'start'], 'the following arguments are required: --name'),
    (['vm', 'set-memory', '--name=x', '--size=2X'], "bad size '2X'"),
    (['vm', 'attach-disk', '--name=x', '--size=ten'], "bad size 'ten'"),
    (['vm', 'clone', '--image=a', '--hostname=b', '--start=maybe'], "expected true or false, got 'maybe'"),
    (['log', 'status', '--id=42'], "'42' is not a job id"),
])
def test_usage_errors_exit_2(cloud, args, message):
    proc = maglica(cloud, *args)
    assert proc.returncode == USAGE and message in proc.stderr, proc.stderr


def test_lists_are_aligned_tables_and_json(cloud, testbed):
    images = maglica(cloud, 'image', 'list')
    assert images.returncode == OK, images.stderr
    rows = columns(images.stdout)
    expected = {('debian.original', 'host0'), ('debian.original', 'host1'), ('rhel.original', 'host2')}
    assert {(r['NAME'], r['HOST']) for r in rows} >= expected
    assert [r for r in rows if r['HOST'] == 'host0' and r['NAME'] == 'debian.original'][0]['MEMORY'] == '256M'
    listed = data(maglica(cloud, '--json', 'image', 'list', '--host', 'host2'))
    assert {i['host'] for i in listed['images']} == {'host2'}

    hosts = columns(maglica(cloud, 'host', 'list').stdout)
    assert [(h['NAME'], h['LIBVIRT'], h['WORKER']) for h in hosts] == [(h, 'up', 'alive') for h in testbed.hosts]
    assert data(maglica(cloud, 'host', 'list', '--json'))['hosts'][0]['worker_pid'] == cloud.host_workers['host0'].pid

    vms = columns(maglica(cloud, 'vm', 'list', '--name', '*.original').stdout)
    assert sorted((v['NAME'], v['HOST'], v['IMAGE']) for v in vms if v['NAME'] == 'rhel.original') == [('rhel.original', 'host2', 'yes')]


def test_clone_and_every_vm_command(cloud, testbed):
    name = 'cli1.test'
    try:
        proc = maglica(cloud, '--json', 'vm', 'clone', '--image=debian.original', '--hostname=%s' % name, '--on=host1',
                       '--mode=linked', '--start=false')
        result = data(proc)
        assert result['host'] == 'host1' and result['job']['state'] == 'succeeded'
        progress = re.findall(r'job %s \(vm.clone on host1\): (\w+)' % result['job_id'], proc.stderr)
        assert progress[-1] == 'succeeded' and 'running' in progress and len(progress) == len(set(progress)), proc.stderr
        assert testbed.virsh('host1', 'domstate', name).strip() == 'shut off'

        again = maglica(cloud, 'vm', 'clone', '--image=debian.original', '--hostname=%s' % name)
        assert again.returncode == CONFLICT and '%s already exists on host1' % name in again.stderr

        start = maglica(cloud, 'vm', 'start', '--name=%s' % name)
        assert start.returncode == OK and 'state stopped -> running' in start.stdout, start.stderr
        assert maglica(cloud, 'vm', 'start', '--name=%s' % name).stdout.strip() == '%s on host1: already running' % name
        info = maglica(cloud, 'vm', 'info', '--name=%s' % name)
        fields = dict(re.split(r':\s+', line, maxsplit=1) for line in info.stdout.splitlines())
        display = testbed.virsh('host1', 'vncdisplay', name).strip()
        assert fields['host'] == 'host1' and fields['state'] == 'running'
        assert int(fields['vnc port']) == 5900 + int(display.rsplit(':', 1)[1])
        assert data(maglica(cloud, 'vm', 'info', '--name=%s' % name, '--json'))['vnc_port'] == int(fields['vnc port'])

        vcpus = maglica(cloud, 'vm', 'set-vcpus', '--name=%s' % name, '--vcpus=2')
        assert vcpus.returncode == OK and 'vcpus 1 -> 2' in vcpus.stdout and 'take effect at its next start' in vcpus.stdout
        memory = maglica(cloud, 'vm', 'set-memory', '--name=%s' % name, '--size=300M')
        assert memory.returncode == OK and 'memory 256 MiB -> 300 MiB' in memory.stdout
        missing_iso = maglica(cloud, 'vm', 'attach-iso', '--name=%s' % name, '--iso=%s' % ISO)
        assert missing_iso.returncode == NOT_FOUND and 'the ISO %s does not exist on host1' % ISO in missing_iso.stderr
        with open(testbed.outside_path('host1', ISO), 'wb') as handle:
            handle.truncate(1 << 20)
        assert maglica(cloud, 'vm', 'attach-iso', '--name=%s' % name, '--iso=%s' % ISO).returncode == OK
        assert maglica(cloud, 'vm', 'set-boot-device', '--name=%s' % name, '--device=cdrom,hd').returncode == OK
        for size in ('1G', '512M'):
            assert maglica(cloud, 'vm', 'attach-disk', '--name=%s' % name, '--size=%s' % size).returncode == OK
        xml = testbed.virsh('host1', 'dumpxml', '--inactive', name)
        assert re.search(r'<vcpu[^>]*>2</vcpu>', xml) and "<memory unit='KiB'>307200</memory>" in xml
        assert "<source file='%s'/>" % ISO in xml and re.search(r"<boot dev='cdrom'/>\s*<boot dev='hd'/>", xml)
        assert '%s@data1.qcow2' % name in xml and '%s@data2.qcow2' % name in xml

        stop = maglica(cloud, 'vm', 'stop', '--name=%s' % name, '--timeout=1')
        assert stop.returncode == FAILED and 'did not shut down within 1s' in stop.stderr
        assert maglica(cloud, 'vm', 'stop', '--name=%s' % name, '--timeout=1', '--force').returncode == OK
        assert testbed.virsh('host1', 'domstate', name).strip() == 'shut off'
        assert maglica(cloud, 'vm', 'start', '--name=%s' % name).returncode == OK
        assert maglica(cloud, 'vm', 'destroy', '--name=%s' % name).returncode == OK
        assert testbed.virsh('host1', 'domstate', name).strip() == 'shut off'

        assert maglica(cloud, 'vm', 'start', '--name=%s' % name).returncode == OK
        refused = maglica(cloud, 'vm', 'remove', '--name=%s' % name)
        assert refused.returncode == CONFLICT and 'is running on host1' in refused.stderr
        removed = maglica(cloud, '--json', 'vm', 'remove', '--name=%s' % name, '--force')
        removal = data(removed)
        assert removal['jobs'][0]['action'] == 'vm.remove' and len(removal['deleted_disks']) == 3
        assert name not in testbed.domains('host1')
        assert maglica(cloud, 'vm', 'remove', '--name=%s' % name).returncode == NOT_FOUND

        tail = columns(maglica(cloud, 'log', 'tail', '--limit=3').stdout)
        assert tail[-1]['ID'] == removal['jobs'][0]['id'] and tail[-1]['ACTION'] == 'vm.remove' and tail[-1]['STATE'] == 'succeeded'
        status = maglica(cloud, 'log', 'status', '--id=%s' % result['job_id'])
        assert status.returncode == OK and re.search(r'^state:\s+succeeded$', status.stdout, re.M), status.stdout
        assert data(maglica(cloud, 'log', 'status', '--id=%s' % result['job_id'], '--json'))['action'] == 'vm.clone'
    finally:
        testbed.virsh('host1', 'destroy', name, check=False)
        testbed.virsh('host1', 'undefine', name, '--remove-all-storage', check=False)
        if os.path.exists(testbed.outside_path('host1', ISO)):
            os.unlink(testbed.outside_path('host1', ISO))


def test_console_execs_virsh_console(cloud, testbed):
    testbed.define_image('host2', 'cli-console.test', testbed.image('debian'), 128)
    try:
        planned = data(maglica(cloud, '--json', 'vm', 'console', '--name=cli-console.test'))
        assert planned == {'host': 'host2', 'command': ['virsh', '-c', testbed.uri('host2'), 'console', 'cli-console.test']}
        # No terminal here: virsh itself, now in our place, says so.
        testbed.virsh('host2', 'start', 'cli-console.test')
        proc = maglica(cloud, 'vm', 'console', '--name=cli-console.test')
        assert proc.returncode != OK and 'maglica:' not in proc.stderr and 'TTY' in proc.stderr.upper(), proc.stderr
    finally:
        testbed.virsh('host2', 'destroy', 'cli-console.test', check=False)
        testbed.virsh('host2', 'undefine', 'cli-console.test', '--remove-all-storage', check=False)


@pytest.mark.parametrize('args, code, message', [
    (['vm', 'info', '--name=nosuch.test'], NOT_FOUND, 'no VM named nosuch.test on any reachable host'),
    (['vm', 'console', '--name=nosuch.test'], NOT_FOUND, 'no VM named nosuch.test'),
    (['vm', 'start', '--name=nosuch.test'], NOT_FOUND, 'no VM named nosuch.test'),
    (['image', 'copy', '--name=nosuch.original', '--dest=host2'], NOT_FOUND, 'image nosuch.original is not on any host'),
    (['vm', 'clone', '--image=nosuch.original', '--hostname=x.test'], NOT_FOUND, 'image nosuch.original is not on any host'),
    (['vm', 'info', '--name=debian.original'], CONFLICT, 'debian.original is defined on several hosts: host0, host1'),
    (['vm', 'clone', '--image=debian.original', '--hostname=y.test', '--on=host2'], CONFLICT, 'host host2 does not hold image'),
    (['log', 'status', '--id=%s' % ('0' * 32)], NOT_FOUND, 'no job with id'),
    (['--config=/nonexistent/maglica.conf', 'vm', 'list'], FAILED, 'cannot read the configuration /nonexistent/maglica.conf'),
])
def test_exit_codes_scripts_can_trust(cloud, testbed, args, code, message):
    before = {h: testbed.domains(h) for h in testbed.hosts}
    proc = maglica(cloud, *args, config=not any(a.startswith('--config') for a in args))
    assert proc.returncode == code and message in proc.stderr, (proc.returncode, proc.stderr)
    assert proc.stdout == ''
    assert {h: testbed.domains(h) for h in testbed.hosts} == before
