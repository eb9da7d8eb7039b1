# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""known_hosts lines for a clone: its names and the public host keys its host worker reported, parsed first."""

from __future__ import annotations

import ipaddress
import re
from typing import Iterable, List, Optional, Sequence

from ..errors import MaglicaError

# What a known_hosts line may name: a host name, or an IP address (parsed by ipaddress). Never a pattern
# (*, ?, !), a list (,), a bracket or a line break: each would make the key trusted for hosts of someone's choosing.
HOST_NAME_RE = re.compile(r'[A-Za-z0-9_][A-Za-z0-9_.-]{0,252}')
PUBLIC_KEY_TYPE_RE = re.compile(r'[a-z0-9][a-z0-9@.-]{0,63}')
PUBLIC_KEY_BLOB_RE = re.compile(r'[A-Za-z0-9+/]{16,16384}={0,3}')


def known_hosts_name(name: str) -> str:
    """`name` as a known_hosts line may name it: an IP address as ipaddress writes it, or a host name.

    Raises MaglicaError for anything else (patterns, lists, brackets, spaces, line breaks, scope ids).
    """
    if isinstance(name, str):
        try:
            address = ipaddress.ip_address(name)
        except ValueError:
            address = None
        if address is not None and not (isinstance(address, ipaddress.IPv6Address) and address.scope_id is not None):
            return str(address)
        if address is None and HOST_NAME_RE.fullmatch(name):
            return name
    raise MaglicaError('%s is not a host name or an IP address: it cannot name a host in known_hosts' % repr(name)[:80])


def known_hosts_lines(names: Sequence[str], public_keys: Iterable[str], port: Optional[int] = None) -> List[str]:
    """known_hosts lines naming `names` (host names, addresses) for each public key line `type base64 [comment]`.

    With a `port` other than 22, each name is written `[name]:port`, as ssh looks it up.
    """
    hosts = []
    for name in names:
        if not name:
            continue
        name = known_hosts_name(name)
        entry = '[%s]:%d' % (name, port) if port and port != 22 else name
        if entry not in hosts:
            hosts.append(entry)
    if not hosts:
        raise MaglicaError('known_hosts lines need at least one host name or address')
    lines = []
    for key in public_keys:
        words = key.split(' ') if isinstance(key, str) else []
        if len(words) < 2 or not PUBLIC_KEY_TYPE_RE.fullmatch(words[0]) or not PUBLIC_KEY_BLOB_RE.fullmatch(words[1]):
            raise MaglicaError('%r is not an SSH public key line (TYPE BASE64 [COMMENT])' % str(key)[:80])
        lines.append('%s %s %s' % (','.join(hosts), words[0], words[1]))
    return lines
