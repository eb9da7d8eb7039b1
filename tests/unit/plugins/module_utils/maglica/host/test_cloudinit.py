# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""cloudinit.py: the NoCloud seed's user-data and meta-data, and the user's own user-data merged in."""

from __future__ import annotations

import email
import email.policy

from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText

import pytest

from maglica.host import cloudinit
from maglica.protocol import messages
from maglica.errors import MessageError
from maglica.protocol import user_data
from maglica.host import guest

yaml = pytest.importorskip('yaml')
KEY = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMaglicaTestKeyOnlyForTests maglica@test'
OTHER_KEY = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIUsersOwnKey user@test'


def parts_of(text):
    """The leaf parts of a MIME message, as cloud-init reads the seed's user-data."""
    message = email.message_from_string(text, policy=email.policy.compat32)
    return [part for part in message.walk() if part.get_content_maintype() != 'multipart']


def settings(user_data=None, hostname='web1.example.com'):
    return guest.GuestSettings(hostname, ssh_authorized_keys=[KEY], cloud_init_user_data=user_data)


def cloud_config(text):
    assert text.startswith('#cloud-config\n')
    return yaml.safe_load(text)


def test_our_user_data_keeps_host_keys_root_and_hostname():
    data = cloud_config(cloudinit.user_data(settings()))
    assert data == {'preserve_hostname': True, 'hostname': 'web1', 'fqdn': 'web1.example.com', 'prefer_fqdn_over_hostname': True,
                    'ssh_deletekeys': False, 'ssh_genkeytypes': [], 'disable_root': False, 'ssh_authorized_keys': [KEY]}


def test_meta_data():
    assert yaml.safe_load(cloudinit.meta_data(settings(), 'iid-x')) == {'instance-id': 'iid-x', 'local-hostname': 'web1.example.com'}


def test_users_cloud_config_is_merged_and_ours_wins():
    theirs = ('#cloud-config\npackages: [nginx]\nssh_deletekeys: true\ndisable_root: true\nhostname: other\n'
              'ssh_authorized_keys: [%s, %s]\nwrite_files:\n  - path: /etc/motd\n    content: hello\n' % (OTHER_KEY, KEY))
    data = cloud_config(cloudinit.user_data(settings(theirs)))
    assert data['packages'] == ['nginx'] and data['write_files'] == [{'path': '/etc/motd', 'content': 'hello'}]
    assert data['ssh_deletekeys'] is False and data['disable_root'] is False and data['hostname'] == 'web1'
    assert data['ssh_authorized_keys'] == [OTHER_KEY, KEY], 'the user\'s keys and ours, once each'


def test_merge_is_deep_and_ours_wins_on_our_keys():
    merged = cloudinit.merge({'a': {'x': 1, 'y': 2}, 'b': [1], 'ssh_authorized_keys': ['k1']},
                             {'a': {'y': 3, 'z': 4}, 'b': [2], 'ssh_authorized_keys': ['k2', 'k1']})
    assert merged == {'a': {'x': 1, 'y': 3, 'z': 4}, 'b': [2], 'ssh_authorized_keys': ['k1', 'k2']}


@pytest.mark.parametrize('text, message', [
    ('#cloud-config\npackages: [unclosed\n', 'cloud_init_user_data: #cloud-config is not valid YAML'),
    ('#cloud-config\n- a\n- list\n', 'cloud_init_user_data: #cloud-config must be a YAML mapping, not list'),
    ('#cloud-config\nssh_keys:\n  rsa_private: x\n', 'cloud_init_user_data: ssh_keys would replace the SSH host keys'),
    ('echo hello\n', "cloud_init_user_data must start with #cloud-config, another cloud-init user-data header"),
    ('', 'cloud_init_user_data must start with #cloud-config'),
])
def test_bad_user_data_is_refused_naming_the_option(text, message):
    with pytest.raises(MessageError, match=message.replace('[', r'\[')):
        user_data.parse_user_data(text)


def test_empty_cloud_config_is_ours_alone():
    assert cloud_config(cloudinit.user_data(settings('#cloud-config\n'))) == cloud_config(cloudinit.user_data(settings()))


def test_a_script_travels_beside_ours_in_a_multipart_message():
    script = '#!/bin/sh\necho made by the user > /root/user-was-here\n'
    text = cloudinit.user_data(settings(script))
    assert 'mime-version:' in text[:4096].lower(), 'cloud-init takes it for MIME only with this header near the top'
    parts = parts_of(text)
    assert [p.get_content_type() for p in parts] == ['text/x-shellscript', 'text/cloud-config', 'text/cloud-config']
    assert parts[0].get_payload(decode=True).decode() == script
    keys, ours = (yaml.safe_load(p.get_payload(decode=True).decode()) for p in parts[1:])
    assert keys == {'ssh_authorized_keys': [KEY]}
    assert parts[1]['Merge-Type'] == 'dict(no_replace,recurse_list)+list(append)+str()', 'our keys join the user\'s'
    assert ours['ssh_deletekeys'] is False and ours['ssh_genkeytypes'] == [] and 'ssh_authorized_keys' not in ours
    assert parts[2]['Merge-Type'] == 'dict(replace)+list()+str()', 'the last part replaces what the user set on our keys'


def test_a_users_mime_message_is_flattened_and_its_cloud_config_checked():
    mime = cloudinit.user_data(settings('#!/bin/sh\ntrue\n'))  # any MIME multipart will do
    text = cloudinit.user_data(settings(mime))
    assert [p.get_content_type() for p in parts_of(text)] == ['text/x-shellscript'] + ['text/cloud-config'] * 4
    message = MIMEMultipart()
    message.attach(MIMEText('#cloud-config\nssh_keys: {rsa_private: x}\n', 'cloud-config'))
    with pytest.raises(MessageError, match=r'cloud_init_user_data \(MIME part 1\): ssh_keys would replace'):
        user_data.parse_user_data(message.as_string())
    message = MIMEMultipart()
    message.attach(MIMEText('#cloud-config\n[1, 2\n', 'cloud-config'))
    with pytest.raises(MessageError, match=r'\(MIME part 1\): #cloud-config is not valid YAML'):
        user_data.parse_user_data(message.as_string())
    with pytest.raises(MessageError, match='the MIME message has no parts'):
        user_data.parse_user_data('MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary="b"\n\n--b--\n')


@pytest.mark.parametrize('head, content_type', [
    ('#include\nhttp://example.com/x', 'text/x-include-url'), ('#include-once\nhttp://x', 'text/x-include-once-url'),
    ('#cloud-boothook\n#!/bin/sh\n', 'text/cloud-boothook'), ('#cloud-config-archive\n- a\n', 'text/cloud-config-archive'),
    ('## template: jinja\n#cloud-config\n', 'text/jinja2'), ('#part-handler\n', 'text/part-handler'),
])
def test_other_formats_get_their_content_type(head, content_type):
    assert user_data.format_of(head) == content_type
    kind, parts = user_data.parse_user_data(head)
    assert kind == 'parts' and parts[0].get_content_type() == content_type


def test_the_job_validates_user_data_and_listings_mask_it():
    args = {'image': 'i', 'hostname': 'h', 'clone_mode': 'full', 'start': True, 'cloud_init_user_data': '#cloud-config\n: [\n'}
    with pytest.raises(MessageError, match='job.args.cloud_init_user_data: #cloud-config is not valid YAML'):
        messages.new_job('host0', 'vm.clone', args)
    args['cloud_init_user_data'] = '#cloud-config\npassword: hunter2\n'
    job = messages.new_job('host0', 'vm.clone', args)
    assert messages.redact(job)['args']['cloud_init_user_data'] == '(secret)'
    assert 'hunter2' not in str(messages.redact(job))
    args['cloud_init_user_data'] = '#cloud-config\n' + 'x' * 70000
    with pytest.raises(MessageError, match='longer than'):
        messages.new_job('host0', 'vm.clone', args)
