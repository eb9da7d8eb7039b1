# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Exceptions of the Maglica library. Modules turn them into fail_json(msg=...)."""

from __future__ import annotations

from typing import Any, Dict, Optional


class MaglicaError(Exception):
    """Base class: the message is meant for the user as it is."""


class ConfigError(MaglicaError):
    """The configuration is missing, unreadable or invalid."""


class HostError(MaglicaError):
    """A hypervisor could not be reached or refused an operation."""


class NotFoundError(MaglicaError):
    """An image, VM or job that was asked for does not exist."""


class ConflictError(MaglicaError):
    """The request clashes with what exists (name in use, image already there)."""


class MessageError(MaglicaError):
    """A message does not validate against its schema."""


class DispatchError(MaglicaError):
    """The client worker could not be reached or did not answer in time."""


class StalePlacement(DispatchError):
    """The client worker refused a clone: its host got other reservations after the library chose it. Plan again."""


class JobFailed(MaglicaError):
    """A job ended failed or expired."""

    def __init__(self, message: str, job: Optional[Dict[str, Any]] = None) -> None:
        super().__init__(message)
        self.job: Dict[str, Any] = job or {}


class MissingDependency(MaglicaError):
    """A third-party Python library the operation needs is not importable."""

    def __init__(self, library: str, error: str) -> None:
        super().__init__('the Python library %s is required: %s' % (library, error))
        self.library = library
        self.error = error
