# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""cloud-init user-data as a job carries it (cloud_init_user_data): parsed and checked before it is sent and where it is used."""

from __future__ import annotations

import email
import email.policy
from email.mime.text import MIMEText
from typing import Any, Dict, Optional, Tuple

from .. import deps
from ..errors import MessageError

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


def yaml_module() -> deps.Library:
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
