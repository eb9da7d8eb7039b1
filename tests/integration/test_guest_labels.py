# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""/etc/shadow keeps its mode and owner, and an SELinux guest gets labels for what we wrote (issue 10, Also).

Real libguestfs on the testbed's own images: the RHEL-like one has /etc/shadow 0000 and
SELinux on (a config, a file_contexts and labels on the files), the Debian one
root:shadow 0640. Customised with the library call the host worker makes, then read
back in a second appliance.
"""

from __future__ import annotations

import os

import pytest

from maglica.host import customize
from maglica import deps
from maglica.host import guest
import maglica_testbed

PASSWORD_HASH = '$6$saltsalt$Zm9vYmFyZm9vYmFyZm9vYmFyZm9vYmFyZm9vYmFyZm9vYmFyZm9vYmFy'
SSH_KEY = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMaglicaTestKeyOnlyForTests maglica@test'
SHADOW_T = b'system_u:object_r:shadow_t:s0'


@pytest.fixture(scope='module')
def customised(tmp_path_factory):
    """{family: (disk, customisation result)} for fresh copies of the rhel and debian test images."""
    bed = maglica_testbed.Testbed(1)  # its environment and image builder only: no libvirtd is started
    saved = dict(os.environ)
    os.environ.update({k: v for k, v in bed.env.items() if k.startswith('LIBGUESTFS')})
    work = tmp_path_factory.mktemp('labels')
    try:
        out = {}
        for family in ('rhel', 'debian'):
            disk = str(work / ('%s.qcow2' % family))
            bed.script('build_image.sh', family, disk)
            settings = guest.GuestSettings('labels.test', {'mode': 'dhcp'}, PASSWORD_HASH, [SSH_KEY])
            out[family] = (disk, customize.customize([(disk, 'qcow2')], settings))
        yield out
    finally:
        os.environ.clear()
        os.environ.update(saved)


def selinux_label(g, path):
    """The security.selinux attribute of `path` (without its trailing NUL), None when it has none."""
    for attr in g.getxattrs(path):
        if attr['attrname'] == 'security.selinux':
            return bytes(attr['attrval']).rstrip(b'\0')
    return None


@pytest.fixture(scope='module')
def read_back(customised):
    """{family: {...}} read from each customised disk, both in one read-only appliance."""
    guestfs = deps.load('guestfs')
    g = guestfs.GuestFS(python_return_dict=True)
    families = sorted(customised)
    for family in families:
        g.add_drive_opts(customised[family][0], format='qcow2', readonly=True)
    g.launch()
    try:
        found = {'setfiles': bool(g.feature_available(['selinuxrelabel']))}
        for index, family in enumerate(families):
            g.mount_ro('/dev/sd%s1' % 'abcdefgh'[index], '/')
            shadow = g.statns('/etc/shadow')
            found[family] = {
                'shadow_mode': shadow['st_mode'] & 0o7777, 'shadow_owner': (shadow['st_uid'], shadow['st_gid']),
                'shadow': g.read_file('/etc/shadow').decode(),
                'autorelabel': g.is_file('/.autorelabel'),
                'labels': {path: selinux_label(g, path)
                           for path in ('/etc/shadow', '/etc/hostname', '/etc/hosts', '/root/.ssh/authorized_keys')},
            }
            g.umount_all()
    finally:
        g.close()
    return found


def test_shadow_keeps_rhel_mode_0000_and_its_owner(read_back):
    rhel = read_back['rhel']
    assert rhel['shadow'].startswith('root:%s:' % PASSWORD_HASH)
    assert (oct(rhel['shadow_mode']), rhel['shadow_owner']) == ('0o0', (0, 0))


def test_shadow_keeps_debian_mode_0640_and_group_shadow(read_back):
    debian = read_back['debian']
    assert debian['shadow'].startswith('root:%s:' % PASSWORD_HASH)
    assert (oct(debian['shadow_mode']), debian['shadow_owner']) == ('0o640', (0, 42))


def test_files_rewritten_in_place_keep_their_selinux_label(read_back):
    labels = read_back['rhel']['labels']
    assert labels['/etc/shadow'] == SHADOW_T
    assert labels['/etc/hostname'] == b'system_u:object_r:hostname_etc_t:s0'
    assert labels['/etc/hosts'] == b'system_u:object_r:etc_t:s0'


def test_selinux_guest_gets_labels_for_what_we_wrote(customised, read_back):
    """With setfiles in the appliance the new files are labelled now; without it (Debian's libguestfs packages here
    carry no policycoreutils), /.autorelabel makes the guest relabel at its first boot, and the result says so."""
    result = customised['rhel'][1]
    if read_back['setfiles']:
        assert read_back['rhel']['labels']['/root/.ssh/authorized_keys'] == b'system_u:object_r:ssh_home_t:s0'
        assert not read_back['rhel']['autorelabel']
    else:
        assert read_back['rhel']['autorelabel'] and '/.autorelabel' in result['changed_files']
        assert any('/.autorelabel' in note and 'no setfiles' in note for note in result['notes']), result['notes']


def test_guest_without_selinux_gets_no_relabel(customised, read_back):
    result = customised['debian'][1]
    assert not read_back['debian']['autorelabel'] and '/.autorelabel' not in result['changed_files']
    assert not any('SELinux' in note for note in result['notes'])
