# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Clones that boot and answer: real Debian 12 guests, built here from Debian's packages, cloned and booted
under QEMU software emulation on the testbed's libvirt networks, then reached over SSH with strict host key
checking and by Ansible.

One set of booted clones (started at once, module scope) serves every assertion:
  web-a  Debian 12 + ifupdown on host1, cloned through the module with wait_for: ssh
  web-b  the same image on host1, cloned through the library with wait_for: ssh, from a spare (host/spares.py:
         host1's worker keeps one, made while web-a, the image's first clone there, is customised)
  nm-c   Debian 12 + NetworkManager on host2
  ci-d   Debian 12 + cloud-init on host2, with the user's own cloud-init user-data
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest

from guests import Booted  # pylint: disable=wrong-import-order
from maglica_testbed import PYTHON, ROOT, TESTBED, ansible_env, run_playbook, wait_until  # pylint: disable=wrong-import-order
from maglica.controller import cloud as maglica_cloud  # pylint: disable=wrong-import-order
from maglica.host.spares import SPARED_NOTE  # pylint: disable=wrong-import-order
PLAYBOOKS = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'playbooks')
DOMAIN = 'boot.test'
BOOT_TIMEOUT = 1500  # four TCG guests booting at once on two shared cores
GUEST_MEMORY_MIB = 1024  # Debian's stock initrd panics in 256 MiB


def image_machine_id():
    """The machine-id the image builder gives every bootable image (one place: build_bootable.sh)."""
    with open(os.path.join(TESTBED, 'build_bootable.sh')) as handle:
        return re.search(r'^IMAGE_MACHINE_ID=(\w+)$', handle.read(), re.M).group(1)


CLONES = {
    # name: (image, host, how it is cloned)
    'web-a': ('deb12.original', 'host1', 'module'),
    'web-b': ('deb12.original', 'host1', 'library'),
    'nm-c': ('deb12nm.original', 'host2', 'library'),
    'ci-d': ('deb12ci.original', 'host2', 'library'),
}
IMAGES = {'deb12.original': ('ifupdown', ['host1']), 'deb12nm.original': ('nm', ['host2']),
          'deb12ci.original': ('cloudinit', ['host2'])}
USER_DATA = """#cloud-config
write_files:
  - path: /etc/maglica-user-data-marker
    content: "from the user's own user-data\\n"
"""


def fqdn(name):
    return '%s.%s' % (name, DOMAIN)


@pytest.fixture(scope='module')
def booted(testbed, cloud, tmp_path_factory):
    work = str(tmp_path_factory.mktemp('boot'))
    boot = Booted(testbed, cloud, work)
    cloud.stop_host_worker('host1')
    cloud.start_host_worker('host1', settings={'spare_images': 1})
    try:
        for image, (variant, hosts) in IMAGES.items():
            disk = testbed.bootable_image(variant)
            for host in hosts:
                testbed.define_image(host, image, disk, memory=GUEST_MEMORY_MIB)

        def make(name):
            image, host, how = CLONES[name]
            if how == 'module':
                run = run_playbook(os.path.join(PLAYBOOKS, 'vm_clone.yml'), {
                    'maglica_config': cloud.path, 'image': image, 'hostname': fqdn(name), 'host': host,
                    'ssh_authorized_keys': [boot.public_key], 'wait_for': 'ssh', 'wait_for_timeout': BOOT_TIMEOUT}, diff=True)
                assert run.rc == 0, run
                return run.last
            extra = {'cloud_init_user_data': USER_DATA} if name == 'ci-d' else {}
            if name == 'web-b':  # the spare web-a's clone leaves (its worker had none: restarted above)
                wait_until(lambda: cloud.state_file(host, 'spares.json')['ready'], BOOT_TIMEOUT, 'a spare of %s on %s' % (image, host))
            return maglica_cloud.clone(cloud.config, image, fqdn(name), host=host, ssh_authorized_keys=[boot.public_key],
                                       wait_for='ssh', wait_for_timeout=BOOT_TIMEOUT, **extra)

        with ThreadPoolExecutor(max_workers=len(CLONES)) as pool:
            futures = {name: pool.submit(make, name) for name in CLONES}
            boot.results = {name: future.result() for name, future in futures.items()}
        yield boot
    finally:
        # Booted guests cost CPU and count in placement: none outlives this module.
        for name, (_image, host, _how) in CLONES.items():
            testbed.virsh(host, 'destroy', fqdn(name), check=False)
            testbed.virsh(host, 'undefine', '--remove-all-storage', fqdn(name), check=False)
        for image, (_variant, hosts) in IMAGES.items():
            for host in hosts:
                testbed.virsh(host, 'undefine', '--remove-all-storage', image, check=False)
        cloud.stop_host_worker('host1')  # its spare goes with it
        cloud.start_host_worker('host1')


@pytest.mark.parametrize('name', list(CLONES))
def test_clone_boots_with_its_new_name(booted, name):
    result = booted.results[name]
    assert result['changed'] is True and result['ip'], result
    assert booted.ssh(name, 'hostname -f').stdout.strip() == fqdn(name)
    assert booted.ssh(name, 'hostname -s').stdout.strip() == name
    assert booted.ssh(name, 'systemctl is-active ssh').stdout.strip() == 'active'


@pytest.mark.parametrize('name', list(CLONES))
def test_clone_presents_the_host_keys_it_was_given(booted, name):
    result = booted.results[name]
    keys = result['ssh_host_keys']
    assert keys and all(k.split()[0].startswith(('ssh-', 'ecdsa-')) for k in keys), keys
    assert all(line.split()[0] == '%s,%s,%s' % (fqdn(name), name, result['ip']) for line in result['known_hosts'])
    # The keys sshd serves are exactly the public keys returned, and no private key was ever returned.
    served = booted.ssh(name, 'cat /etc/ssh/ssh_host_*_key.pub').stdout.split('\n')
    assert sorted(' '.join(k.split()[:2]) for k in served if k.strip()) == sorted(' '.join(k.split()[:2]) for k in keys)
    assert 'PRIVATE KEY' not in json.dumps(result)
    # Strict checking is real: the same connection with another machine's key is refused.
    other = booted.results['web-b' if name == 'web-a' else 'web-a']['known_hosts']
    wrong = [' '.join([line.split()[0].split(',')[0] + ',' + result['ip']] + line.split()[1:]) for line in other]
    refused = booted.ssh(name, 'true', known_hosts=wrong, check=False)
    assert refused.returncode != 0 and 'Host key verification failed' in refused.stderr


def test_web_b_was_made_from_a_spare(booted):
    """The clone that boots and answers in the tests above and below skipped its copy and appliance launch."""
    assert SPARED_NOTE in booted.results['web-b']['result']['customization']['notes'], booted.results['web-b']['result']['customization']
    assert SPARED_NOTE not in booted.results['web-a']['result']['customization']['notes']


def test_every_clone_has_its_own_machine_id(booted):
    ids = {name: booted.ssh(name, 'cat /etc/machine-id').stdout.strip() for name in CLONES}
    assert all(re.fullmatch(r'[0-9a-f]{32}', i) for i in ids.values()), ids
    assert len(set(ids.values())) == len(ids), 'machine-ids must differ between clones: %s' % ids
    assert image_machine_id() not in ids.values()
    seeds = {name: booted.ssh(name, 'sha256sum /var/lib/systemd/random-seed').stdout.split()[0] for name in CLONES}
    assert len(set(seeds.values())) == len(seeds), 'every clone has its own random seed'


@pytest.mark.parametrize('name', list(CLONES))
def test_clone_got_its_address_by_dhcp_and_sent_its_hostname(booted, name):
    _image, host, _how = CLONES[name]
    ip = booted.results[name]['ip']
    lease = booted.leases(host).get(ip)
    assert lease is not None, 'no DHCP lease for %s on %s: %s' % (ip, host, booted.leases(host))
    assert lease['hostname'] == name, lease


def test_networkmanager_clone_runs_on_the_keyfile_we_wrote(booted):
    keyfiles = booted.ssh('nm-c', 'grep -l dhcp-hostname /etc/NetworkManager/system-connections/*').stdout.split()
    assert keyfiles, 'a keyfile written by maglica'
    active = booted.ssh('nm-c', 'nmcli -t -f NAME,DEVICE,FILENAME connection show --active').stdout
    assert any(line.endswith(':' + keyfiles[0]) and ':eth0:' in line for line in active.splitlines()), active
    assert booted.ssh('nm-c', 'systemctl is-active networking NetworkManager', check=False).stdout.split()[1] == 'active'


def test_cloud_init_ran_as_a_new_instance_and_kept_our_settings(booted):
    seed = booted.ssh('ci-d', 'cat /var/lib/cloud/seed/nocloud/meta-data').stdout
    instance_id = re.search(r'instance-id:\s*(\S+)', seed).group(1)
    assert booted.ssh('ci-d', 'cloud-init status --wait >/dev/null; cat /var/lib/cloud/data/instance-id').stdout.strip() == instance_id
    assert booted.ssh('ci-d', 'cloud-init status').stdout.split() == ['status:', 'done']
    result = json.loads(booted.ssh('ci-d', 'cat /run/cloud-init/result.json').stdout)['v1']
    assert result['errors'] == [] and 'NoCloud' in result['datasource'], result
    # It did not rename the host back or replace the host keys (the strict SSH login above proves the keys too).
    assert booted.ssh('ci-d', 'hostname -f').stdout.strip() == fqdn('ci-d')
    served = booted.ssh('ci-d', 'cat /etc/ssh/ssh_host_ed25519_key.pub').stdout.split()[:2]
    assert ' '.join(served) in [' '.join(k.split()[:2]) for k in booted.results['ci-d']['ssh_host_keys']]
    # The user's own user-data was merged with ours and applied.
    assert booted.ssh('ci-d', 'cat /etc/maglica-user-data-marker').stdout == "from the user's own user-data\n"


def test_rerun_finds_the_clone_and_waits_again(booted):
    run = run_playbook(os.path.join(PLAYBOOKS, 'vm_clone.yml'), {
        'maglica_config': booted.cloud.path, 'image': 'deb12.original', 'hostname': fqdn('web-a'),
        'wait_for': 'ssh', 'wait_for_timeout': 300})
    assert run.rc == 0, run
    assert run.last['changed'] is False and run.last['host'] == CLONES['web-a'][1]
    assert run.last['ip'] == booted.results['web-a']['ip']
    assert run.last['known_hosts'] == booted.results['web-a']['known_hosts']


def test_cli_waits_for_ssh(booted):
    out = subprocess.run([PYTHON, '-m', 'maglica.controller.cli', '--config', booted.cloud.path, '--json', 'vm', 'clone',
                          '--image', 'deb12.original', '--hostname', fqdn('web-b'), '--wait-for', 'ssh'],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, env=booted.cloud.env,
                         check=False)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data['ip'] == booted.results['web-b']['ip'] and data['known_hosts'] == booted.results['web-b']['known_hosts']


def test_ansible_reaches_the_clone_through_the_inventory(booted):
    inventory = os.path.join(booted.work, 'boot.maglica.yml')
    known_hosts = os.path.join(booted.work, 'inventory_known_hosts')
    with open(inventory, 'w') as handle:
        json.dump({'plugin': 'maglica.cloud.maglica', 'config': booted.cloud.path, 'known_hosts_file': known_hosts,
                   'compose': {'ansible_user': "'root'", 'ansible_ssh_private_key_file': repr(booted.key)}}, handle)
    env = ansible_env({'ANSIBLE_HOST_KEY_CHECKING': 'True', 'ANSIBLE_PYTHON_INTERPRETER': '/usr/bin/python3'})
    proc = subprocess.run([os.path.join(os.path.dirname(PYTHON), 'ansible'), '-i', inventory, fqdn('web-a'),
                           '-m', 'ansible.builtin.ping'], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          universal_newlines=True, env=env, cwd=ROOT, check=False)
    assert proc.returncode == 0 and '"ping": "pong"' in proc.stdout, proc.stdout
    with open(known_hosts) as handle:
        assert set(booted.results['web-a']['known_hosts']) <= set(handle.read().splitlines())


def test_a_clone_that_does_not_come_up_is_kept_and_the_task_says_so(booted, testbed):
    # debian.original is a disk with no boot loader: its clone starts and never gets an address.
    run = run_playbook(os.path.join(PLAYBOOKS, 'vm_clone.yml'), {
        'maglica_config': booted.cloud.path, 'image': 'debian.original', 'hostname': 'silent.boot.test',
        'wait_for': 'ip', 'wait_for_timeout': 15})
    try:
        assert run.rc != 0, run
        message = run.failed[0]['msg']
        assert 'the clone was kept' in message and 'has no address' in message and 'console' in message, message
        host = [h for h in ('host0', 'host1') if 'silent.boot.test' in testbed.domains(h)]
        assert len(host) == 1, 'the clone is kept, whole, on one host'
    finally:
        for h in ('host0', 'host1'):
            testbed.virsh(h, 'destroy', 'silent.boot.test', check=False)
            testbed.virsh(h, 'undefine', '--remove-all-storage', 'silent.boot.test', check=False)


def guest_main_pid(booted, name, unit):
    return int(booted.ssh(name, 'systemctl show -p MainPID --value %s' % unit).stdout.strip())


def test_client_worker_role_runs_under_systemd_on_a_booted_guest(booted, testbed):
    """The roles' systemd path: client_worker deployed over SSH (strict host key checking) onto web-b.

    One run only: under software emulation each task costs seconds in the guest, and the role's second-run
    idempotence is proven on the supervisord path (test_roles.py)."""
    result = booted.results['web-b']
    known_hosts = os.path.join(booted.work, 'role_known_hosts')
    with open(known_hosts, 'w') as handle:
        handle.write(''.join('%s\n' % line for line in result['known_hosts']))
    inventory = {'all': {'children': {
        'client_workers': {'hosts': {fqdn('web-b'): {
            'ansible_host': result['ip'], 'ansible_user': 'root', 'ansible_ssh_private_key_file': booted.key,
            'ansible_ssh_common_args': '-o UserKnownHostsFile=%s -o StrictHostKeyChecking=yes' % known_hosts,
            'ansible_python_interpreter': '/usr/bin/python3'}}},
        # The role reads each host worker's public key where that worker runs: the testbed's, here.
        'host_workers': {'hosts': {'host0': {'ansible_connection': 'local', 'ansible_python_interpreter': PYTHON,
                                             'host_worker_key_dir': booted.cloud.key_dir,
                                             'maglica_libvirt_address': testbed.hosts['host0']}}},
    }}}
    path = os.path.join(booted.work, 'role_inventory.json')
    with open(path, 'w') as handle:
        json.dump(inventory, handle)
    unit = 'maglica-client-worker'
    run = run_playbook(os.path.join(PLAYBOOKS, 'client_worker_on_guest.yml'), inventory=path, args=['-c', 'ssh'],
                       env={'ANSIBLE_HOST_KEY_CHECKING': 'True', 'ANSIBLE_PIPELINING': 'True'})
    assert run.rc == 0, run
    assert booted.ssh('web-b', 'systemctl is-active %s' % unit).stdout.strip() == 'active'
    assert booted.ssh('web-b', 'systemctl is-enabled %s' % unit).stdout.strip() == 'enabled'
    pid = guest_main_pid(booted, 'web-b', unit)
    assert pid > 0
    booted.ssh('web-b', 'ss -ltn | grep -q ":5556 "')
    # kill -9: systemd (Restart=on-failure) brings it back under a new pid, listening again.
    booted.ssh('web-b', 'kill -9 %d' % pid)
    wait_until(lambda: guest_main_pid(booted, 'web-b', unit) not in (0, pid)
               and booted.ssh('web-b', 'systemctl is-active %s' % unit, check=False).stdout.strip() == 'active', 120,
               'systemd to restart %s after kill -9' % unit)
    wait_until(lambda: booted.ssh('web-b', 'ss -ltn | grep -q ":5556 "', check=False).returncode == 0, 60,
               'the restarted client worker to listen on 5556')
