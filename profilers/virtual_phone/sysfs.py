"""One simulated sysfs file (how to read it, and how root writes it) and the error a rejected write raises."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from profilers.virtual_phone.errors import VirtualPhoneError


class SysfsWriteError(VirtualPhoneError):
    """A write the kernel would reject; the message is the errno text (e.g. "Invalid argument")."""


@dataclass(frozen=True)
class SysfsNode:
    """One simulated sysfs file: how to read it and, if it is writable (by root only), how to write it."""

    read: Callable[[], str]
    write: Callable[[str], None] | None = None
