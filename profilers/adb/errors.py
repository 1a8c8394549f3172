"""The one exception hierarchy of ``profilers.adb``: everything a caller may need to act on."""

from __future__ import annotations


class ProfilerError(Exception):
    """Base of every error raised by the device session, probe, pinning and profiler."""


class DeviceConnectionError(ProfilerError):
    """The phone could not be reached, refused the connection or dropped it mid-command."""


class DeviceTimeoutError(DeviceConnectionError):
    """A command or transfer did not finish within its timeout (the connection is reset)."""


class CommandFailedError(ProfilerError):
    """A shell command exited non-zero; carries the command, exit code and output (stderr is merged)."""

    def __init__(self, command: str, exit_code: int, output: str) -> None:
        tail = output.strip()[-500:]
        super().__init__(f"command {command!r} exited with status {exit_code}: {tail or '(no output)'}")
        self.command = command
        self.exit_code = exit_code
        self.output = output


class OutputParseError(ProfilerError):
    """A benchmark program printed something that is not its report."""


class PushRefusedError(ProfilerError):
    """The phone refused a file push (no space, read-only path, …)."""


class FrequencyPinError(ProfilerError):
    """A frequency could not be pinned: unknown cluster, unsupported frequency, no root, sysfs refused."""


class CooldownTimeoutError(ProfilerError):
    """The phone did not cool below the limit before the deadline."""


class UnsupportedRunError(ProfilerError):
    """A run the phone or the program cannot make: a unit it lacks, a precision the unit does not take, an
    accelerator option that does not reach the unit, a program or model format that is not available."""


class PrecisionConversionError(ProfilerError):
    """The model could not be converted to the requested precision (fp16 conversion, int8 quantisation)."""
