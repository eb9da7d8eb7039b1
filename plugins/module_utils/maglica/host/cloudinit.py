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
import email
import email.policy
from email.message import Message
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple

from . import deps
from .errors import MessageError

if TYPE_CHECKING:
    from .customize import GuestSettings

OPTION = 'cloud_init_user_data'
CLOUD_CONFIG = '#cloud-config'
# cloud-init's own user-data formats, by how they start (cloudinit/handlers INCLUSION_TYPES_MAP), longest first.
FORMATS = (
    ('#cloud-config-archive', 'text/cloud-config-archive'),
    ('#cloud-config-jsonp', 'text/cloud-config-jsonp'),
    ('#cloud-boothook', 'text/cloud-boothook'),
    ('#include-once', 'text/x-include-once-url'),
    ('#cloud-config', 'text/cloud-config'),
    ('## template: jinja', 'text/jinja2'),
    ('#part-handler', 'text/part-handler'),
    ('#upstart-job', 'text/upstart-job'),
    ('#include', 'text/x-include-url'),
    ('#!', 'text/x-shellscript'),
)
# cloud-config keys the user may not set: they would replace the host keys whose known_hosts lines we return.
REFUSED_KEYS = ('ssh_keys',)
# How cloud-init merges our parts into what came before (cloudinit/mergers): the scalars part replaces the
# user's values; the keys part appends our authorized keys to the user's list instead of replacing it.
MERGE_REPLACE = 'dict(replace)+list()+str()'
MERGE_APPEND_LISTS = 'dict(no_replace,recurse_list)+list(append)+str()'


def yaml_module():
    return deps.load('yaml')


def dump(data: Any) -> str:
    """YAML that reads back as exactly `data`: safe_dump quotes strings like `null`, `on`, `yes` or `1e3`."""
    return yaml_module().safe_dump(data, default_flow_style=False, sort_keys=False)


def parse_user_data(text: str, where: str = OPTION) -> Tuple[str, Any]:
    """('cloud-config', mapping) for a #cloud-config document, else ('parts', [email.message.Message]).

    A clear MessageError naming `where` when the text is no user-data format cloud-init knows,
    not valid YAML, not a mapping, or sets a key that would replace our host keys.
    """
    head = text.lstrip()
    if head.split('\n', 1)[0].rstrip() == CLOUD_CONFIG:
        return 'cloud-config', parse_cloud_config(text, where)
    if 'mime-version:' in text[:4096].lower():  # cloud-init's own test (cloudinit/user_data.py convert_string)
        message = email.message_from_string(text, policy=email.policy.compat32)
        parts = [part for part in message.walk() if part.get_content_maintype() != 'multipart']
        if not parts:
            raise MessageError('%s: the MIME message has no parts' % where)
        for index, part in enumerate(parts):
            if part.get_content_type() == 'text/cloud-config':
                payload = part.get_payload(decode=True)
                body = payload.decode('utf-8', 'replace') if isinstance(payload, bytes) else ''
                parse_cloud_config(body, '%s (MIME part %d)' % (where, index + 1))
        return 'parts', parts
    content_type = format_of(head)
    if content_type is None:
        others = ', '.join(prefix for prefix, _type in FORMATS if prefix != CLOUD_CONFIG)
        raise MessageError('%s must start with #cloud-config, another cloud-init user-data header (%s) or be a MIME '
                           'multipart message; it starts with %r' % (where, others, head.split('\n', 1)[0][:40]))
    return 'parts', [MIMEText(text, content_type.split('/', 1)[1], 'utf-8')]


def format_of(text: str) -> Optional[str]:
    lowered = text.lower()
    for prefix, content_type in FORMATS:
        if lowered.startswith(prefix):
            return content_type
    return None


def parse_cloud_config(text: str, where: str) -> Dict[str, Any]:
    yaml = yaml_module()
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise MessageError('%s: #cloud-config is not valid YAML: %s' % (where, str(e).replace('\n', ' ')[:300]))
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise MessageError('%s: #cloud-config must be a YAML mapping, not %s' % (where, type(data).__name__))
    refused = [key for key in REFUSED_KEYS if key in data]
    if refused:
        raise MessageError('%s: %s would replace the SSH host keys that Maglica writes and returns for known_hosts; '
                           'leave it out' % (where, ', '.join(refused)))
    return data


def check_user_data(where: str, value: str) -> None:
    """Field check for messages.py: the user-data parses (the appliance is no place to find out)."""
    parse_user_data(value, where)


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


def parts_of(text: str) -> List[Message]:
    """The leaf parts of a MIME message (for tests and readers of the seed)."""
    message = email.message_from_string(text, policy=email.policy.compat32)
    return [part for part in message.walk() if part.get_content_maintype() != 'multipart']
