# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Names for the libvirt and libguestfs objects the host worker handles. Neither library has type stubs: to mypy
each is Any, and the name says which object a value is."""

from __future__ import annotations

from typing import Any

Conn = Any  # libvirt.virConnect: no stubs
Domain = Any  # libvirt.virDomain: no stubs
Pool = Any  # libvirt.virStoragePool: no stubs
Volume = Any  # libvirt.virStorageVol: no stubs
Stream = Any  # libvirt.virStream: no stubs
GuestFS = Any  # guestfs.GuestFS: no stubs
