"""Faults on request: set by the constructor / CLI flags, overridden at run time by `state_dir/faults.json`.

The control file holds the same keys as `FaultSpec` (e.g. `{"offline": true}` or `{"hang_commands":
["sleep"]}`); it is re-read whenever its modification time changes, so a test flips a fault while the phone
serves. Keys present in the file win over the constructor's; deleting the file restores the constructor's
faults.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from profilers.virtual_phone.errors import VirtualPhoneError

CONTROL_FILE = "faults.json"


class FaultSpecError(VirtualPhoneError):
    """The fault control file or a fault flag holds a value the phone cannot use."""


@dataclass(frozen=True)
class FaultSpec:
    """Which faults a virtual phone shows; the default is a healthy phone."""

    offline: bool = False
    """Close every connection (new ones at once, live ones at their next message) until cleared."""
    drop_after_messages: int | None = None
    """Close a connection after it has received this many messages from the client."""
    hang_commands: tuple[str, ...] = ()
    """A shell command containing one of these substrings never answers ("*" matches every command)."""
    garbage_benchmark: bool = False
    """The benchmark program prints garbage instead of its report (and still exits 0)."""
    slow_transfer_bytes_per_s: float | None = None
    """Push and pull move at most this many bytes per second."""
    no_space: bool = False
    """Every push fails with "No space left on device"."""

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> FaultSpec:
        """Build a spec from JSON-like data, naming the offending key on error."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(raw) - names
        if unknown:
            raise FaultSpecError(f"unknown fault(s) {sorted(unknown)}; known: {sorted(names)}")
        values: dict[str, Any] = {}
        for key, value in raw.items():
            try:
                if key in ("offline", "garbage_benchmark", "no_space"):
                    if not isinstance(value, bool):
                        raise TypeError("expected true or false")
                    values[key] = value
                elif key == "drop_after_messages":
                    values[key] = None if value is None else int(value)
                elif key == "slow_transfer_bytes_per_s":
                    values[key] = None if value is None else float(value)
                    if values[key] is not None and values[key] <= 0:
                        raise ValueError("must be positive")
                elif key == "hang_commands":
                    if isinstance(value, str) or not all(isinstance(v, str) for v in value):
                        raise TypeError("expected a list of strings")
                    values[key] = tuple(value)
            except (TypeError, ValueError) as exc:
                raise FaultSpecError(f"fault {key!r}: {exc}") from exc
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (the format of the control file)."""
        out = dataclasses.asdict(self)
        out["hang_commands"] = list(self.hang_commands)
        return out

    def hangs(self, command: str) -> bool:
        """True when `command` must never answer."""
        return any(pat == "*" or pat in command for pat in self.hang_commands)


@dataclass
class FaultControl:
    """The faults in force for one phone: the constructor's spec overlaid with the control file."""

    state_dir: Path
    base: FaultSpec = field(default_factory=FaultSpec)
    _cached: FaultSpec | None = None
    _mtime: tuple[int, int, int] | None = None

    @property
    def path(self) -> Path:
        """The control file."""
        return self.state_dir / CONTROL_FILE

    def current(self) -> FaultSpec:
        """The faults in force now (re-reads the control file when it changed; a broken file is ignored)."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            self._cached, self._mtime = None, None
            return self.base
        # mtime alone can repeat within one clock tick; inode and size change with each rewrite too.
        mtime = (st.st_mtime_ns, st.st_ino, st.st_size)
        if self._cached is not None and mtime == self._mtime:
            return self._cached
        try:
            overrides = json.loads(self.path.read_text() or "{}")
            merged = {**self.base.to_dict(), **overrides}
            spec = FaultSpec.from_dict(merged)
        except (json.JSONDecodeError, FaultSpecError, OSError, TypeError):
            # A half-written or invalid control file must not take the phone down: keep the last good spec.
            return self._cached or self.base
        self._cached, self._mtime = spec, mtime
        return spec

    def set(self, **changes: Any) -> FaultSpec:
        """Write `changes` into the control file (atomically) and return the faults now in force."""
        try:
            existing = json.loads(self.path.read_text()) if self.path.exists() else {}
        except json.JSONDecodeError:
            existing = {}
        merged = {**existing, **changes}
        FaultSpec.from_dict({**self.base.to_dict(), **merged})  # validate before writing
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(merged))
        os.replace(tmp, self.path)
        return self.current()

    def clear(self) -> None:
        """Remove the control file: back to the constructor's faults."""
        self.path.unlink(missing_ok=True)
        self._cached, self._mtime = None, None
