"""The simulated SoC: cpufreq policies, GPU/NPU/bus devfreq devices, a first-order heat model, throttling.

Frequencies: each cluster is one cpufreq policy (`policyN`, N = its first CPU). The effective frequency of a
run is chosen by the governor (`performance` → max, `powersave` → min, `userspace` → `scaling_setspeed`, and
`schedutil`/`ondemand`/`conservative` → a load-driven pick that wanders from run to run), clamped to
[`scaling_min_freq`, `scaling_max_freq`], then capped while the die is above the trip point (throttling).

Accelerators (see devfreq.py for the governor semantics): the profile's `gpu` and `npu` are devfreq devices
with their vendor's node set — Adreno: `/sys/class/kgsl/kgsl-3d0/` (`gpu_model`, `gpuclk`,
`gpu_available_frequencies`, `max_gpuclk`, `gpu_busy_percentage`) whose `devfreq/` holds the same files as
`/sys/class/devfreq/<name>/`; Mali: `/sys/class/devfreq/<name>/` and `/sys/class/misc/mali0/device/gpuinfo`;
an NPU or any other: `/sys/class/devfreq/<name>/`. The memory bus (`bus`) is a devfreq device too; it runs
with accelerator load (a run's level is picked per accelerator run) and holds the last run's level briefly.
Only root writes governor / min_freq / max_freq / userspace/set_freq (the filesystem's write path).

Heat: one die temperature T with dT/dt = P − (T − ambient)/tau, P = heat_rate · (Σ over busy clusters of
(f / f_top)² + Σ over busy accelerators of weight · (f / f_max)²). Above the trip point every clock — CPU,
GPU, NPU — is capped to a falling fraction of its maximum. It is integrated lazily and exactly (P is
constant between two events), so an idle phone cools exponentially without any background task. Zones
report ambient + scale·(T − ambient) + offset.
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from profilers.virtual_phone.devfreq import DEVFREQ_ROOT, DevfreqDevice, devfreq_files
from profilers.virtual_phone.profile import AcceleratorSpec, ClusterSpec, Profile, ThermalZoneSpec
from profilers.virtual_phone.sysfs import SysfsNode, SysfsWriteError

GOVERNORS = ("conservative", "ondemand", "userspace", "powersave", "performance", "schedutil")
LOAD_DRIVEN_GOVERNORS = ("conservative", "ondemand", "schedutil")
CPU_ROOT = "/sys/devices/system/cpu"
THERMAL_ROOT = "/sys/class/thermal"
KGSL_ROOT = "/sys/class/kgsl/kgsl-3d0"
MALI_ROOT = "/sys/class/misc/mali0/device"
__all__ = ["Soc", "SysfsNode", "SysfsWriteError"]


@dataclass
class _Policy:
    spec: ClusterSpec
    governor: str
    min_khz: int
    max_khz: int
    setspeed_khz: int
    busy: int = 0
    last_run_khz: int = 0


class Soc:
    """Cpufreq and thermal state of one virtual phone; thread-safe (benchmarks run in worker threads)."""

    def __init__(
        self, profile: Profile, rng: random.Random | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.profile = profile
        self._rng = rng or random.Random()
        self._clock = clock
        self._lock = threading.RLock()
        self._policies = [
            _Policy(
                cl, cl.default_governor, cl.frequencies_khz[0], cl.frequencies_khz[-1], cl.frequencies_khz[0]
            )
            for cl in profile.clusters
        ]
        self._f_top = max(cl.frequencies_khz[-1] for cl in profile.clusters)
        self._units: dict[str, tuple[AcceleratorSpec, DevfreqDevice]] = {
            acc.unit: (acc, DevfreqDevice.from_spec(acc.devfreq))
            for acc in (profile.gpu, profile.npu)
            if acc is not None
        }
        self._bus = DevfreqDevice.from_spec(profile.bus.devfreq, profile.bus.hold_s) if profile.bus else None
        self._temp_c = profile.thermal.ambient_c
        self._temp_at = clock()
        self._heat_rate = profile.thermal.heat_rate_c_per_s
        self.nodes: dict[str, SysfsNode] = self._build_nodes()

    # -- clusters and frequencies ---------------------------------------------------------------------------
    def cluster_for_cpus(self, cpus: set[int] | None) -> int:
        """Index of the cluster a single-threaded benchmark lands on.

        The scheduler (EAS) moves a busy thread to the fastest cluster it is allowed on, so: the cluster with
        the highest maximum frequency among those that hold a CPU of the affinity mask; no mask = all CPUs.
        """
        allowed = [
            i for i, p in enumerate(self._policies) if cpus is None or set(p.spec.cpus) & cpus
        ] or list(range(len(self._policies)))
        return max(allowed, key=lambda i: (self._policies[i].spec.frequencies_khz[-1], i))

    def begin_load(self, cluster: int) -> None:
        """A benchmark starts running on `cluster`: heat accrues from now on."""
        with self._lock:
            self._advance()
            self._policies[cluster].busy += 1

    def end_load(self, cluster: int) -> None:
        """The benchmark on `cluster` finished: the die starts cooling (if nothing else runs)."""
        with self._lock:
            self._advance()
            p = self._policies[cluster]
            p.busy = max(0, p.busy - 1)

    def busy_clusters(self) -> list[str]:
        """Names of the clusters a benchmark is running on right now."""
        with self._lock:
            return [p.spec.name for p in self._policies if p.busy]

    def run_frequency(self, cluster: int) -> int:
        """The frequency (kHz) of the next benchmark run on `cluster`: governor choice, then thermal cap."""
        with self._lock:
            self._advance()
            p = self._policies[cluster]
            table = p.spec.frequencies_khz
            lo, hi = self._range(p)
            if p.governor in LOAD_DRIVEN_GOVERNORS:
                # Under load the governor ramps up but not deterministically: pick among the upper part of the
                # allowed table, so two unpinned runs of the same model rarely see the same frequency.
                allowed = [f for f in table if lo <= f <= hi] or [lo]
                start = len(allowed) // 2
                f = self._rng.choice(allowed[start:])
            else:
                f = self._governed_idle(p)
            f = min(f, self._cap(p.spec))
            p.last_run_khz = f
            return f

    def current_frequency(self, cluster: int) -> int:
        """What `scaling_cur_freq` shows now for `cluster`."""
        with self._lock:
            self._advance()
            p = self._policies[cluster]
            f = p.last_run_khz if p.busy and p.last_run_khz else self._governed_idle(p)
            return min(f, self._cap(p.spec))

    def scale(self, cluster: int, host_seconds: float, f_khz: int) -> float:
        """Seconds a run that took `host_seconds` on the host takes on `cluster` at `f_khz`."""
        spec = self._policies[cluster].spec
        return host_seconds * (spec.c * spec.f_ref_khz / f_khz + (1.0 - spec.c))

    # -- accelerators and the memory bus ---------------------------------------------------------------------
    def units(self) -> list[str]:
        """The accelerator units of this phone (`gpu`, `npu`)."""
        return list(self._units)

    def unit_spec(self, unit: str) -> AcceleratorSpec:
        """The profile's spec of accelerator `unit` (KeyError if the phone has none)."""
        return self._units[unit][0]

    def begin_unit_load(self, unit: str) -> None:
        """A benchmark starts on accelerator `unit`: heat accrues, the memory bus follows its load."""
        with self._lock:
            self._advance()
            self._units[unit][1].busy += 1
            if self._bus is not None:
                self._bus.busy += 1

    def end_unit_load(self, unit: str) -> None:
        """The benchmark on `unit` finished: the unit idles, the bus holds the run's level for a moment."""
        with self._lock:
            self._advance()
            dev = self._units[unit][1]
            dev.busy = max(0, dev.busy - 1)
            if self._bus is not None:
                self._bus.busy = max(0, self._bus.busy - 1)
                self._bus.last_end = self._clock()

    def unit_run_frequency(self, unit: str) -> int:
        """The clock (Hz) of the next run on `unit`: its governor's choice, then the thermal cap."""
        with self._lock:
            self._advance()
            dev = self._units[unit][1]
            return dev.pick_run(self._rng, self._cap_table(dev.table))

    def unit_current_frequency(self, unit: str) -> int:
        """What `cur_freq` of `unit`'s devfreq shows now (Hz)."""
        with self._lock:
            self._advance()
            dev = self._units[unit][1]
            return dev.current(self._clock(), self._cap_table(dev.table))

    def is_unit_throttled(self, unit: str) -> bool:
        """True while the thermal cap is below the top of `unit`'s table."""
        with self._lock:
            self._advance()
            dev = self._units[unit][1]
            return self._cap_table(dev.table) < dev.f_max

    def bus_run_frequency(self) -> int | None:
        """The memory-bus clock (Hz) of the next accelerator run (None: the phone models no bus)."""
        with self._lock:
            return None if self._bus is None else self._bus.pick_run(self._rng, self._bus.f_max)

    def bus_current_frequency(self) -> int | None:
        """What the bus devfreq's `cur_freq` shows now (Hz)."""
        with self._lock:
            return None if self._bus is None else self._bus.current(self._clock(), self._bus.f_max)

    def _range(self, p: _Policy) -> tuple[int, int]:
        # Frequency-QoS semantics of current kernels: a min above max is accepted and max wins.
        hi = p.max_khz
        lo = min(p.min_khz, hi)
        return lo, hi

    def _snap_down(self, p: _Policy, khz: int) -> int:
        fitting = [f for f in p.spec.frequencies_khz if f <= khz]
        return fitting[-1] if fitting else p.spec.frequencies_khz[0]

    def _snap_up(self, p: _Policy, khz: int) -> int:
        fitting = [f for f in p.spec.frequencies_khz if f >= khz]
        return fitting[0] if fitting else p.spec.frequencies_khz[-1]

    def _governed_idle(self, p: _Policy) -> int:
        lo, hi = self._range(p)
        if p.governor == "performance":
            return self._snap_down(p, hi)
        if p.governor == "userspace":
            return self._snap_down(p, min(max(p.setspeed_khz, lo), hi))
        return self._snap_up(p, lo)

    def _cap(self, spec: ClusterSpec) -> int:
        return self._cap_table(spec.frequencies_khz)

    def _cap_table(self, table: tuple[int, ...]) -> int:
        """The highest clock of `table` (ascending) the thermal state allows now."""
        th = self.profile.thermal
        over = self._temp_c - th.trip_c
        if over <= 0:
            return table[-1]
        fraction = max(0.3, th.throttle_fraction - 0.02 * over)
        target = table[-1] * fraction
        fitting = [f for f in table if f <= target]
        return fitting[-1] if fitting else table[0]

    # -- heat -----------------------------------------------------------------------------------------------
    def _power(self) -> float:
        total = 0.0
        for p in self._policies:
            if p.busy:
                f = p.last_run_khz or self._governed_idle(p)
                total += (f / self._f_top) ** 2
        for acc, dev in self._units.values():
            if dev.busy:
                f_hz = dev.last_run_hz or dev.idle_frequency()
                total += acc.heat_weight * (f_hz / dev.f_max) ** 2
        return self._heat_rate * total

    def _advance(self) -> None:
        now = self._clock()
        dt = now - self._temp_at
        if dt <= 0:
            return
        th = self.profile.thermal
        t_eq = th.ambient_c + self._power() * th.tau_s
        self._temp_c = t_eq + (self._temp_c - t_eq) * math.exp(-dt / th.tau_s)
        self._temp_at = now

    def temperature_c(self) -> float:
        """The die temperature now (°C)."""
        with self._lock:
            self._advance()
            return self._temp_c

    def set_temperature(self, celsius: float) -> None:
        """Force the die temperature (tests use it to provoke throttling at once)."""
        with self._lock:
            self._advance()
            self._temp_c = float(celsius)

    def set_heat_rate(self, c_per_s: float) -> None:
        """Change how fast full load heats the die (°C/s)."""
        with self._lock:
            self._advance()
            self._heat_rate = float(c_per_s)

    def is_throttled(self, cluster: int) -> bool:
        """True while the thermal cap is below the cluster's maximum frequency."""
        with self._lock:
            self._advance()
            spec = self._policies[cluster].spec
            return self._cap(spec) < spec.frequencies_khz[-1]

    # -- sysfs ----------------------------------------------------------------------------------------------
    def _build_nodes(self) -> dict[str, SysfsNode]:
        nodes: dict[str, SysfsNode] = {}
        ncpu = self.profile.cpu_count
        for name in ("online", "possible", "present"):
            nodes[f"{CPU_ROOT}/{name}"] = SysfsNode(lambda: f"0-{ncpu - 1}")
        for idx, p in enumerate(self._policies):
            files = self._policy_files(idx, p)
            base = f"{CPU_ROOT}/cpufreq/policy{p.spec.cpus[0]}"
            for fname, node in files.items():
                nodes[f"{base}/{fname}"] = node
                for cpu in p.spec.cpus:
                    nodes[f"{CPU_ROOT}/cpu{cpu}/cpufreq/{fname}"] = node
            for cpu in p.spec.cpus:
                nodes[f"{CPU_ROOT}/cpu{cpu}/online"] = SysfsNode(lambda: "1")
        th = self.profile.thermal
        for z, zone in enumerate(th.zones):
            base = f"{THERMAL_ROOT}/thermal_zone{z}"
            nodes[f"{base}/type"] = SysfsNode(_zone_type_reader(zone))
            nodes[f"{base}/temp"] = SysfsNode(self._zone_temp_reader(zone))
            nodes[f"{base}/mode"] = SysfsNode(lambda: "enabled")
            nodes[f"{base}/trip_point_0_temp"] = SysfsNode(lambda: str(int(th.trip_c * 1000)))
            nodes[f"{base}/trip_point_0_type"] = SysfsNode(lambda: "passive")
        for acc, dev in self._units.values():
            nodes.update(self._unit_nodes(acc, dev))
        if self._bus is not None:
            bus = self._bus
            files = devfreq_files(bus, self._locked, lambda: self.bus_current_frequency() or 0)
            nodes.update({f"{DEVFREQ_ROOT}/{bus.spec.name}/{n}": node for n, node in files.items()})
        nodes["/proc/cpuinfo"] = SysfsNode(self._cpuinfo)
        return nodes

    def _locked(self, change: Callable[[], None]) -> None:
        with self._lock:
            self._advance()
            change()

    def _unit_nodes(self, acc: AcceleratorSpec, dev: DevfreqDevice) -> dict[str, SysfsNode]:
        """The sysfs files of one accelerator, in its vendor's layout."""
        unit = acc.unit
        files = devfreq_files(dev, self._locked, lambda: self.unit_current_frequency(unit))
        nodes = {f"{DEVFREQ_ROOT}/{dev.spec.name}/{n}": node for n, node in files.items()}
        if acc.layout == "kgsl":
            nodes.update({f"{KGSL_ROOT}/devfreq/{n}": node for n, node in files.items()})
            nodes[f"{KGSL_ROOT}/gpu_model"] = SysfsNode(lambda: acc.model)
            nodes[f"{KGSL_ROOT}/gpuclk"] = files["cur_freq"]
            nodes[f"{KGSL_ROOT}/gpu_available_frequencies"] = SysfsNode(
                lambda: " ".join(str(f) for f in reversed(dev.table))
            )
            nodes[f"{KGSL_ROOT}/max_gpuclk"] = files["max_freq"]
            nodes[f"{KGSL_ROOT}/gpu_busy_percentage"] = SysfsNode(lambda: f"{95 if dev.busy else 0} %")
        elif acc.layout == "mali":
            nodes[f"{MALI_ROOT}/gpuinfo"] = SysfsNode(lambda: acc.info or acc.model)
        return nodes

    def _zone_temp_reader(self, zone: ThermalZoneSpec) -> Callable[[], str]:
        return lambda: str(self._zone_millic(zone))

    def _zone_millic(self, zone: ThermalZoneSpec) -> int:
        amb = self.profile.thermal.ambient_c
        return round((amb + zone.scale * (self.temperature_c() - amb) + zone.offset_c) * 1000)

    def _policy_files(self, idx: int, p: _Policy) -> dict[str, SysfsNode]:
        cpus = " ".join(str(c) for c in p.spec.cpus)
        table = p.spec.frequencies_khz

        def set_governor(value: str) -> None:
            if value not in GOVERNORS:
                raise SysfsWriteError("Invalid argument")
            with self._lock:
                self._advance()
                p.governor = value

        def parse_khz(value: str) -> int:
            try:
                khz = int(value)
            except ValueError:
                raise SysfsWriteError("Invalid argument") from None
            if khz < 0:
                raise SysfsWriteError("Invalid argument")
            return min(max(khz, table[0]), table[-1])

        def set_min(value: str) -> None:
            with self._lock:
                self._advance()
                p.min_khz = parse_khz(value)

        def set_max(value: str) -> None:
            with self._lock:
                self._advance()
                p.max_khz = parse_khz(value)

        def set_speed(value: str) -> None:
            # The kernel only has a setspeed store while the userspace governor is active.
            if p.governor != "userspace":
                raise SysfsWriteError("Invalid argument")
            with self._lock:
                self._advance()
                p.setspeed_khz = parse_khz(value)

        def read_setspeed() -> str:
            return str(self._governed_idle(p)) if p.governor == "userspace" else "<unsupported>"

        return {
            "affected_cpus": SysfsNode(lambda: cpus),
            "related_cpus": SysfsNode(lambda: cpus),
            "cpuinfo_min_freq": SysfsNode(lambda: str(table[0])),
            "cpuinfo_max_freq": SysfsNode(lambda: str(table[-1])),
            "cpuinfo_transition_latency": SysfsNode(lambda: "0"),
            "scaling_driver": SysfsNode(lambda: "virtual-cpufreq"),
            "scaling_available_frequencies": SysfsNode(lambda: " ".join(str(f) for f in table) + " "),
            "scaling_available_governors": SysfsNode(lambda: " ".join(GOVERNORS)),
            "scaling_governor": SysfsNode(lambda: p.governor, set_governor),
            "scaling_min_freq": SysfsNode(lambda: str(p.min_khz), set_min),
            "scaling_max_freq": SysfsNode(lambda: str(p.max_khz), set_max),
            "scaling_setspeed": SysfsNode(read_setspeed, set_speed),
            "scaling_cur_freq": SysfsNode(lambda: str(self.current_frequency(idx))),
        }

    def _cpuinfo(self) -> str:
        blocks = []
        for p in self._policies:
            for cpu in p.spec.cpus:
                blocks.append(
                    f"processor\t: {cpu}\nBogoMIPS\t: 38.40\n"
                    "Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid "
                    "asimdrdm lrcpc dcpop asimddp\nCPU implementer\t: 0x41\nCPU architecture: 8\n"
                    f"CPU part\t: virtual-{p.spec.name}\n"
                )
        hw = self.profile.props.get("ro.soc.model", self.profile.name)
        return "\n".join(blocks) + f"\nHardware\t: {hw}\n"


def _zone_type_reader(zone: ThermalZoneSpec) -> Callable[[], str]:
    return lambda: zone.type
