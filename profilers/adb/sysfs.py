"""Reading and writing small kernel files (sysfs, procfs) through a device session.

Reads are batched: one shell round trip reads many files, each bracketed by markers that carry
``cat``'s exit status, so a missing file reads as ``None`` instead of failing the batch. Writes need
root: through ``su -c`` unless the shell itself already runs as uid 0 (``adb root``).
"""

from __future__ import annotations

import re
import shlex
import uuid

from profilers.adb.errors import CommandFailedError, FrequencyPinError
from profilers.adb.session import DeviceSession


def read_files(session: DeviceSession, paths: list[str]) -> dict[str, str | None]:
    """Contents (stripped) of each path, ``None`` for a path that cannot be read; one round trip."""
    if not paths:
        return {}
    tag = uuid.uuid4().hex[:8]
    parts = [
        f'echo "@B{tag}{i}@"; cat {shlex.quote(p)} 2>&1; echo "@E{tag}{i}:$?@"' for i, p in enumerate(paths)
    ]
    out = session.shell("; ".join(parts)).stdout
    result: dict[str, str | None] = {}
    for i, path in enumerate(paths):
        m = re.search(rf"@B{tag}{i}@\r?\n(.*?)@E{tag}{i}:(\d+)@", out, re.S)
        result[path] = m.group(1).strip() if m and m.group(2) == "0" else None
    return result


def read_file(session: DeviceSession, path: str) -> str | None:
    """Contents (stripped) of one path, ``None`` when it cannot be read."""
    return read_files(session, [path])[path]


def list_dir(session: DeviceSession, path: str) -> list[str]:
    """Names in a device directory (empty when it is missing)."""
    result = session.shell(f"ls {shlex.quote(path)} 2>&1")
    if result.exit_code != 0:
        return []
    return [name for name in result.stdout.split() if name]


def is_root_shell(session: DeviceSession) -> bool:
    """True when the adb shell itself runs as uid 0 (``adb root`` / a root adbd)."""
    return session.shell("id 2>&1").stdout.startswith("uid=0(")


def has_su(session: DeviceSession) -> bool:
    """True when ``su -c id`` gives uid 0 (a rooted phone)."""
    result = session.shell("su -c id 2>&1")
    return result.exit_code == 0 and "uid=0(" in result.stdout


def write_file(session: DeviceSession, path: str, value: str | int, *, use_su: bool) -> None:
    """Write ``value`` to a root-only kernel file; FrequencyPinError with the kernel's answer on failure."""
    inner = f"echo {shlex.quote(str(value))} > {shlex.quote(path)}"
    command = f"su -c {shlex.quote(inner)}" if use_su else inner
    try:
        session.run(f"{command} 2>&1")
    except CommandFailedError as exc:
        raise FrequencyPinError(f"writing {value} to {path} failed: {exc.output.strip() or exc}") from exc
