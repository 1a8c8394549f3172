"""A devfreq device of the simulated SoC (GPU, NPU, memory bus): governor, limits, load and its sysfs files.

Semantics, as the kernel's devfreq core and governors have them (frequencies in Hz):
- `min_freq` / `max_freq` take any number and clamp it to the table (min rounds up to an OPP, max down);
  a min above max is accepted and max wins (frequency-QoS, as for cpufreq).
- `performance` runs at the top of [min, max], `powersave` at its bottom, `userspace` at `userspace/set_freq`
  (writable only while that governor is active), and every other governor of the table (msm-adreno-tz,
  simple_ondemand, bw_hwmon…) is load-driven: under load it picks among the upper half of the allowed
  table, run by run, so unpinned runs wander; idle it sits at the bottom of the range.
- While the die is above the trip point the clock is capped (the cap is the SoC's, passed in), so a pin
  verified by reading `cur_freq` shows the cap.
- `hold_s` (the memory bus): after the last run ends, `cur_freq` keeps that run's level for `hold_s`
  (devfreq polling), so reading it right after a run gives the level the run had.

The owner (soc.py) holds the lock and the clock; this module is state and its files only.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from profilers.virtual_phone.profile import LOAD_FREE_GOVERNORS, DevfreqSpec
from profilers.virtual_phone.sysfs import SysfsNode, SysfsWriteError

DEVFREQ_ROOT = "/sys/class/devfreq"


@dataclass
class DevfreqDevice:
    """The mutable state of one devfreq device."""

    spec: DevfreqSpec
    governor: str
    min_hz: int
    max_hz: int
    setpoint_hz: int
    hold_s: float = 0.0
    busy: int = 0
    last_run_hz: int = 0
    last_end: float | None = None

    @classmethod
    def from_spec(cls, spec: DevfreqSpec, hold_s: float = 0.0) -> DevfreqDevice:
        """A device as at boot: default governor, the whole table allowed."""
        table = spec.frequencies_hz
        return cls(spec, spec.default_governor, table[0], table[-1], table[0], hold_s)

    @property
    def table(self) -> tuple[int, ...]:
        """The clock table, ascending (Hz)."""
        return self.spec.frequencies_hz

    @property
    def f_max(self) -> int:
        """The top of the table (Hz)."""
        return self.spec.frequencies_hz[-1]

    def allowed(self) -> tuple[int, int]:
        """The effective [min, max] (a min above max: max wins)."""
        return min(self.min_hz, self.max_hz), self.max_hz

    def snap_down(self, hz: int) -> int:
        """The highest OPP at or below `hz` (the lowest OPP if none)."""
        fitting = [f for f in self.table if f <= hz]
        return fitting[-1] if fitting else self.table[0]

    def snap_up(self, hz: int) -> int:
        """The lowest OPP at or above `hz` (the highest OPP if none)."""
        fitting = [f for f in self.table if f >= hz]
        return fitting[0] if fitting else self.table[-1]

    def load_driven(self) -> bool:
        """True for a governor that follows load (anything but performance, powersave, userspace)."""
        return self.governor not in LOAD_FREE_GOVERNORS

    def idle_frequency(self) -> int:
        """The clock with no load: set by the governor within [min, max]."""
        lo, hi = self.allowed()
        if self.governor == "performance":
            return self.snap_down(hi)
        if self.governor == "userspace":
            return self.snap_down(min(max(self.setpoint_hz, lo), hi))
        return self.snap_up(lo)

    def pick_run(self, rng: random.Random, cap_hz: int) -> int:
        """The clock of the next run under load (governor, then the thermal cap); remembered as the last."""
        if self.load_driven():
            lo, hi = self.allowed()
            allowed = [f for f in self.table if lo <= f <= hi] or [self.snap_up(lo)]
            f = rng.choice(allowed[len(allowed) // 2 :])
        else:
            f = self.idle_frequency()
        f = min(f, cap_hz)
        self.last_run_hz = f
        return f

    def current(self, now: float, cap_hz: int) -> int:
        """What `cur_freq` shows at `now`: the run's level while busy (or held), else the idle clock."""
        held = self.last_end is not None and now - self.last_end < self.hold_s
        f = self.last_run_hz if (self.busy or held) and self.last_run_hz else self.idle_frequency()
        return min(f, cap_hz)

    def parse_hz(self, value: str) -> int:
        """A written frequency, or SysfsWriteError("Invalid argument")."""
        try:
            hz = int(value)
        except ValueError:
            raise SysfsWriteError("Invalid argument") from None
        if hz < 0:
            raise SysfsWriteError("Invalid argument")
        return hz

    def set_governor(self, value: str) -> None:
        """Switch governor (only one of the table's)."""
        if value not in self.spec.governors:
            raise SysfsWriteError("Invalid argument")
        self.governor = value

    def set_min(self, value: str) -> None:
        """Store `min_freq`: rounded up to an OPP, clamped to the table."""
        self.min_hz = self.snap_up(min(self.parse_hz(value), self.f_max))

    def set_max(self, value: str) -> None:
        """Store `max_freq`: rounded down to an OPP, clamped to the table."""
        self.max_hz = self.snap_down(max(self.parse_hz(value), self.table[0]))

    def set_setpoint(self, value: str) -> None:
        """Store `userspace/set_freq` (only while the userspace governor is active)."""
        if self.governor != "userspace":
            raise SysfsWriteError("Invalid argument")
        self.setpoint_hz = self.snap_down(max(self.parse_hz(value), self.table[0]))


def devfreq_files(
    dev: DevfreqDevice, locked: Callable[[Callable[[], None]], None], cur_hz: Callable[[], int]
) -> dict[str, SysfsNode]:
    """The files of a devfreq directory (relative names); writes run through `locked` (root only: sysfs)."""

    def writer(setter: Callable[[str], None]) -> Callable[[str], None]:
        return lambda value: locked(lambda: setter(value))

    def read_setpoint() -> str:
        return str(dev.idle_frequency()) if dev.governor == "userspace" else "<unsupported>"

    return {
        "name": SysfsNode(lambda: dev.spec.name),
        "available_frequencies": SysfsNode(lambda: " ".join(str(f) for f in dev.table)),
        "available_governors": SysfsNode(lambda: " ".join(dev.spec.governors)),
        "governor": SysfsNode(lambda: dev.governor, writer(dev.set_governor)),
        "min_freq": SysfsNode(lambda: str(dev.min_hz), writer(dev.set_min)),
        "max_freq": SysfsNode(lambda: str(dev.max_hz), writer(dev.set_max)),
        "cur_freq": SysfsNode(lambda: str(cur_hz())),
        "target_freq": SysfsNode(lambda: str(cur_hz())),
        "polling_interval": SysfsNode(lambda: "50"),
        "userspace/set_freq": SysfsNode(read_setpoint, writer(dev.set_setpoint)),
    }
