# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The integration testbed in Python: simulated hypervisors (tests/testbed/testbed.sh),
a Maglica configuration with CURVE keys, the workers, and ansible-playbook runs.

Several testbeds can run at once on one machine: each takes its loopback
addresses from MAGLICA_TEST_ADDRESS_BASE, its ports from MAGLICA_TEST_PORT_BASE
and its state from MAGLICA_TESTBED_DIR.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TESTBED = os.path.join(ROOT, 'tests', 'testbed')
MODULE_UTILS = os.path.join(ROOT, 'plugins', 'module_utils')
PYTHON = sys.executable
sys.path.insert(0, MODULE_UTILS)
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from maglica.controller import client  # noqa: E402  pylint: disable=wrong-import-position
from maglica.cluster import config as maglica_config  # noqa: E402  pylint: disable=wrong-import-position
from maglica.protocol import messages  # noqa: E402  pylint: disable=wrong-import-position
from maglica.protocol import curve as curve_keys  # noqa: E402  pylint: disable=wrong-import-position
from maglica.cluster import virt  # noqa: E402  pylint: disable=wrong-import-position
from polling import wait_until  # noqa: E402  pylint: disable=wrong-import-position
import noop_action  # noqa: E402  pylint: disable=wrong-import-position

# The test suite's workers know the test action `noop`; the production entry points (python -m maglica.X) do not.
noop_action.register()
NOOP_WORKER = os.path.join(ROOT, 'tests', 'noop_action.py')


def exit_on_sigterm():
    """A SIGTERM (timeout, CI cancel) becomes SystemExit, so that teardown stops every worker and libvirtd it started."""
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


def testbed_env():
    env = dict(os.environ)
    out = subprocess.run(['bash', '-c', '. %s/env.sh && env -0' % TESTBED], stdout=subprocess.PIPE, check=True, env=env).stdout
    for item in out.split(b'\0'):
        if b'=' in item:
            key, value = item.decode().split('=', 1)
            env[key] = value
    env['PYTHONPATH'] = MODULE_UTILS
    # testbed.sh makes the certificates with the roles' code, through this interpreter's ansible-playbook.
    env.setdefault('MAGLICA_ANSIBLE_PLAYBOOK', os.path.join(os.path.dirname(PYTHON), 'ansible-playbook'))
    return env


# virsh subcommands that change a host's domains. The clouds running on the testbed are told (Cloud.state_changed),
# as an operator who changes a host by hand tells Maglica (`maglica host refresh`): their listings and placement do
# not read the host's pushed state from before the change.
DOMAIN_CHANGING = frozenset(('define', 'undefine', 'create', 'destroy', 'start', 'shutdown', 'reboot', 'reset',
                             'domrename', 'setmem', 'setvcpus', 'managedsave', 'restore', 'suspend', 'resume'))


class Testbed(object):
    """Hypervisors host0..hostN-1, each a libvirtd in its own namespace at its own loopback address, reached over TLS.

    The PKI (made by roles/maglica_pki): the library's client certificate in DIR/pki/library, each host's
    server certificate in DIR/hosts/NAME/pki/server and its host worker's client certificate in .../pki/client.
    """

    def __init__(self, count=3):
        self.env = testbed_env()
        self.dir = self.env['MAGLICA_TESTBED_DIR']
        base = int(os.environ.get('MAGLICA_TEST_ADDRESS_BASE', '11'))
        self.hosts = {'host%d' % i: '127.0.0.%d' % (base + i) for i in range(count)}
        self.clouds = []  # the Clouds started on it (told of hand-made changes)

    def script(self, name, *args, **kwargs):
        return subprocess.run(['bash', os.path.join(TESTBED, name)] + list(args), env=self.env, check=True,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True, **kwargs).stdout

    def start(self):
        """Start every host from scratch: no domain or disk of an earlier session is left."""
        self.script('testbed.sh', 'clean')
        self.script('testbed.sh', 'certificates', *[item for pair in self.hosts.items() for item in pair])
        for name, address in self.hosts.items():
            self.script('testbed.sh', 'start-one', name, address)

    def stop(self):
        self.script('testbed.sh', 'stop')

    @property
    def pki_path(self):
        """The library's client certificate, key and CA certificate (the pkipath of every URI)."""
        return os.path.join(self.dir, 'pki', 'library')

    def host_pki_path(self, host, kind='client'):
        """A host's server certificate (`server`), or its host worker's client certificate (`client`)."""
        return os.path.join(self.dir, 'hosts', host, 'pki', kind)

    @property
    def ca_dir(self):
        return os.path.join(self.dir, 'pki', 'ca')

    def uri(self, host):
        return 'qemu+tls://%s/system?pkipath=%s' % (self.hosts[host], self.pki_path)

    def virsh(self, host, *args, check=True):
        try:
            return subprocess.run(['virsh', '-q', '-c', self.uri(host)] + list(args), stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, universal_newlines=True, check=check).stdout
        finally:
            if args and args[0] in DOMAIN_CHANGING:
                self.changed(host)

    def changed(self, host):
        """Tell every cloud running on the testbed that `host`'s domains were changed by hand."""
        for cloud in list(self.clouds):
            cloud.state_changed(host)

    def image(self, family):
        """Path of a built (cached) guest disk of `family`: debian, debian-nm, debian-cloudinit or rhel."""
        # In this testbed's own directory: testbeds running at once may build other versions of the image.
        out = os.path.join(self.dir, 'build-%s.qcow2' % family)
        self.script('build_image.sh', family, out)
        return out

    def bootable_image(self, variant):
        """Path of a built (cached) Debian 12 disk that boots: variant ifupdown, nm or cloudinit."""
        # A copy in this testbed's own directory: two testbeds copying into one shared file at once hand a test
        # a file still being written (a checksum of an empty file was seen).
        out = os.path.join(self.dir, 'build-bootable-%s.qcow2' % variant)
        self.script('build_bootable.sh', variant, out)
        return out

    def define_image(self, host, name, image, memory=256):
        try:
            self.script('define_image.sh', host, name, image, str(memory))
        finally:
            self.changed(host)

    def domains(self, host):
        return set(self.virsh(host, 'list', '--all', '--name').split())

    def leases(self):
        """The DHCP leases of the testbed's guest segment (testbed.sh: one dnsmasq for every host's guests):
        {ip: {ipaddr, mac, hostname}}, from the lease file of that dnsmasq."""
        found = {}
        try:
            with open(os.path.join(self.dir, 'segment', 'leases')) as handle:
                for line in handle:
                    fields = line.split()
                    if len(fields) >= 4:
                        found[fields[2]] = {'ipaddr': fields[2], 'mac': fields[1], 'hostname': None if fields[3] == '*' else fields[3]}
        except FileNotFoundError:
            pass
        return found

    def outside_path(self, host, path):
        """A host's disk path, as seen from outside its namespace."""
        prefix = '/var/lib/libvirt/'
        assert path.startswith(prefix), path
        return os.path.join(self.dir, 'hosts', host, 'lib', path[len(prefix):])

    def host_files(self, host):
        return set(os.listdir(os.path.join(self.dir, 'hosts', host, 'lib', 'images')))

    def popen_in(self, host, command, log):
        """Start a process inside a host's namespace (nsenter execs it: the pid is the process's)."""
        return subprocess.Popen(['bash', os.path.join(TESTBED, 'testbed.sh'), 'exec', host] + command, env=self.env,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


class Cloud(object):
    """A Maglica configuration, its keys, and its workers: for a testbed's hosts, or for `hosts`
    {name: address} without libvirt (enough for noop jobs), whose host workers run outside any namespace."""

    def __init__(self, testbed, workdir, curve=True, hosts=None, port=None):
        self.testbed = testbed
        self.hosts = hosts or testbed.hosts
        self.env = testbed.env if testbed else testbed_env()
        self.workdir = workdir
        port = port or int(os.environ.get('MAGLICA_TEST_PORT_BASE', '15555'))
        self.key_dir = os.path.join(workdir, 'keys')
        self.data = {
            'hosts': [{'name': name, 'address': address, 'weight': 10} for name, address in self.hosts.items()],
            'libvirt': {'transport': 'tls', 'pki_path': testbed.pki_path if testbed else os.path.join(workdir, 'pki')},
            'client': {'host': '127.0.0.1', 'pub_port': port, 'rep_port': port + 1, 'bind': '127.0.0.1'},
            'security': {'curve': curve, 'key_dir': self.key_dir},
            'jobs': {'database': os.path.join(workdir, 'jobs.sqlite'), 'republish_interval': 0.5, 'request_timeout': 5},
            # No spare clones (host/spares.py) unless a test asks: each would launch an appliance beside the tests.
            'host_worker': {'state_dir': os.path.join(workdir, 'state'), 'heartbeat_interval': 1, 'spare_images': 0},
        }
        self.path = self.write_config('maglica.conf', self.data)
        self.config = maglica_config.load(self.path)
        self.client_worker = None
        self.host_workers = {}
        if curve:
            for name in [curve_keys.SERVER, curve_keys.LIBRARY] + list(self.hosts):
                curve_keys.create(self.key_dir, name)
                if name != curve_keys.SERVER:
                    curve_keys.allow(self.key_dir, name, curve_keys.public_path(self.key_dir, name))

    def reconfigure(self, **sections):
        """Change configuration sections (merged key by key); workers started afterwards use them."""
        for section, values in sections.items():
            self.data[section] = dict(self.data.get(section) or {}, **values)
        self.path = self.write_config('maglica.conf', self.data)
        self.config = maglica_config.load(self.path)

    def write_config(self, name, data):
        path = os.path.join(self.workdir, name)
        with open(path, 'w') as handle:
            yaml.safe_dump(data, handle)
        return path

    def log(self, name):
        return open(os.path.join(self.workdir, '%s.log' % name), 'ab')

    def start_client_worker(self):
        self.client_worker = subprocess.Popen([PYTHON, NOOP_WORKER, 'maglica.client_worker.worker', '--config', self.path],
                                              env=self.env, stdout=self.log('client_worker'), stderr=subprocess.STDOUT)
        wait_until(self._answers, 20, 'the client worker to answer')

    def _answers(self):
        try:
            with client.Client(self.config, timeout=1) as c:
                return c.hosts() is not None
        except Exception:
            return self.client_worker.poll() is not None and self._dead('client_worker')

    def _dead(self, name):
        with open(os.path.join(self.workdir, '%s.log' % name)) as handle:
            raise AssertionError('%s exited:\n%s' % (name, handle.read()[-3000:]))

    def start_host_worker(self, host, wait=True, settings=None):
        """Start `host`'s worker; `settings` are its own host_worker settings over the cloud's (spare_images...)."""
        command = [PYTHON, NOOP_WORKER, 'maglica.host.worker', '--config', self.path, '--name', host]
        data = dict(self.data, host_worker=dict(self.data['host_worker'], **(settings or {})))
        if self.testbed:
            # Its own client certificate, for the libvirtd of the hosts it copies images from (an image copy's source).
            data['libvirt'] = dict(self.data['libvirt'], pki_path=self.testbed.host_pki_path(host))
        if self.testbed or settings:
            command[4] = self.write_config('host_worker-%s.conf' % host, data)
        if self.testbed:
            self.host_workers[host] = self.testbed.popen_in(host, ['env', 'PYTHONPATH=%s' % MODULE_UTILS] + command,
                                                            self.log('host_worker-%s' % host))
        else:
            self.host_workers[host] = subprocess.Popen(command, env=self.env, stdout=self.log('host_worker-%s' % host),
                                                       stderr=subprocess.STDOUT, start_new_session=True)
        if wait:
            self.wait_alive(host)
        return self.host_workers[host]

    def wait_alive(self, host, timeout=30):
        pid = self.host_workers[host].pid

        def alive():
            if self.host_workers[host].poll() is not None:
                self._dead('host_worker-%s' % host)
            return any(h['host'] == host and h['alive'] and h['pid'] == pid for h in self.hosts_status())
        wait_until(alive, timeout, 'host worker %s to send a heartbeat' % host)

    def hosts_status(self):
        with client.Client(self.config, timeout=2) as c:
            return c.hosts()

    def stop_host_worker(self, host, sig=signal.SIGTERM):
        proc = self.host_workers.pop(host, None)
        if proc is not None and proc.poll() is None:
            proc.send_signal(sig)
            proc.wait(timeout=60)

    def kill_client_worker(self):
        self.client_worker.kill()
        self.client_worker.wait(timeout=30)

    def submit(self, host, action, args, ttl=None):
        with client.Client(self.config) as c:
            return c.submit(messages.new_job(host, action, args, ttl=ttl))

    def wait_job(self, job_id, state, timeout=60):
        return wait_until(lambda: self._job_in(job_id, state), timeout, 'job %s to be %s' % (job_id, state))

    def _job_in(self, job_id, state):
        job = self.job(job_id)
        if job['state'] != state and job['state'] in messages.FINAL_STATES:
            raise AssertionError('job %s ended %s, not %s: %s' % (job_id, job['state'], state, job['message']))
        return job if job['state'] == state else None

    def effects(self, host):
        """Lines `JOB_ID MARKER` that noop jobs left on `host`."""
        path = os.path.join(self.data['host_worker']['state_dir'], '%s.effects' % host)
        if not os.path.exists(path):
            return []
        with open(path) as handle:
            return handle.read().splitlines()

    def state_file(self, host, suffix):
        """A host worker's JSON state file (STATE_DIR/HOST.SUFFIX: spares.json, layouts.json), read."""
        with open(os.path.join(self.data['host_worker']['state_dir'], '%s.%s' % (host, suffix))) as handle:
            return json.load(handle)

    def state_changed(self, host):
        """Client.state_changed, when this cloud's client worker runs and knows `host`."""
        if host not in self.hosts or self.client_worker is None or self.client_worker.poll() is not None:
            return
        with client.Client(self.config, timeout=5) as c:
            c.state_changed(host)

    def start(self, host_workers=True):
        if self.testbed is not None and self not in self.testbed.clouds:
            self.testbed.clouds.append(self)
        self.start_client_worker()
        if host_workers:
            for host in self.hosts:
                self.start_host_worker(host, wait=False)
            for host in self.hosts:
                self.wait_alive(host)

    def stop(self):
        if self.testbed is not None and self in self.testbed.clouds:
            self.testbed.clouds.remove(self)
        for host in list(self.host_workers):
            self.stop_host_worker(host)
        if self.client_worker is not None and self.client_worker.poll() is None:
            self.client_worker.terminate()
            self.client_worker.wait(timeout=30)

    def job(self, job_id):
        with client.Client(self.config) as c:
            return c.status(job_id)

    def jobs(self, limit=1000):
        with client.Client(self.config) as c:
            return c.recent(limit)


class PlaybookRun(object):
    """An ansible-playbook run with the minimal callback: every task result parsed from its JSON."""

    RESULT_RE = re.compile(r'^(\S+) \| (SUCCESS|CHANGED|FAILED!|UNREACHABLE!|SKIPPED)[^\n]*=> \{', re.M)

    def __init__(self, proc):
        self.rc = proc.returncode
        self.output = proc.stdout
        self.results = []
        decoder = json.JSONDecoder()
        for match in self.RESULT_RE.finditer(self.output):
            data, _end = decoder.raw_decode(self.output, match.end() - 1)
            data['_status'] = match.group(2).rstrip('!').lower()
            data['_host'] = match.group(1)
            self.results.append(data)

    @property
    def changed(self):
        return sum(1 for r in self.results if r.get('changed'))

    @property
    def failed(self):
        return [r for r in self.results if r['_status'] == 'failed']

    @property
    def last(self):
        return self.results[-1]

    def __repr__(self):
        return 'rc=%s\n%s' % (self.rc, self.output[-6000:])


def ansible_env(extra=None):
    env = testbed_env()
    collections = os.path.join(ROOT, 'build', 'collections')
    env.update({
        'ANSIBLE_COLLECTIONS_PATH': collections,
        'ANSIBLE_PYTHON_INTERPRETER': PYTHON,
        'ANSIBLE_LOCALHOST_WARNING': 'false',
        'ANSIBLE_INVENTORY_UNPARSED_WARNING': 'false',
        'ANSIBLE_NOCOLOR': '1',
        'ANSIBLE_FORCE_COLOR': '0',
        'ANSIBLE_RETRY_FILES_ENABLED': 'false',
        'ANSIBLE_STDOUT_CALLBACK': 'ansible.builtin.minimal',
        'PYTHONPATH': '',
    })
    env.update(extra or {})
    return env


def run_playbook(playbook, extra_vars=None, check=False, diff=False, inventory='localhost,', args=(), env=None):
    """Run ansible-playbook from the repository root; each task's result is parsed (see PlaybookRun)."""
    command = [os.path.join(os.path.dirname(PYTHON), 'ansible-playbook'), '-i', inventory, '-c', 'local', playbook]
    if extra_vars:
        command += ['-e', json.dumps(extra_vars)]
    if check:
        command.append('--check')
    if diff:
        command.append('--diff')
    command += list(args)
    proc = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True,
                          env=ansible_env(env), cwd=ROOT, check=False)
    return PlaybookRun(proc)


def read_guest_files(testbed, host, disk, paths):
    """Read files from a guest disk (a path inside `host`) with libguestfs, read-only: {path: content or None}.

    It runs inside the host's namespace: a linked clone's backing file exists only there.
    """
    script = r'''
import json, sys, guestfs
g = guestfs.GuestFS(python_return_dict=True)
g.add_drive_opts(sys.argv[1], readonly=True, format='qcow2' if sys.argv[1].endswith('.qcow2') else 'raw')
g.launch()
root = g.inspect_os()[0]
mps = g.inspect_get_mountpoints(root)
for mp in sorted(mps, key=len):
    g.mount_ro(mps[mp], mp)
out = {}
for p in sys.argv[2:]:
    out[p] = g.read_file(p).decode() if g.is_file(p) else None
out['__ssh_host_keys__'] = g.glob_expand('/etc/ssh/ssh_host_*')
out['__hostname__'] = g.inspect_get_hostname(root)
g.close()
print(json.dumps(out))
'''
    out = subprocess.run(['bash', os.path.join(TESTBED, 'testbed.sh'), 'exec', host, '/usr/bin/python3', '-c', script, disk] + list(paths),
                         stdout=subprocess.PIPE, check=True, env=testbed.env, universal_newlines=True).stdout
    return json.loads(out)


__all__ = ['Testbed', 'Cloud', 'run_playbook', 'read_guest_files', 'wait_until', 'virt', 'client']


def file_sha256(path):
    """The sha256 of a file, in hex, read a MiB at a time (disk images are large)."""
    digest = hashlib.sha256()
    with open(path, 'rb') as handle:
        for block in iter(lambda: handle.read(1 << 20), b''):
            digest.update(block)
    return digest.hexdigest()
