# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The NoCloud seed of a clone whose image has cloud-init: meta-data, user-data and network-config.

cloud-init sees a new instance-id and runs as a new instance. Our part of the user-data makes it
agree with the offline customisation instead of undoing it: it keeps the SSH host keys we wrote
(so that the known_hosts lines we returned stay true), keeps root's authorized_keys usable, and
leaves the hostname we wrote. The user's own user-data (`cloud_init_user_data`) is merged in:
a `#cloud-config` document key by key (ours wins on our keys), any other format as parts of a
MIME multipart message beside ours, with merge headers so that ours still wins.
"""

from __future__ import annotations

import copy
import posixpath
import uuid
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from typing import TYPE_CHECKING, Any, Dict, Tuple

from ..protocol.user_data import CLOUD_CONFIG, dump, parse_user_data
from .guest import NOCLOUD_DIR, Guest
from .guest_network import netplan_config

if TYPE_CHECKING:
    from .guest import GuestSettings

# How cloud-init merges our parts into what came before (cloudinit/mergers): the scalars part replaces the
# user's values; the keys part appends our authorized keys to the user's list instead of replacing it.
MERGE_REPLACE = 'dict(replace)+list()+str()'
MERGE_APPEND_LISTS = 'dict(no_replace,recurse_list)+list(append)+str()'


def our_cloud_config(settings: GuestSettings) -> Dict[str, Any]:
    """Our part: keys that keep cloud-init from undoing the offline customisation."""
    return {
        # Our offline rewrite set /etc/hostname (the name as given) and /etc/hosts; cloud-init would write the
        # short name on Debian. preserve_hostname keeps its hands off; hostname/fqdn are still given so that the
        # modules that read them (update_etc_hosts when the image manages /etc/hosts) say the same.
        'preserve_hostname': True,
        'hostname': settings.short,
        'fqdn': settings.hostname,
        'prefer_fqdn_over_hostname': True,
        # On a new instance cloud-init deletes the host keys and makes others by default: ours must stay,
        # or the known_hosts lines we returned would be false.
        'ssh_deletekeys': False,
        'ssh_genkeytypes': [],
        # Else cloud-init rewrites root's authorized_keys with a "Please login as the user debian" command.
        'disable_root': False,
        'ssh_authorized_keys': list(settings.ssh_authorized_keys),
    }


def merge(theirs: Any, ours: Any, path: Tuple[str, ...] = ()) -> Any:
    """Deep merge: mappings key by key, ours winning on every key we set; ssh_authorized_keys are the union."""
    if isinstance(theirs, dict) and isinstance(ours, dict):
        merged = copy.deepcopy(theirs)
        for key, value in ours.items():
            merged[key] = merge(theirs[key], value, path + (key,)) if key in theirs else copy.deepcopy(value)
        return merged
    if path == ('ssh_authorized_keys',) and isinstance(theirs, list) and isinstance(ours, list):
        return theirs + [key for key in ours if key not in theirs]
    return copy.deepcopy(ours)


def user_data(settings: GuestSettings) -> str:
    """The user-data file: one #cloud-config, or a MIME multipart message when the user's is another format."""
    ours = our_cloud_config(settings)
    if not settings.cloud_init_user_data:
        return CLOUD_CONFIG + '\n' + dump(ours)
    kind, theirs = parse_user_data(settings.cloud_init_user_data)
    if kind == 'cloud-config':
        return CLOUD_CONFIG + '\n' + dump(merge(theirs, ours))
    message = MIMEMultipart()
    for part in theirs:
        message.attach(part)
    keys = {'ssh_authorized_keys': ours.pop('ssh_authorized_keys')}
    # cloud-init merges cloud-config parts in order, each into what came before: ours come last.
    for data, how in ((keys, MERGE_APPEND_LISTS), (ours, MERGE_REPLACE)):
        part = MIMEText(CLOUD_CONFIG + '\n' + dump(data), 'cloud-config', 'utf-8')
        part['Merge-Type'] = how
        message.attach(part)
    return message.as_string()


def meta_data(settings: GuestSettings, instance_id: str) -> str:
    return dump({'instance-id': instance_id, 'local-hostname': settings.hostname})


CLOUD_INIT = '/usr/bin/cloud-init'
CLOUD_INIT_DISABLED = '/etc/cloud/cloud-init.disabled'
CLOUD_DIR = '/var/lib/cloud'


def has_cloud_init(guest: Guest) -> bool:
    return guest.g.is_file(CLOUD_INIT, followsymlinks=True) and not guest.exists(CLOUD_INIT_DISABLED)


def forget_cloud_init_instance(guest: Guest) -> None:
    """What `cloud-init clean` removes: the instance state and logs; the seed and the image's own scripts stay."""
    for name in ('instance', 'instances', 'data', 'sem', 'handlers'):
        guest.remove(posixpath.join(CLOUD_DIR, name))
    for path in guest.glob('/var/log/cloud-init*.log'):
        guest.remove(path)


def customize_cloud_init(guest: Guest, settings: GuestSettings, device: str) -> str:
    """A NoCloud seed with a fresh instance-id, after the image's instance state is gone. Returns the instance-id."""
    forget_cloud_init_instance(guest)
    instance_id = 'iid-maglica-%s' % uuid.uuid4().hex
    guest.g.mkdir_p(NOCLOUD_DIR)
    guest.write(NOCLOUD_DIR + '/meta-data', meta_data(settings, instance_id), mode=0o644, owner=(0, 0))
    guest.write(NOCLOUD_DIR + '/user-data', user_data(settings), mode=0o600, owner=(0, 0))
    guest.write(NOCLOUD_DIR + '/network-config', dump(netplan_config(settings, device)), mode=0o644, owner=(0, 0))
    return instance_id
