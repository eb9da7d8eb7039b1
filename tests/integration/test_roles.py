# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The roles deploy the workers: playbooks/site.yml on the testbed's three hosts and a client host, all on
this machine (connection local, one install prefix and supervisord per inventory host, each host worker
inside its host's namespace). Then a clone through the deployed workers, a second run that changes nothing,
a killed worker brought back by supervisord, a weight change that restarts the client worker only, and a
silent host worker named by the play.
"""

from __future__ import annotations

import copy
import os
import re
import shutil
import signal
import subprocess

import pytest
import yaml

from maglica_testbed import PYTHON, ROOT, TESTBED, client, run_playbook, wait_until
from maglica_testbed import maglica_config

ROLES = os.path.join(ROOT, 'roles')
SITE = os.path.join(ROOT, 'playbooks', 'site.yml')
CLONE = os.path.join(ROOT, 'playbooks', 'clone.yml')
HOST_WORKERS = os.path.join(ROOT, 'playbooks', 'host_workers.yml')
HOSTS = ('host0', 'host1', 'host2')
# Clear of the `cloud` fixture's ports, which may be bound in the same pytest session.
PORT = int(os.environ.get('MAGLICA_TEST_PORT_BASE', '15555')) + 10
RECAP_RE = re.compile(r'^(\S+)\s+: ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)', re.M)


def test_argument_specs_cover_every_default():
    """meta/argument_specs.yml documents exactly the variables of defaults/main.yml, with the same defaults."""
    checked = 0
    for role in sorted(os.listdir(ROLES)):
        defaults_path = os.path.join(ROLES, role, 'defaults', 'main.yml')
        with open(os.path.join(ROLES, role, 'meta', 'argument_specs.yml')) as handle:
            specs = yaml.safe_load(handle)['argument_specs']
        defaults = {}
        if os.path.exists(defaults_path):
            with open(defaults_path) as handle:
                defaults = yaml.safe_load(handle) or {}
        for entry_point in [e for e in ('main', 'prepare') if e in specs]:
            options = specs[entry_point]['options']
            assert sorted(options) == sorted(defaults), '%s %s: argument_specs and defaults differ: %s' % (
                role, entry_point, sorted(set(options) ^ set(defaults)))
            for name, value in defaults.items():
                assert options[name].get('default') == value, '%s: %s defaults to %r, argument_specs says %r' % (
                    role, name, value, options[name].get('default'))
                assert options[name].get('description'), '%s: %s has no description' % (role, name)
            checked += 1
        for entry_point, spec in specs.items():
            for name, option in spec['options'].items():
                assert name.startswith(role + '_'), '%s: %s lacks the role prefix' % (role, name)
                assert option.get('type'), '%s: %s has no type' % (role, name)
    assert checked == 5  # client_worker and host_worker, main and prepare each; maglica_pki, main


class Deployment(object):
    """A scratch inventory of the testbed's hosts and a client host, and what the roles put there."""

    def __init__(self, testbed, workdir, clients=('client',), port=PORT, client_vars=None, host_names=HOSTS):
        self.clients = tuple(clients)
        self.host_names = tuple(host_names)
        self.testbed = testbed
        self.dir = workdir
        self.inventory_path = os.path.join(workdir, 'inventory.yml')
        self.runs = 0
        hosts = {}
        for index, name in enumerate(self.host_names):
            prefix = os.path.join(workdir, name)
            hosts[name] = {
                'maglica_libvirt_address': testbed.hosts[name],
                'maglica_weight': 10,
                'host_worker_prefix': prefix,
                'host_worker_config_path': os.path.join(prefix, 'etc', 'host_worker.conf'),
                'host_worker_key_dir': os.path.join(prefix, 'keys'),
                'host_worker_state_dir': os.path.join(prefix, 'state'),
                'host_worker_log_dir': os.path.join(prefix, 'log'),
                'host_worker_pki_path': os.path.join(prefix, 'pki'),
                # The worker runs in the host's namespace, where the host's disks are.
                'host_worker_command_prefix': ['bash', os.path.join(TESTBED, 'testbed.sh'), 'exec', name],
            }
        environment = {key: testbed.env[key] for key in ('MAGLICA_TESTBED_DIR', 'LIBGUESTFS_BACKEND',
                                                         'LIBGUESTFS_BACKEND_SETTINGS', 'LIBGUESTFS_CACHEDIR')}
        # A snapshot of the library: the roles deploy it, while the checkout's copy may be edited meanwhile.
        library = os.path.join(workdir, 'library')
        shutil.copytree(os.path.join(ROOT, 'plugins', 'module_utils', 'maglica'), library,
                        ignore=shutil.ignore_patterns('__pycache__'))
        client_hosts = {}
        for index, name in enumerate(self.clients):
            client_prefix = os.path.join(workdir, name)
            client_hosts[name] = dict({
                'client_worker_install_packages': False,
                'client_worker_python': PYTHON,
                'client_worker_prefix': client_prefix,
                'client_worker_config_path': os.path.join(client_prefix, 'etc', 'maglica.conf'),
                'client_worker_key_dir': os.path.join(client_prefix, 'keys'),
                'client_worker_jobs_database': os.path.join(client_prefix, 'state', 'jobs.sqlite'),
                'client_worker_jobs_republish_interval': 0.5,
                'client_worker_log_dir': os.path.join(client_prefix, 'log'),
                'client_worker_libvirt_pki_path': os.path.join(client_prefix, 'pki'),
                'client_worker_host': '127.0.0.1',
                'client_worker_bind': '127.0.0.1',
                'client_worker_pub_port': port + 2 * index,
                'client_worker_rep_port': port + 2 * index + 1,
                'client_worker_verify_timeout': 60,
            }, **(client_vars or {}))
        self.client_conf = client_hosts[self.clients[0]]['client_worker_config_path']
        self.inventory = {'all': {
            'vars': {
                'ansible_connection': 'local',
                'ansible_python_interpreter': PYTHON,
                'client_worker_heartbeat_interval': 1,
                # The testbed's CA: its libvirtds trust it. They are the testbed's own (testbed.sh writes their
                # libvirtd.conf), so the roles leave libvirtd alone.
                'maglica_pki_ca_dir': testbed.ca_dir,
                'host_worker_libvirtd_tls': False,
                'client_worker_library_source': library,
                'host_worker_library_source': library,
            },
            'children': {
                'host_workers': {
                    'hosts': hosts,
                    'vars': {'host_worker_install_packages': False, 'host_worker_python': PYTHON,
                             'host_worker_environment': environment},
                },
                'client_workers': {'hosts': client_hosts},
            },
        }}
        self.write_inventory()

    def write_inventory(self, inventory=None):
        with open(self.inventory_path, 'w') as handle:
            yaml.safe_dump(inventory or self.inventory, handle)

    def host_vars(self, host):
        if host in self.clients:
            return self.inventory['all']['children']['client_workers']['hosts'][host]
        return self.inventory['all']['children']['host_workers']['hosts'][host]

    def supervisord_conf(self, host):
        prefix = self.host_vars(host)['client_worker_prefix' if host in self.clients else 'host_worker_prefix']
        return os.path.join(prefix, 'supervisor', 'supervisord.conf')

    def program(self, host):
        return 'maglica-client-worker' if host in self.clients else 'maglica-host-worker'

    def supervisorctl(self, host, *args):
        return subprocess.run(['supervisorctl', '-c', self.supervisord_conf(host)] + list(args), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, universal_newlines=True, check=False)

    def pid(self, host):
        """The worker's pid as supervisord reports it; 0 when it is not running."""
        out = self.supervisorctl(host, 'pid', self.program(host)).stdout.strip()
        return int(out) if out.isdigit() else 0

    def pids(self):
        return {host: self.pid(host) for host in self.host_names + self.clients}

    def site(self, inventory=None, playbook=SITE, args=()):
        """Run playbook (site.yml) on the inventory; run.recap is the PLAY RECAP {host: {ok, changed, ...}}."""
        if inventory is not None:
            self.write_inventory(inventory)
        run = run_playbook(playbook, inventory=self.inventory_path, args=args,
                           env={'ANSIBLE_STDOUT_CALLBACK': 'ansible.builtin.default'})
        self.runs += 1
        with open(os.path.join(self.dir, 'site-%d.log' % self.runs), 'w') as handle:
            handle.write(run.output)
        run.recap = {m.group(1): {'ok': int(m.group(2)), 'changed': int(m.group(3)), 'unreachable': int(m.group(4)),
                                  'failed': int(m.group(5))} for m in RECAP_RE.finditer(run.output)}
        return run

    def hosts_status(self):
        with client.Client(maglica_config.load(self.client_conf), timeout=2) as c:
            return {h['host']: h for h in c.hosts()}

    def stop(self):
        """Shut every supervisord the roles started down, with its workers."""
        daemons = []
        for host in self.host_names + self.clients:
            pid_file = os.path.join(os.path.dirname(self.supervisord_conf(host)), 'supervisord.pid')
            if os.path.exists(pid_file):
                with open(pid_file) as handle:
                    daemons.append(int(handle.read().strip() or 0))
                self.supervisorctl(host, 'shutdown')
        wait_until(lambda: not any(alive(pid) for pid in daemons), 90, 'the supervisords to exit')


def alive(pid):
    if not pid:
        return False
    try:
        with open('/proc/%d/stat' % pid) as handle:
            return handle.read().split()[2] != 'Z'
    except (IOError, OSError):
        return False


def deployed(deployment):
    """For a fixture: run the site on `deployment` (its `first_run`) and yield it; then stop its supervisords, and
    check that none of its workers outlived them."""
    try:
        deployment.first_run = deployment.site()
        yield deployment
    finally:
        pids = [pid for pid in deployment.pids().values() if pid]
        deployment.stop()
        assert not [pid for pid in pids if alive(pid)], 'workers survived their supervisord'


@pytest.fixture(scope='module')
def deployment(testbed, tmp_path_factory):
    yield from deployed(Deployment(testbed, str(tmp_path_factory.mktemp('roles'))))


def test_site_deploys_the_cloud(deployment):
    run = deployment.first_run
    assert run.rc == 0, run
    assert set(run.recap) == set(HOSTS) | {'client'}, run
    assert all(r['failed'] == 0 and r['changed'] > 0 for r in run.recap.values()), run.recap
    assert 'host workers alive: host0, host1, host2' in run.output
    pids = deployment.pids()
    assert all(pids.values()), pids
    status = deployment.hosts_status()
    assert all(status[h]['alive'] and status[h]['pid'] == pids[h] for h in HOSTS), status
    # What the roles put in place.
    with open(deployment.client_conf) as handle:
        conf = yaml.safe_load(handle)
    assert conf['hosts'] == [{'name': h, 'weight': 10, 'address': deployment.testbed.hosts[h]} for h in HOSTS]
    assert conf['client']['rep_port'] == PORT + 1 and conf['security']['curve'] is True
    assert conf['jobs']['retention_days'] == 30.0
    # The job log and the host workers' state hold root password hashes for a while: owner only.
    database = deployment.host_vars('client')['client_worker_jobs_database']
    assert oct(os.stat(os.path.dirname(database)).st_mode & 0o777) == '0o700'
    assert oct(os.stat(database).st_mode & 0o777) == '0o600'
    for host in HOSTS:
        assert oct(os.stat(deployment.host_vars(host)['host_worker_state_dir']).st_mode & 0o777) == '0o700', host
    client_keys = deployment.host_vars('client')['client_worker_key_dir']
    assert sorted(os.listdir(os.path.join(client_keys, 'allowed'))) == ['host0.key', 'host1.key', 'host2.key', 'library.key']
    with open(os.path.join(client_keys, 'server.key')) as handle:
        server_key = handle.read()
    for host in HOSTS:
        host_vars = deployment.host_vars(host)
        with open(os.path.join(host_vars['host_worker_key_dir'], 'server.key')) as handle:
            assert handle.read() == server_key
        # A hypervisor carries what it runs: the host worker's packages, not the controller's (nor its command).
        library = os.path.join(host_vars['host_worker_prefix'], 'lib', 'maglica')
        assert os.path.exists(os.path.join(library, 'host', 'worker.py'))
        assert not os.path.exists(os.path.join(library, 'controller'))
        assert not os.path.exists(os.path.join(library, 'client_worker'))
        assert not os.path.exists(os.path.join(host_vars['host_worker_prefix'], 'bin', 'maglica'))
        assert 'subscribed' in open(os.path.join(host_vars['host_worker_log_dir'], 'maglica-host-worker.log')).read()
        # The worker lives in its host's mount namespace.
        holder = open(os.path.join(deployment.testbed.dir, 'hosts', host, 'ns.pid')).read().strip()
        assert os.readlink('/proc/%d/ns/mnt' % pids[host]) == os.readlink('/proc/%s/ns/mnt' % holder)


def test_clone_through_the_deployed_workers(deployment):
    assert 'roles-vm1.test' not in deployment.testbed.domains('host1')
    run = run_playbook(CLONE, inventory=deployment.inventory_path, extra_vars={'maglica_vms': [
        {'image': 'debian.original', 'hostname': 'roles-vm1.test', 'host': 'host1', 'clone_mode': 'linked', 'start': False}]})
    assert run.rc == 0, run
    clone = [r for r in run.results if 'results' in r][0]['results'][0]
    assert clone['changed'] is True and clone['host'] == 'host1' and clone['job']['state'] == 'succeeded', clone
    assert 'roles-vm1.test' in deployment.testbed.domains('host1')
    deployment.testbed.virsh('host1', 'undefine', 'roles-vm1.test', '--remove-all-storage')


def test_clone_playbook_refuses_a_declaration_without_hostname(deployment):
    run = run_playbook(CLONE, inventory=deployment.inventory_path, extra_vars={'maglica_vms': [{'image': 'debian.original'}]})
    assert run.rc != 0 and 'maglica_vms must be a list of {image, hostname, ...}' in run.output, run


def test_second_run_changes_nothing(deployment):
    before = deployment.pids()
    run = deployment.site()
    assert run.rc == 0, run
    assert {host: r['changed'] for host, r in run.recap.items()} == {host: 0 for host in HOSTS + ('client',)}, run
    assert deployment.pids() == before


def test_host_workers_playbook_upgrades_in_place_and_names_a_missing_client_key(deployment):
    before = deployment.pids()
    run = deployment.site(playbook=HOST_WORKERS, args=['--limit', 'host0'])
    assert run.rc == 0 and run.recap == {'host0': dict(run.recap['host0'], changed=0, failed=0)}, run
    inventory = copy.deepcopy(deployment.inventory)
    inventory['all']['children']['client_workers']['hosts']['client']['client_worker_key_dir'] = deployment.dir + '/nokeys'
    run = deployment.site(inventory, playbook=HOST_WORKERS, args=['--limit', 'host0'])
    deployment.write_inventory()
    assert run.rc != 0 and run.recap['host0']['failed'] == 1, run
    assert "cannot read the client worker's public key %s/nokeys/server.key on client" % deployment.dir in run.output, run
    assert deployment.pids() == before


def test_supervisord_brings_a_killed_worker_back(deployment):
    old = deployment.pid('host2')
    os.kill(old, signal.SIGKILL)

    def restarted():
        pid = deployment.pid('host2')
        return pid if pid not in (0, old) else None
    new = wait_until(restarted, 60, 'supervisord to restart the host worker of host2')
    wait_until(lambda: deployment.hosts_status()['host2']['pid'] == new and deployment.hosts_status()['host2']['alive'], 30,
               'the new host worker of host2 to send a heartbeat')
    old_client = deployment.pid('client')
    os.kill(old_client, signal.SIGKILL)
    wait_until(lambda: deployment.pid('client') not in (0, old_client), 60, 'supervisord to restart the client worker')
    wait_until(lambda: all(h['alive'] for h in deployment.hosts_status().values()), 30, 'the host workers to be heard again')


def test_weight_change_restarts_the_client_worker_only(deployment):
    before = deployment.pids()
    inventory = copy.deepcopy(deployment.inventory)
    inventory['all']['children']['host_workers']['hosts']['host1']['maglica_weight'] = 25
    run = deployment.site(inventory)
    assert run.rc == 0, run
    assert [h for h, r in run.recap.items() if r['changed']] == ['client'], run.recap
    after = deployment.pids()
    assert after['client'] != before['client'] and all(after[h] == before[h] for h in HOSTS), (before, after)
    with open(deployment.client_conf) as handle:
        assert [h['weight'] for h in yaml.safe_load(handle)['hosts']] == [10, 25, 10]
    deployment.inventory = inventory


def test_a_silent_host_worker_fails_the_play_with_its_name(deployment):
    # host2's worker reports to a port where nobody listens: it runs, but the client worker never hears it.
    inventory = copy.deepcopy(deployment.inventory)
    inventory['all']['children']['host_workers']['hosts']['host2']['host_worker_client_rep_port'] = PORT + 5
    inventory['all']['children']['client_workers']['hosts']['client']['client_worker_verify_timeout'] = 8
    try:
        run = deployment.site(inventory)
        assert run.rc != 0, run
        assert 'the host worker of host2 is not alive after waiting 8s' in run.output, run
        assert run.recap['client']['failed'] == 1, run.recap
    finally:
        run = deployment.site(deployment.inventory)
    assert run.rc == 0, run
