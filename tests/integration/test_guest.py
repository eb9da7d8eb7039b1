# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A clone is a new machine: its disk, read back with libguestfs, has new SSH host keys (modes and owners of the
image's), no per-machine state of the image, the network of the guest's own stack and, with cloud-init, a NoCloud
seed that agrees with it all. No private key or user-data secret shows in results, diffs, job records or logs."""

from __future__ import annotations

import base64
import glob
import json
import os
import subprocess
import tempfile

import pytest
import yaml

from maglica_testbed import MODULE_UTILS, PYTHON, TESTBED, run_playbook, wait_until

PLAYBOOKS = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'playbooks')
SSH_KEY = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMaglicaTestKeyOnlyForTests maglica@test'
USER_SECRET = 'user-data-secret-7f3a9c'
USER_DATA = '#cloud-config\npackages: [nginx]\nssh_deletekeys: true\nwrite_files:\n  - path: /etc/secret\n    content: %s\n' % USER_SECRET
KEY_TYPES = ['ecdsa', 'ed25519', 'rsa']
HOST_KEYS = ['/etc/ssh/ssh_host_%s_key%s' % (t, s) for t in KEY_TYPES for s in ('', '.pub')]
CLOUD_INIT_JOBS = []  # job ids of cloud-init clones, for the records test

READER = r'''
import base64, json, sys, guestfs
g = guestfs.GuestFS(python_return_dict=True)
g.add_drive_opts(sys.argv[1], readonly=True, format='qcow2')
g.launch()
root = g.inspect_os()[0]
mps = g.inspect_get_mountpoints(root)
for mp in sorted(mps, key=len):
    g.mount_ro(mps[mp], mp)
out = {}
for p in sys.argv[2:]:
    if g.is_symlink(p) or g.exists(p):
        st = g.lstatns(p)
        out[p] = {'mode': st['st_mode'] & 0o7777, 'uid': st['st_uid'], 'gid': st['st_gid'], 'dir': g.is_dir(p),
                  'data': base64.b64encode(g.read_file(p)).decode() if g.is_file(p) else None}
    else:
        out[p] = None
out['__ssh__'] = sorted(g.glob_expand('/etc/ssh/*_host_*'))
out['__nm__'] = sorted(g.glob_expand('/etc/NetworkManager/system-connections/*'))
g.close()
print(json.dumps(out))
'''


def read_disk(testbed, host, disk, paths):
    """{path: None | {mode, uid, gid, dir, data (bytes)}} of a guest disk inside `host`, read-only."""
    out = subprocess.run(['bash', os.path.join(TESTBED, 'testbed.sh'), 'exec', host, '/usr/bin/python3', '-c', READER, disk] + paths,
                         stdout=subprocess.PIPE, check=True, env=testbed.env, universal_newlines=True).stdout
    files = json.loads(out)
    for info in files.values():
        if isinstance(info, dict) and info['data'] is not None:
            info['data'] = base64.b64decode(info['data'])
    return files


def text(files, path):
    return files[path]['data'].decode()


def clone(cloud, diff=True, **variables):
    variables['maglica_config'] = cloud.path
    return run_playbook(os.path.join(PLAYBOOKS, 'vm_clone.yml'), variables, diff=diff)


def clone_disk(result):
    return [d for d in result['result']['domain']['disks'] if d['device'] == 'disk'][0]['path']


def public_of(private, tmp_path):
    """`ssh-keygen -y` of a private key: its public key, `type base64`."""
    path = tmp_path / 'key'
    path.write_bytes(private)
    path.chmod(0o600)
    try:
        return ' '.join(subprocess.run(['ssh-keygen', '-y', '-f', str(path)], stdout=subprocess.PIPE, check=True,
                                       universal_newlines=True).stdout.split()[:2])
    finally:
        path.unlink()


def private_material(private, public_keys):
    """What must never leak of an OpenSSH private key: its armour, and every base64 line of it that is not also a piece
    of a public key (the private key file embeds its public key, which may be shown)."""
    lines = [line for line in private.decode().splitlines() if line and not line.startswith('-----')]
    return ['BEGIN OPENSSH PRIVATE KEY'] + [line for line in lines if not any(line in key for key in public_keys)]


def everything_recorded(cloud, testbed, job_id):
    """The job record of the client (its listing and its database), the host workers' records, every worker log."""
    texts = [json.dumps(cloud.job(job_id)), json.dumps(cloud.jobs())]
    files = glob.glob(os.path.join(cloud.workdir, '*.log')) + glob.glob(os.path.join(cloud.workdir, 'jobs.sqlite*')) + \
        glob.glob(os.path.join(cloud.data['host_worker']['state_dir'], '*'))
    for path in files:
        with open(path, 'rb') as handle:
            texts.append(handle.read().decode('latin-1'))
    assert any(job_id in t for t in texts[2:]), 'the records read are the ones that hold this job'
    return texts


def assert_nowhere(needles, haystacks, what):
    for needle in needles:
        for index, haystack in enumerate(haystacks):
            assert needle not in haystack, '%s found in record %d' % (what, index)


@pytest.fixture(scope='module')
def variants(testbed):
    """debnm.original (NetworkManager, no host keys) and debci.original (cloud-init) on host0; gone afterwards."""
    names = {'debnm.original': 'debian-nm', 'debci.original': 'debian-cloudinit'}
    for name, variant in names.items():
        testbed.define_image('host0', name, testbed.image(variant))
    yield names
    for name in names:
        testbed.virsh('host0', 'undefine', '--remove-all-storage', name, check=False)


@pytest.fixture
def made(testbed):
    """Clones a test makes, as (host, name): removed with their disks afterwards."""
    clones = []
    yield clones
    for host, name in clones:
        testbed.virsh(host, 'destroy', name, check=False)
        testbed.virsh(host, 'undefine', '--remove-all-storage', name, check=False)


def test_two_debian_clones_get_new_host_keys_and_lose_the_images_state(cloud, testbed, made, tmp_path):
    keygen_dirs_before = set(glob.glob(os.path.join(tempfile.gettempdir(), 'maglica-hostkeys-*')))
    runs, disks = {}, {}
    for host, name in (('host0', 'keys-a.test'), ('host1', 'keys-b.test')):
        made.append((host, name))
        runs[name] = clone(cloud, image='debian.original', hostname=name, host=host, start=False, ssh_authorized_keys=[SSH_KEY])
        assert runs[name].rc == 0, runs[name]
        disks[name] = read_disk(testbed, host, clone_disk(runs[name].last), HOST_KEYS + [
            '/etc/machine-id', '/var/lib/dbus/machine-id', '/var/lib/systemd/random-seed', '/var/lib/dhcp/dhclient.eth0.leases',
            '/etc/mailname', '/etc/hostname', '/etc/udev/rules.d/70-persistent-net.rules', '/etc/network/interfaces'])
    privates = []
    for name, run in runs.items():
        result, files = run.last, disks[name]
        keys = result['ssh_host_keys']
        assert sorted(k.split()[0] for k in keys) == ['ecdsa-sha2-nistp256', 'ssh-ed25519', 'ssh-rsa'], 'the image\'s three types'
        assert result['result']['ssh_host_keys'] == keys
        short = name.split('.')[0]
        assert result['known_hosts'] == ['%s,%s %s' % (name, short, ' '.join(k.split()[:2])) for k in keys]
        assert files['__ssh__'] == sorted(HOST_KEYS), 'a private and a public key per type, nothing else'
        by_type = {k.split()[0]: k for k in keys}
        for key_type in KEY_TYPES:
            private = files['/etc/ssh/ssh_host_%s_key' % key_type]
            public = files['/etc/ssh/ssh_host_%s_key.pub' % key_type]
            assert (private['mode'], private['uid'], private['gid']) == (0o600, 0, 0), 'the image\'s mode and owner'
            assert (public['mode'], public['uid'], public['gid']) == (0o644, 0, 0)
            assert private['data'].startswith(b'-----BEGIN OPENSSH PRIVATE KEY-----')
            derived = public_of(private['data'], tmp_path)
            assert derived in [' '.join(k.split()[:2]) for k in keys], 'the returned public key is the private key\'s'
            assert public['data'].decode().strip() == by_type[derived.split()[0]], 'and the one in the disk'
            assert public['data'].decode().strip().endswith(' root@%s' % name)
            privates.append(private['data'])
        assert files['/etc/machine-id']['data'] == b'', 'emptied: systemd makes a new one at first boot'
        assert files['/var/lib/dbus/machine-id'] is None, 'the image\'s own dbus machine-id file is gone'
        seed = files['/var/lib/systemd/random-seed']
        assert len(seed['data']) == 512 and (seed['mode'], seed['uid']) == (0o600, 0)
        assert files['/var/lib/dhcp/dhclient.eth0.leases'] is None
        assert text(files, '/etc/mailname') == name + '\n' and text(files, '/etc/hostname') == name + '\n'
        assert files['/etc/udev/rules.d/70-persistent-net.rules']['data'] == b''
        assert text(files, '/etc/network/interfaces').count('iface eth0') == 1
        customization = result['result']['customization']
        assert customization['network'] == {'device': 'eth0', 'configured_by': ['ifupdown']}
        assert customization['cloud_init'] is None
        assert '/var/lib/dbus/machine-id' in customization['removed_files']
    a, b = (disks[n] for n in runs)
    assert a['/var/lib/systemd/random-seed']['data'] != b['/var/lib/systemd/random-seed']['data'], 'each clone its own seed'
    assert len(set(privates)) == len(privates) == 6, 'no key is shared between the clones'
    # Host workers of tests running beside this one (another xdist worker) make such directories too, for a moment:
    # a directory left by these clones stays, one of theirs goes (CI 2026-12-07 saw one of theirs).
    wait_until(lambda: set(glob.glob(os.path.join(tempfile.gettempdir(), 'maglica-hostkeys-*'))) <= keygen_dirs_before, 60,
               'no maglica-hostkeys-* directory but those there before: ssh-keygen\'s private keys removed')

    # Do not leak: no piece of any private key in the module's output with --diff, the job records or the logs.
    for name, run in runs.items():
        assert '(secret content, changed)' in run.output and '/etc/ssh/ssh_host_ed25519_key' in run.output
        haystacks = [run.output] + everything_recorded(cloud, testbed, run.last['job_id'])
        public_keys = [key for other in runs.values() for key in other.last['ssh_host_keys']]
        for private in privates:
            needles = private_material(private, public_keys)
            assert len(needles) > 2, 'enough of each key is private to be looked for'
            assert_nowhere(needles, haystacks, 'private host key material')


def test_rhel_host_keys_keep_the_ssh_keys_group(cloud, testbed, made, tmp_path):
    made.append(('host2', 'keys-r.test'))
    run = clone(cloud, image='rhel.original', hostname='keys-r.test', clone_mode='linked', start=False)
    assert run.rc == 0, run
    paths = HOST_KEYS + ['/var/lib/dhclient/dhclient--eth0.lease', '/etc/sysconfig/network-scripts/ifcfg-eth0']
    files = read_disk(testbed, 'host2', clone_disk(run.last), paths)
    for key_type in KEY_TYPES:
        private = files['/etc/ssh/ssh_host_%s_key' % key_type]
        assert (private['mode'], private['uid'], private['gid']) == (0o640, 0, 998), 'root:ssh_keys 0640 as in the image'
        assert public_of(private['data'], tmp_path) in [' '.join(k.split()[:2]) for k in run.last['ssh_host_keys']]
    assert files['/var/lib/dhclient/dhclient--eth0.lease'] is None
    assert 'DHCP_HOSTNAME=keys-r.test' in text(files, '/etc/sysconfig/network-scripts/ifcfg-eth0')
    assert run.last['result']['customization']['network']['configured_by'] == ['ifcfg', 'networkmanager']


def test_debian_with_networkmanager_gets_a_keyfile_and_host_keys_it_never_had(cloud, testbed, variants, made, tmp_path):
    made.append(('host0', 'nm1.test'))
    run = clone(cloud, image='debnm.original', hostname='nm1.test', host='host0', start=False)
    assert run.rc == 0, run
    keyfile = '/etc/NetworkManager/system-connections/maglica-eth0.nmconnection'
    files = read_disk(testbed, 'host0', clone_disk(run.last), HOST_KEYS + [
        keyfile, '/etc/network/interfaces', '/var/lib/NetworkManager/secret_key',
        '/var/lib/NetworkManager/internal-5c1a7b4e-0b1e-4c5d-9a0e-1f2d3c4b5a69-eth0.lease'])
    customization = run.last['result']['customization']
    assert customization['network'] == {'device': 'eth0', 'configured_by': ['networkmanager']}
    assert files['__nm__'] == [keyfile], 'one profile for the device'
    info = files[keyfile]
    assert (info['mode'], info['uid'], info['gid']) == (0o600, 0, 0), 'NetworkManager ignores keyfiles others can read'
    profile = text(files, keyfile)
    for line in ('type=ethernet', 'interface-name=eth0', 'method=auto', 'dhcp-hostname=nm1.test', 'dhcp-send-hostname=true'):
        assert line in profile.splitlines(), line
    assert files['/etc/network/interfaces'] is None, 'no ifupdown stanza that would take the device from NetworkManager'
    assert files['/var/lib/NetworkManager/secret_key'] is None
    assert files['/var/lib/NetworkManager/internal-5c1a7b4e-0b1e-4c5d-9a0e-1f2d3c4b5a69-eth0.lease'] is None
    assert sorted(k.split()[0] for k in run.last['ssh_host_keys']) == ['ecdsa-sha2-nistp256', 'ssh-ed25519', 'ssh-rsa'], \
        'an image with sshd and no host keys gets rsa, ecdsa and ed25519'
    for key_type in KEY_TYPES:
        private = files['/etc/ssh/ssh_host_%s_key' % key_type]
        assert (private['mode'], private['uid'], private['gid']) == (0o600, 0, 0)
        assert files['/etc/ssh/ssh_host_%s_key.pub' % key_type]['mode'] == 0o644
        assert public_of(private['data'], tmp_path) in [' '.join(k.split()[:2]) for k in run.last['ssh_host_keys']]


def test_cloud_init_image_gets_a_nocloud_seed_that_agrees(cloud, testbed, variants, made):
    made.append(('host0', 'ci1.test'))
    run = clone(cloud, image='debci.original', hostname='ci1.test', host='host0', start=False, ssh_authorized_keys=[SSH_KEY],
                cloud_init_user_data=USER_DATA)
    assert run.rc == 0, run
    seed = '/var/lib/cloud/seed/nocloud/'
    files = read_disk(testbed, 'host0', clone_disk(run.last), [
        seed + 'meta-data', seed + 'user-data', seed + 'network-config', '/var/lib/cloud/instance', '/var/lib/cloud/instances',
        '/var/lib/cloud/data', '/var/lib/cloud/scripts/per-boot/keep-me', '/var/log/cloud-init.log', '/etc/network/interfaces',
        '/etc/network/interfaces.d/50-cloud-init', '/etc/hostname'])
    customization = run.last['result']['customization']
    instance_id = customization['cloud_init']['instance_id']
    assert instance_id.startswith('iid-maglica-') and instance_id != 'iid-image'
    assert yaml.safe_load(text(files, seed + 'meta-data')) == {'instance-id': instance_id, 'local-hostname': 'ci1.test'}
    user_data = text(files, seed + 'user-data')
    assert user_data.startswith('#cloud-config\n')
    merged = yaml.safe_load(user_data)
    assert merged['packages'] == ['nginx'] and merged['write_files'][0]['content'] == USER_SECRET, 'the user\'s keys are kept'
    assert merged['ssh_deletekeys'] is False and merged['ssh_genkeytypes'] == [] and merged['disable_root'] is False, 'ours win'
    assert merged['preserve_hostname'] is True and merged['fqdn'] == 'ci1.test' and merged['ssh_authorized_keys'] == [SSH_KEY]
    assert files[seed + 'user-data']['mode'] == 0o600
    assert yaml.safe_load(text(files, seed + 'network-config')) == {
        'version': 2, 'ethernets': {'eth0': {'dhcp4': True, 'dhcp4-overrides': {'hostname': 'ci1.test'}}}}
    for gone in ('/var/lib/cloud/instance', '/var/lib/cloud/instances', '/var/lib/cloud/data', '/var/log/cloud-init.log'):
        assert files[gone] is None, '%s: cloud-init must run as a new instance' % gone
    assert files['/var/lib/cloud/scripts/per-boot/keep-me'] is not None, 'the image\'s own scripts stay'
    # One stanza for eth0, in the file cloud-init rewrites from the same settings.
    assert 'eth0' not in text(files, '/etc/network/interfaces')
    assert 'source /etc/network/interfaces.d/*' in text(files, '/etc/network/interfaces')
    assert 'auto eth0\niface eth0 inet dhcp\n' in text(files, '/etc/network/interfaces.d/50-cloud-init')
    assert customization['network'] == {'device': 'eth0', 'configured_by': ['ifupdown']}
    assert text(files, '/etc/hostname') == 'ci1.test\n'

    # The user-data is a secret: masked in the diff and in job listings, never in a log line.
    assert USER_SECRET not in run.output
    assert '(secret content, changed)' in run.output and seed + 'user-data' in run.output
    assert cloud.job(run.last['job_id'])['args']['cloud_init_user_data'] == '(secret)'
    logs = [open(path, encoding='utf-8', errors='replace').read() for path in glob.glob(os.path.join(cloud.workdir, '*.log'))]
    assert logs and not any(USER_SECRET in log for log in logs)
    CLOUD_INIT_JOBS.append(run.last['job_id'])


def test_user_data_leaves_the_job_records_once_used(cloud, testbed):
    """The job log and the host worker's record drop SECRET_ARGS entries (cloud_init_user_data is one) once the host
    worker has the job / once it has finished: not even the database files hold it."""
    assert CLOUD_INIT_JOBS, 'runs after test_cloud_init_image_gets_a_nocloud_seed_that_agrees'
    assert_nowhere([USER_SECRET], everything_recorded(cloud, testbed, CLOUD_INIT_JOBS[0]), 'the user-data secret')


def test_user_data_that_is_not_yaml_fails_before_anything_is_made(cloud, testbed, variants):
    before = (testbed.domains('host0'), testbed.host_files('host0'), len(cloud.jobs()))
    run = clone(cloud, image='debci.original', hostname='ci2.test', host='host0', cloud_init_user_data='#cloud-config\npackages: [a\n')
    assert run.rc != 0 and run.failed, run
    assert 'cloud_init_user_data: #cloud-config is not valid YAML' in run.failed[0]['msg']
    assert (testbed.domains('host0'), testbed.host_files('host0'), len(cloud.jobs())) == before


def test_cli_reads_user_data_from_a_file_and_refuses_one_it_cannot_read(cloud, testbed, variants, tmp_path):
    env = dict(cloud.env, PYTHONPATH=MODULE_UTILS)
    base = [PYTHON, '-m', 'maglica.controller.cli', '--config', cloud.path, 'vm', 'clone', '--image', 'debci.original', '--hostname', 'ci3.test']
    missing = subprocess.run(base + ['--cloud-init-user-data', str(tmp_path / 'nosuch')], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, universal_newlines=True, env=env, check=False)
    assert missing.returncode == 2 and 'cannot read %s' % (tmp_path / 'nosuch') in missing.stderr
    bad = tmp_path / 'user-data'
    bad.write_text('echo not a cloud-init format\n')
    refused = subprocess.run(base + ['--cloud-init-user-data', str(bad)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             universal_newlines=True, env=env, check=False)
    assert refused.returncode == 1 and 'cloud_init_user_data must start with #cloud-config' in refused.stderr
    assert 'ci3.test' not in testbed.domains('host0')
