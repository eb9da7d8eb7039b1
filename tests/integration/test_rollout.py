# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A cloud rolled out the way a user does: `ansible-playbook playbooks/site.yml` over SSH (strict host key
checking) onto two booted Debian 12 hypervisors (systemd as PID 1, libvirtd with its socket activation, QEMU,
libguestfs), the client worker on the controller.

The two hypervisors are guests of the testbed's host0 (software emulation), built from build_bootable.sh's
`hypervisor` variant, which carries the host_worker role's packages (the guests have no mirror: the role finds
them present). They share host0's libvirt network; the controller (the test, in the testbed's network
namespace) reaches them there, and they reach the client worker at host0's bridge address.

One booted set of guests (module scope) serves every step, in this file's order:
  1. site.yml deploys both roles
  2. each libvirtd listens on TLS with the roles' certificates, on the address the role was given and no other
  3. the host workers run under systemd
  4. maglica_image / maglica_image_info / maglica_vm_clone (linked, not started) from the controller
  5. a second site.yml run changes nothing
  7. kill -9 of a host worker: systemd restarts it, and a job sent while it is down finishes
  6. a hypervisor removed from the inventory cannot reach the other's libvirtd after the next run (last: it
     changes the inventory)

The clone in step 4 is NOT customised (maglica_vm_clone customize: false): libguestfs inside a guest is software
emulation inside software emulation, and its first appliance took 755 s (supermin's build, then the launch) on this
machine. Customisation itself is proven on the testbed's hosts (test_clone.py, test_guest.py); here the clone is a
linked qcow2 overlay of the image on the guest hypervisor, made through the client worker and the guest's host worker.

Run by `make rollout`, the last phase of `make test`, alone (its guests need the cores). Where the time goes, and
what was cut (2026-12-06, two cores, 24 GiB): a module run on a TCG guest costs 2.5-3.5 s on a quiet machine, nearly
all of it Python importing ansible.module_utils.basic from the AnsiballZ zip (compiled anew each time), and 2-3 times
that under a load of 6-8; so the number of remote module runs is what counts. The first site.yml ran ~100 per
hypervisor (1424 s under a load of ~8); the library is now one archive (~75 runs fewer), libvirtd's nine listener
lines one block, the sockets' state one read, systemd's daemon-reload only when a unit changed, and the facts only
those the roles read. Each site.yml run writes its per-task times (profile_tasks) to site-N.log in the test's
directory.
Measured (the test's own figures, printed by test_report_times):
  2026-12-06, CI's own run (.ci/run, empty caches, two cores, nothing else running): 10 passed in 665 s; boot 77 s,
  first site.yml 215 s, image 11 s, clone 1 s, second site.yml 155 s (changed=0), removal run 153 s, the module 642 s.
  Under a load of 5-9 from other test runs the same test took 2036 s (first site.yml 648 s): a remote module run on
  a guest costs 2.5-3.5 s quiet and 2-3 times that under load, so the count of remote module runs is what matters.
What the test found: the roles deploy, listen, supervise, stay unchanged on a second run and lock a removed host
out as documented. Its own mistakes were fixed: step 6 assumed a host worker may open every libvirtd (only those
it copies images from: host_worker_image_copy_from, set here for hv-b), its last assertion could not fail, the
clone's disk path it read was wrong (the disk is named after the full hostname), and its ansible-playbook runs shared
~/.ansible/cp with every other testbed (guests of two testbeds can have the same address). In the roles, by
measurement: the library copied file by file (~75 module runs, and files of an older library never removed), nine
lineinfile runs for libvirtd.conf, systemd's daemon-reload on every run and every restart, and the libvirtd
sockets' systemd_service run twice on every run.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from maglica_testbed import PYTHON, ROOT, PlaybookRun, ansible_env, run_playbook, wait_until
from maglica.controller import client as maglica_client  # pylint: disable=wrong-import-order
from maglica.controller import cloud as maglica_cloud  # pylint: disable=wrong-import-order
from maglica.cluster import config as maglica_config  # pylint: disable=wrong-import-order
from maglica.protocol import messages  # pylint: disable=wrong-import-order

DOMAIN = 'rollout.test'
HYPERVISORS = ['hv-a', 'hv-b']
HOST = 'host0'  # both guests on one testbed host: one libvirt network, so each reaches the other's libvirtd
IMAGE = 'hypervisor.original'
GUEST_MEMORY_MIB = 1536
RESTART_DELAY = 20  # seconds systemd waits before it restarts the killed host worker (test only; the role's unit: 2)
BOOT_TIMEOUT = 900
UNIT = 'maglica-host-worker'
SITE = os.path.join(ROOT, 'playbooks', 'site.yml')
TINY = 'tiny.original'  # the image maglica_image puts on the guest hypervisors
CLONE = 'tiny-1.%s' % DOMAIN
RECAP_RE = re.compile(r'^(\S+)\s+: ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)', re.M)


def changed_tasks(run):
    """The tasks of a run (default callback) that reported changed, with the hosts."""
    task, found = None, []
    for line in run.output.splitlines():
        if line.startswith(('TASK [', 'RUNNING HANDLER [')):
            task = line.rstrip('* ')
        elif line.startswith('changed:'):
            found.append('%s %s' % (task, line))
    return found


def fqdn(name):
    return '%s.%s' % (name, DOMAIN)


class Rollout:
    """The booted hypervisors, the controller's files, and the inventory that site.yml runs on."""

    def __init__(self, testbed, work):
        self.testbed = testbed
        self.work = work
        self.key = os.path.join(work, 'id_ed25519')
        if not os.path.exists(self.key):
            subprocess.run(['ssh-keygen', '-q', '-t', 'ed25519', '-N', '', '-C', 'maglica-rollout', '-f', self.key], check=True)
        with open(self.key + '.pub') as handle:
            self.public_key = handle.read().strip()
        self.guests = {}  # fqdn: clone result (ip, known_hosts)
        self.known_hosts = os.path.join(work, 'known_hosts')
        # host0's bridge address (testbed.sh: mgbrN, 172.30.N.1 with N the last octet of the host's address)
        self.bridge = '172.30.%d.1' % (int(testbed.hosts[HOST].rsplit('.', 1)[1]) % 256)
        port = int(os.environ.get('MAGLICA_TEST_PORT_BASE', '15555')) + 40
        self.ports = (port, port + 1)
        self.controller = os.path.join(work, 'controller')
        self.config_path = os.path.join(self.controller, 'etc', 'maglica.conf')
        self.runs = {}  # step: seconds
        self.site_runs = 0
        self.started = time.monotonic()

    def ssh(self, name, command, check=True, timeout=300):
        """Run `command` as root on a guest over SSH, its host key checked strictly against the one it was given."""
        # One SSH connection per guest, kept (a handshake costs a TCG guest about a second).
        proc = subprocess.run(['ssh', '-F', '/dev/null', '-i', self.key, '-o', 'IdentitiesOnly=yes', '-o', 'BatchMode=yes',
                               '-o', 'StrictHostKeyChecking=yes', '-o', 'UserKnownHostsFile=%s' % self.known_hosts,
                               '-o', 'GlobalKnownHostsFile=/dev/null', '-o', 'ConnectTimeout=30',
                               '-o', 'ControlMaster=auto', '-o', 'ControlPersist=120',
                               '-o', 'ControlPath=%s' % os.path.join(self.work, 'ssh-%C'),
                               'root@%s' % self.guests[name]['ip'], command],
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              universal_newlines=True, timeout=timeout, check=False)
        if check:
            assert proc.returncode == 0, '%s: %r exited %d: %s%s' % (name, command, proc.returncode, proc.stdout, proc.stderr)
        return proc

    def ip(self, name):
        return self.guests[name]['ip']

    def inventory(self, hypervisors):
        """The inventory a user writes: the hypervisors over SSH, the client worker on the controller."""
        hosts = {}
        for name in hypervisors:
            hosts[name] = {
                'ansible_host': self.ip(name), 'ansible_connection': 'ssh', 'ansible_user': 'root',
                'ansible_ssh_private_key_file': self.key, 'ansible_python_interpreter': '/usr/bin/python3',
                'ansible_ssh_common_args': '-o UserKnownHostsFile=%s -o StrictHostKeyChecking=yes '
                                           '-o GlobalKnownHostsFile=/dev/null -o IdentitiesOnly=yes' % self.known_hosts,
                'maglica_libvirt_address': self.ip(name),
                'host_worker_environment': {'LIBGUESTFS_BACKEND': 'direct'},
                # A spare's appliance would launch under nested emulation beside the clone this test boots there.
                'host_worker_spare_images': 0,
            }
        # The one feature that opens a libvirtd to another host's worker: hv-b copies images from hv-a, so hv-a's
        # libvirtd allows hv-b's host worker certificate (step 6 takes that away by removing hv-b).
        copier = fqdn(HYPERVISORS[1])
        if copier in hosts:
            hosts[copier]['host_worker_image_copy_from'] = [fqdn(HYPERVISORS[0])]
        controller = {
            'ansible_connection': 'local', 'ansible_python_interpreter': PYTHON,
            'client_worker_install_packages': False, 'client_worker_python': PYTHON,
            'client_worker_prefix': self.controller,
            'client_worker_config_path': self.config_path,
            'client_worker_key_dir': os.path.join(self.controller, 'keys'),
            'client_worker_jobs_database': os.path.join(self.controller, 'state', 'jobs.sqlite'),
            'client_worker_log_dir': os.path.join(self.controller, 'log'),
            'client_worker_libvirt_pki_path': os.path.join(self.controller, 'pki'),
            'client_worker_host': self.bridge, 'client_worker_bind': self.bridge,
            'client_worker_pub_port': self.ports[0], 'client_worker_rep_port': self.ports[1],
            'client_worker_verify_timeout': 300,
        }
        data = {'all': {
            'vars': {'maglica_pki_ca_dir': os.path.join(self.work, 'ca')},
            'children': {'host_workers': {'hosts': hosts}, 'client_workers': {'hosts': {'controller': controller}}}}}
        path = os.path.join(self.work, 'inventory-%s.json' % '-'.join(sorted(hypervisors)))
        with open(path, 'w') as handle:
            json.dump(data, handle, indent=1)
        return path

    def site(self, hypervisors):
        """ansible-playbook playbooks/site.yml on the inventory of these hypervisors; returns the run and its seconds."""
        start = time.monotonic()
        # The SSH connections' control sockets in this test's own directory: the default one (~/.ansible/cp) is shared
        # with every other ansible of the machine, and another testbed's guest may have the same address.
        run = run_playbook(SITE, inventory=self.inventory(hypervisors), args=['-c', 'ssh'],
                           env={'ANSIBLE_HOST_KEY_CHECKING': 'True', 'ANSIBLE_PIPELINING': 'True',
                                'ANSIBLE_STDOUT_CALLBACK': 'ansible.builtin.default',
                                'ANSIBLE_SSH_CONTROL_PATH_DIR': os.path.join(self.work, 'cp'),
                                'ANSIBLE_CALLBACKS_ENABLED': 'ansible.posix.profile_tasks'})
        seconds = time.monotonic() - start
        self.site_runs += 1
        with open(os.path.join(self.work, 'site-%d.log' % self.site_runs), 'w') as handle:
            handle.write(run.output)
        run.recap = {m.group(1): {'ok': int(m.group(2)), 'changed': int(m.group(3)), 'unreachable': int(m.group(4)),
                                  'failed': int(m.group(5))} for m in RECAP_RE.finditer(run.output)}
        return run, seconds

    def module(self, module, args):
        """`ansible localhost -m MODULE -a JSON` from the controller, with the client worker's configuration."""
        proc = subprocess.run([os.path.join(os.path.dirname(PYTHON), 'ansible'), '-i', 'localhost,', '-c', 'local', 'localhost',
                               '-m', module, '-a', json.dumps(dict(args, config=self.config_path))],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True,
                              env=ansible_env(), cwd=ROOT, check=False)
        return PlaybookRun(proc)

    def libvirt_from(self, name, target, pki):
        """virsh on guest `name` to guest `target`'s libvirtd over TLS, with the client certificate in `pki`."""
        return self.ssh(name, 'virsh -c "qemu+tls://%s/system?pkipath=%s" -q list --all' % (self.ip(target), pki), check=False)


@pytest.fixture(scope='module')
def rollout(testbed, cloud, tmp_path_factory):
    roll = Rollout(testbed, str(tmp_path_factory.mktemp('rollout')))
    names = [fqdn(h) for h in HYPERVISORS]
    try:
        testbed.define_image(HOST, IMAGE, testbed.bootable_image('hypervisor'), memory=GUEST_MEMORY_MIB)

        def boot(name):
            return maglica_cloud.clone(cloud.config, IMAGE, name, host=HOST, clone_mode='linked',
                                       ssh_authorized_keys=[roll.public_key], wait_for='ssh', wait_for_timeout=BOOT_TIMEOUT)

        start = time.monotonic()
        with ThreadPoolExecutor(max_workers=len(names)) as pool:
            roll.guests = dict(zip(names, pool.map(boot, names)))
        roll.runs['boot'] = time.monotonic() - start
        with open(roll.known_hosts, 'w') as handle:
            handle.write(''.join('%s\n' % line for result in roll.guests.values() for line in result['known_hosts']))
        yield roll
    finally:
        supervisord = os.path.join(roll.controller, 'supervisor', 'supervisord.conf')
        if os.path.exists(supervisord):
            subprocess.run(['supervisorctl', '-c', supervisord, 'shutdown'], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, check=False)
        for name in names:
            testbed.virsh(HOST, 'destroy', name, check=False)
            testbed.virsh(HOST, 'undefine', '--remove-all-storage', name, check=False)
        testbed.virsh(HOST, 'undefine', '--remove-all-storage', IMAGE, check=False)


@pytest.fixture(scope='module')
def deployed(rollout):
    run, seconds = rollout.site([fqdn(h) for h in HYPERVISORS])
    rollout.runs['first'] = seconds
    assert run.rc == 0, run
    return rollout


def test_site_deploys_both_roles(deployed):
    """Step 1: site.yml ran (the fixture) and the client worker hears both host workers."""
    with maglica_client.Client(maglica_config.load(deployed.config_path), timeout=10) as c:
        alive = {h['host'] for h in c.hosts() if h['alive']}
    assert alive == {fqdn(h) for h in HYPERVISORS}, alive


@pytest.mark.parametrize('name', HYPERVISORS)
def test_libvirtd_listens_on_tls_at_its_address_only(deployed, name):
    """Step 2: the roles' certificates, on the address the role was given (not every address, which is what
    Debian 12's libvirtd-tls.socket does when listen_addr is all the role writes)."""
    host = fqdn(name)
    ip = deployed.ip(host)
    listening = deployed.ssh(host, "ss -Hltn '( sport = :16514 or sport = :16509 )'").stdout.split('\n')
    local = sorted(line.split()[3] for line in listening if line.strip())
    assert local == ['%s:16514' % ip], 'libvirtd must listen on %s:16514 only: %s' % (ip, local)
    # The controller's library certificate is accepted, and the server's certificate names its address.
    pki = os.path.join(deployed.controller, 'pki')
    out = subprocess.run(['virsh', '-q', '-c', 'qemu+tls://%s/system?pkipath=%s' % (ip, pki), 'list', '--all'],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True, check=False)
    assert out.returncode == 0, out.stdout
    # Nothing answers on the guest's other addresses (the trap: libvirtd-tls.socket listening on all of them).
    other = deployed.ssh(host, 'timeout 10 bash -c "exec 3<>/dev/tcp/127.0.0.1/16514"', check=False)
    assert other.returncode != 0, 'libvirtd answers on 127.0.0.1:16514 too'
    issuer = subprocess.run(['openssl', 'verify', '-CAfile', os.path.join(deployed.work, 'ca', 'cacert.pem'), '/dev/stdin'],
                            input=deployed.ssh(host, 'cat /etc/maglica/pki/libvirtd/servercert.pem').stdout,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True, check=False)
    assert issuer.returncode == 0, issuer.stdout
    conf = deployed.ssh(host, 'grep -E "^(cert_file|key_file|ca_file)" /etc/libvirt/libvirtd.conf').stdout
    assert '/etc/maglica/pki/libvirtd/servercert.pem' in conf, conf


@pytest.mark.parametrize('name', HYPERVISORS)
def test_host_worker_runs_under_systemd(deployed, name):
    """Step 3."""
    host = fqdn(name)
    assert deployed.ssh(host, 'systemctl is-active %s' % UNIT).stdout.strip() == 'active'
    assert deployed.ssh(host, 'systemctl is-enabled %s' % UNIT).stdout.strip() == 'enabled'
    assert deployed.ssh(host, 'ps -o comm= -p 1').stdout.strip() == 'systemd'


def test_modules_from_the_controller(deployed, testbed):
    """Step 4: maglica_image puts an image on both guest hypervisors, maglica_image_info lists it on both, and
    maglica_vm_clone makes a linked clone on one of them: not customised (customize: false; a libguestfs appliance
    under TCG inside TCG takes 12+ minutes) and not started (QEMU inside QEMU's emulation)."""
    hosts = sorted(fqdn(h) for h in HYPERVISORS)
    start = time.monotonic()
    image = deployed.module('maglica.cloud.maglica_image', {
        'name': TINY, 'path': testbed.image('debian'), 'domain_type': 'qemu', 'memory': '256M', 'timeout': 900})
    deployed.runs['image'] = time.monotonic() - start
    assert image.rc == 0, image.output[-4000:]
    assert sorted(image.last['fetch']) == hosts and image.last['changed'] is True, image.last
    info = deployed.module('maglica.cloud.maglica_image_info', {'name': TINY})
    assert info.rc == 0, info.output[-4000:]
    assert sorted(i['host'] for i in info.last['images'] if i['name'] == TINY) == hosts, info.last
    start = time.monotonic()
    clone = deployed.module('maglica.cloud.maglica_vm_clone', {
        'image': TINY, 'hostname': CLONE, 'host': hosts[0], 'clone_mode': 'linked', 'start': False, 'customize': False,
        'timeout': 600})
    deployed.runs['clone'] = time.monotonic() - start
    assert clone.rc == 0, clone.output[-4000:]
    assert clone.last['changed'] is True and clone.last['host'] == hosts[0], clone.last
    assert clone.last['result']['customization'] == {'customized': False}, clone.last['result']
    disk = [d['path'] for d in clone.last['result']['domain']['disks'] if d['device'] == 'disk']
    assert len(disk) == 1, clone.last['result']['domain']
    # Linked: a qcow2 overlay on the image's disk, on the guest hypervisor.
    info = json.loads(deployed.ssh(hosts[0], 'qemu-img info --output=json %s' % disk[0]).stdout)
    assert info['format'] == 'qcow2' and info['backing-filename'].endswith('/%s.qcow2' % TINY), info
    domains = deployed.ssh(hosts[0], 'virsh -q list --all --name').stdout.split()
    assert CLONE in domains, domains
    assert CLONE not in deployed.ssh(hosts[1], 'virsh -q list --all --name').stdout.split()


def test_second_run_changes_nothing(deployed):
    """Step 5."""
    run, seconds = deployed.site([fqdn(h) for h in HYPERVISORS])
    deployed.runs['second'] = seconds
    assert run.rc == 0, run
    assert {fqdn(h) for h in HYPERVISORS} | {'controller'} <= set(run.recap), run
    assert all(r['changed'] == 0 for r in run.recap.values()), 'a second run changed: %s\n%s' % (run.recap, changed_tasks(run))


def test_killed_host_worker_is_restarted_and_a_job_sent_meanwhile_finishes(deployed):
    """Step 7: kill -9; the job (the clone's removal) is submitted while systemd waits to restart the worker.

    The role's unit restarts the worker 2 s after it died (RestartSec=2), less than two SSH round trips to a TCG
    guest: for the test only, a runtime drop-in (in /run, removed afterwards) makes it wait RESTART_DELAY seconds,
    so that "the job was sent while the worker was down" is checked, not hoped for."""
    host = fqdn(HYPERVISORS[0])
    dropin = '/run/systemd/system/%s.service.d/zz-rollout-test.conf' % UNIT
    deployed.ssh(host, 'mkdir -p %s && printf "[Service]\\nRestartSec=%d\\n" >%s && systemctl daemon-reload'
                 % (os.path.dirname(dropin), RESTART_DELAY, dropin))
    try:
        pid = int(deployed.ssh(host, 'systemctl show -p MainPID --value %s' % UNIT).stdout)
        assert pid > 0
        # Waits (at most 60 s) until the killed process is gone, then asks systemd what it does about it.
        state = deployed.ssh(host, 'kill -9 %d && timeout 60 tail --pid=%d -f /dev/null && '
                                   'systemctl show -p SubState --value %s' % (pid, pid, UNIT)).stdout.strip()
        assert state == 'auto-restart', 'systemd does not restart the killed worker: %s' % state
        config = maglica_config.load(deployed.config_path)
        with maglica_client.Client(config) as c:
            job_id = c.submit(messages.new_job(host, 'vm.remove', {'name': CLONE}))['id']
        after = deployed.ssh(host, 'systemctl show -p SubState --value %s' % UNIT).stdout.strip()
        assert after == 'auto-restart', 'the worker was back before the job was sent (%s): nothing was proven' % after
    finally:
        deployed.ssh(host, 'rm -f %s && systemctl daemon-reload' % dropin)

    def ended():
        with maglica_client.Client(config) as c:
            job = c.status(job_id)
        return job if job['state'] in messages.FINAL_STATES else None
    job = wait_until(ended, 300, 'the job sent to the killed host worker to end', interval=1)
    assert job['state'] == 'succeeded', job
    new = int(deployed.ssh(host, 'systemctl show -p MainPID --value %s' % UNIT).stdout)
    assert new not in (0, pid)
    assert int(deployed.ssh(host, 'systemctl show -p NRestarts --value %s' % UNIT).stdout) >= 1
    assert CLONE not in deployed.ssh(host, 'virsh -q list --all --name').stdout.split()


def test_removed_hypervisor_loses_access(deployed):
    """Step 6: before, hv-b's host worker certificate opens hv-a's libvirtd (hv-b copies images from hv-a: the
    inventory's host_worker_image_copy_from); after a run without hv-b, hv-a's libvirtd refuses it."""
    a, b = fqdn(HYPERVISORS[0]), fqdn(HYPERVISORS[1])
    pki = '/etc/maglica/pki/host_worker'
    before = deployed.libvirt_from(b, a, pki)
    assert before.returncode == 0, before.stderr
    run, seconds = deployed.site([a])
    deployed.runs['removal'] = seconds
    assert run.rc == 0, run
    after = deployed.libvirt_from(b, a, pki)
    assert after.returncode != 0, 'hv-b, removed from the inventory, still reaches hv-a: %s' % after.stdout
    # libvirtd ends the TLS session of a DN not on its tls_allowed_dn_list before it confirms it.
    assert 'Unable to read TLS confirmation' in after.stderr, after.stderr
    assert 'host-worker@%s' % b not in deployed.ssh(a, 'grep ^tls_allowed_dn_list /etc/libvirt/libvirtd.conf').stdout
    # hv-a's own access is intact.
    assert deployed.libvirt_from(a, a, pki).returncode == 0


def test_report_times(deployed):
    deployed.runs['whole'] = time.monotonic() - deployed.started
    print('rollout timings: %s' % ', '.join('%s %.0fs' % i for i in deployed.runs.items()))
