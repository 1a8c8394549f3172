"""The virtual phone's exception hierarchy: everything it raises derives from `VirtualPhoneError`."""

from __future__ import annotations


class VirtualPhoneError(Exception):
    """Base class of every error the virtual phone raises."""


class ProfileError(VirtualPhoneError):
    """A device profile is missing or malformed."""


class ProtocolError(VirtualPhoneError):
    """A client sent a message that breaks the ADB wire protocol; its connection is closed."""


class PhoneStateError(VirtualPhoneError):
    """The phone was used in the wrong state (e.g. `port` before `start()`)."""


def one_line(value: object, limit: int = 300) -> str:
    """`value` as one bounded log/answer line: an exception as `Type: message`, newlines flattened."""
    if isinstance(value, BaseException):
        text = f"{type(value).__name__}: {value}" if str(value) else type(value).__name__
    else:
        text = str(value)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
