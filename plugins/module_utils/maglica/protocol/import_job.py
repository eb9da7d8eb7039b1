# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What an image.import job carries: its choices, its limits and their defaults, and the units of the sparse
streams that upload and fetch write."""

from __future__ import annotations

from typing import Any, Dict, Iterable, NamedTuple, Tuple

from ..errors import MaglicaError, MessageError
from . import messages

CHUNK = 1024 * 1024
BLOCK = 4096
ZERO_BLOCK = bytes(BLOCK)
ZERO_CHUNK = bytes(CHUNK)
DISK_MODES = messages.DISK_MODES
FIRMWARES = messages.FIRMWARES
DOMAIN_TYPES = messages.DOMAIN_TYPES
# Defaults of the job's limits (messages.ACTIONS['image.import']); the library sends none unless the user sets them.
# 1 TiB of virtual size: over ten times any published cloud image, and a bound on what the image's thin disk and
# each of its clones may grow to. 64 GiB downloaded: a raw image of a large disk fits; an endless body stops there.
# 6 hours: 64 GiB at 3 MB/s.
DEFAULT_MAX_VIRTUAL_SIZE = 2 ** 40
DEFAULT_MAX_DOWNLOAD_SIZE = 64 * 2 ** 30
DEFAULT_MAX_DOWNLOAD_TIME = 6 * 3600
# Where a redirect may lead by default: https only (http->https and https->https); never file://, ftp:// or data:.
DEFAULT_REDIRECT_SCHEMES = ('https',)
REDIRECT_SCHEMES = messages.REDIRECT_SCHEMES


class Limits(NamedTuple):
    """What one import may take: bytes and seconds of its download, where redirects may lead, the directories
    file:// URLs may name (the host worker's configuration, never the job's), the image's virtual size."""
    max_download_size: int = DEFAULT_MAX_DOWNLOAD_SIZE
    max_download_time: float = DEFAULT_MAX_DOWNLOAD_TIME
    redirect_schemes: Tuple[str, ...] = DEFAULT_REDIRECT_SCHEMES
    file_dirs: Tuple[str, ...] = ()
    max_virtual_size: int = DEFAULT_MAX_VIRTUAL_SIZE


def job_limits(args: Dict[str, Any], file_dirs: Iterable[str] = ()) -> Limits:
    """The limits of an image.import job: its arguments (validated by messages.ACTIONS), else the defaults."""
    return Limits(max_download_size=args.get('max_download_size') or DEFAULT_MAX_DOWNLOAD_SIZE,
                  max_download_time=args.get('max_download_time') or DEFAULT_MAX_DOWNLOAD_TIME,
                  redirect_schemes=tuple(args.get('redirect_schemes') or DEFAULT_REDIRECT_SCHEMES),
                  file_dirs=tuple(file_dirs),
                  max_virtual_size=args.get('max_virtual_size') or DEFAULT_MAX_VIRTUAL_SIZE)


def parse_checksum(text: str) -> str:
    """`sha256:HEX` (or the 64 hex digits alone) -> 'sha256:hex'. Other algorithms are refused by name."""
    try:
        return messages.sha256_checksum('checksum', text)
    except MessageError as e:
        raise MaglicaError(str(e))


def check_url(where: str, value: str) -> None:
    """A URL a host worker may fetch: http, https or file:///path."""
    try:
        messages.fetch_url(where, value)
    except MessageError as e:
        raise MaglicaError(str(e))
