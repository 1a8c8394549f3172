"""Device profiles: the JSON files under `profiles/` describing a phone's props, clusters, accelerators, heat.

A profile may hold a `gpu` and an `npu` section (an `AcceleratorSpec`: its devfreq device, sysfs layout and
the constants of the accelerator cost model, see accelerator.py) and a `bus` section (the memory bus's
devfreq device). The legacy top-level `gpu_frequencies_hz` alone still describes a kgsl GPU with default
constants; with a `gpu` section it is derived from it. A CPU cluster may hold a `microarch` section (speed
per operator kind, cache, memory bandwidth; microarch.py says how a run is priced by it).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from profilers.virtual_phone.errors import ProfileError
from profilers.virtual_phone.microarch import REFERENCE, Microarch, MicroarchError, microarch_from_dict

PROFILES_DIR = Path(__file__).parent / "profiles"
DEFAULT_PROFILE = "virtual-flagship"


@dataclass(frozen=True)
class ClusterSpec:
    """One CPU cluster (one cpufreq policy): its CPUs, frequency table and scaling constants.

    `c` is the compute-bound fraction of a run and `f_ref_khz` the frequency at which this cluster runs as
    fast as the host; a little cluster therefore has an `f_ref_khz` above its own maximum. `microarch` prices
    a run node by node (microarch.py: speed per operator kind, cache, bandwidth); without one a cluster has
    the reference microarchitecture and a run is the host's time scaled by frequency alone.
    """

    name: str
    cpus: tuple[int, ...]
    frequencies_khz: tuple[int, ...]
    c: float
    f_ref_khz: int
    default_governor: str = "schedutil"
    microarch: Microarch = REFERENCE


@dataclass(frozen=True)
class ThermalZoneSpec:
    """One thermal zone: it reports ambient + scale·(die − ambient) + offset."""

    type: str
    offset_c: float = 0.0
    scale: float = 1.0


@dataclass(frozen=True)
class ThermalSpec:
    """First-order heat model: `heat_rate_c_per_s` under full load, relaxing to ambient with `tau_s`."""

    ambient_c: float = 32.0
    tau_s: float = 40.0
    heat_rate_c_per_s: float = 2.0
    trip_c: float = 70.0
    throttle_fraction: float = 0.65
    zones: tuple[ThermalZoneSpec, ...] = (ThermalZoneSpec("cpu-0-0-usr"),)


LOAD_FREE_GOVERNORS = ("performance", "powersave", "userspace")
"""Devfreq governors that do not follow load; every other governor of a devfreq table is load-driven."""


@dataclass(frozen=True)
class DevfreqSpec:
    """One devfreq device: its directory name under /sys/class/devfreq, clock table (Hz) and governors."""

    name: str
    frequencies_hz: tuple[int, ...]
    governors: tuple[str, ...]
    default_governor: str


@dataclass(frozen=True)
class CostSpec:
    """Constants of the accelerator cost model (see accelerator.py for how each enters).

    `macs_per_cycle` is the sustained throughput per clock cycle (i.e. MACs/s per Hz of the unit's clock) by
    precision; a precision missing from it is not run by the unit. `bus_bytes_per_cycle` is the bytes moved
    per cycle of the memory bus clock. `workgroup` is the (x, y, channel-slice) tile a kernel's work is
    quantised to. `graph_us` is a fixed cost per run of the whole graph (large on an NPU),
    `unsupported_ops` the op types the unit leaves to the CPU, each such boundary paying `transfer_us`.
    """

    launch_us: float
    macs_per_cycle: dict[str, float]
    bus_bytes_per_cycle: float
    workgroup: tuple[int, int, int] = (8, 8, 1)
    graph_us: float = 0.0
    unsupported_ops: tuple[str, ...] = ()
    transfer_us: float = 0.0
    fuses_elementwise: bool = True


@dataclass(frozen=True)
class AcceleratorSpec:
    """The phone's GPU or NPU: identity, sysfs layout, devfreq table, heat weight and cost constants.

    `layout` picks the sysfs node set: `kgsl` (Adreno: /sys/class/kgsl/kgsl-3d0 + its devfreq), `mali`
    (/sys/class/devfreq/<name> + /sys/class/misc/mali0/device/gpuinfo) or `devfreq` (the devfreq dir only).
    A busy unit heats the die by `heat_weight` · (f / f_max)² (in units of one CPU cluster at top speed).
    """

    unit: str
    model: str
    layout: str
    devfreq: DevfreqSpec
    cost: CostSpec
    info: str = ""
    heat_weight: float = 1.0

    @property
    def precisions(self) -> tuple[str, ...]:
        """The precisions the unit runs (those the cost model has a throughput for)."""
        return tuple(p for p in ("fp32", "fp16", "int8") if p in self.cost.macs_per_cycle)


@dataclass(frozen=True)
class BusSpec:
    """The memory bus's devfreq device; its clock holds a run's level for `hold_s` after the run."""

    devfreq: DevfreqSpec
    hold_s: float = 0.1


@dataclass(frozen=True)
class Profile:
    """Everything that makes one virtual phone model different from another."""

    name: str
    description: str
    props: dict[str, str]
    clusters: tuple[ClusterSpec, ...]
    thermal: ThermalSpec
    rooted: bool = True
    storage_free_bytes: int = 8_000_000_000
    gpu_frequencies_hz: tuple[int, ...] = ()
    gpu: AcceleratorSpec | None = None
    npu: AcceleratorSpec | None = None
    bus: BusSpec | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def cpu_count(self) -> int:
        """Number of CPUs over all clusters."""
        return max(cpu for cl in self.clusters for cpu in cl.cpus) + 1

    def accelerator(self, unit: str) -> AcceleratorSpec | None:
        """The `gpu` or `npu` of this phone, if it has one."""
        return self.gpu if unit == "gpu" else self.npu if unit == "npu" else None


def list_profiles() -> list[str]:
    """Names of the profiles shipped with latfarm."""
    return sorted(p.stem for p in PROFILES_DIR.glob("*.json"))


def load_profile(name_or_path: str | Path) -> Profile:
    """Load a shipped profile by name, or a profile JSON file by path."""
    path = Path(name_or_path)
    if path.suffix != ".json":
        path = PROFILES_DIR / f"{name_or_path}.json"
    if not path.is_file():
        raise ProfileError(
            f"unknown profile {str(name_or_path)!r}; shipped profiles: {', '.join(list_profiles())}"
        )
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ProfileError(f"profile {path}: invalid JSON: {exc}") from exc
    return profile_from_dict(raw, source=str(path))


def profile_from_dict(raw: dict[str, Any], source: str = "<dict>") -> Profile:
    """Build a `Profile` from its JSON form, checking what the simulation relies on."""
    try:
        clusters = tuple(
            ClusterSpec(
                name=str(c["name"]),
                cpus=tuple(int(x) for x in c["cpus"]),
                frequencies_khz=tuple(sorted(int(f) for f in c["frequencies_khz"])),
                c=float(c.get("c", 0.85)),
                f_ref_khz=int(c.get("f_ref_khz", max(c["frequencies_khz"]))),
                default_governor=str(c.get("default_governor", "schedutil")),
                microarch=(
                    microarch_from_dict(c["microarch"], f"clusters[{i}].microarch")
                    if "microarch" in c
                    else REFERENCE
                ),
            )
            for i, c in enumerate(raw["clusters"])
        )
        th = raw.get("thermal", {})
        thermal = ThermalSpec(
            ambient_c=float(th.get("ambient_c", 32.0)),
            tau_s=float(th.get("tau_s", 40.0)),
            heat_rate_c_per_s=float(th.get("heat_rate_c_per_s", 2.0)),
            trip_c=float(th.get("trip_c", 70.0)),
            throttle_fraction=float(th.get("throttle_fraction", 0.65)),
            zones=tuple(
                ThermalZoneSpec(str(z["type"]), float(z.get("offset_c", 0.0)), float(z.get("scale", 1.0)))
                for z in th.get("zones", [{"type": "cpu-0-0-usr"}])
            ),
        )
        gpu = _accelerator(raw["gpu"], "gpu") if "gpu" in raw else None
        if gpu is None and raw.get("gpu_frequencies_hz"):
            gpu = _legacy_gpu([int(f) for f in raw["gpu_frequencies_hz"]])
        npu = _accelerator(raw["npu"], "npu") if "npu" in raw else None
        bus = BusSpec(_devfreq(raw["bus"]), float(raw["bus"].get("hold_s", 0.1))) if "bus" in raw else None
        profile = Profile(
            name=str(raw["name"]),
            description=str(raw.get("description", "")),
            props={str(k): str(v) for k, v in raw.get("props", {}).items()},
            clusters=clusters,
            thermal=thermal,
            rooted=bool(raw.get("rooted", True)),
            storage_free_bytes=int(raw.get("storage_free_bytes", 8_000_000_000)),
            gpu_frequencies_hz=gpu.devfreq.frequencies_hz if gpu else (),
            gpu=gpu,
            npu=npu,
            bus=bus,
        )
    except MicroarchError as exc:
        raise ProfileError(f"profile {source}: {exc}") from exc
    except (KeyError, TypeError, ValueError) as exc:
        raise ProfileError(f"profile {source}: missing or invalid field: {exc}") from exc
    if not clusters or any(not cl.frequencies_khz or not cl.cpus for cl in clusters):
        raise ProfileError(f"profile {source}: every cluster needs cpus and frequencies_khz")
    if any(not 0.0 <= cl.c <= 1.0 for cl in clusters):
        raise ProfileError(f"profile {source}: cluster 'c' must be within [0, 1]")
    if thermal.tau_s <= 0:
        raise ProfileError(f"profile {source}: thermal.tau_s must be positive")
    for spec in (gpu, npu, bus):
        dev = spec.devfreq if spec else None
        if dev is not None and (not dev.frequencies_hz or dev.default_governor not in dev.governors):
            raise ProfileError(
                f"profile {source}: devfreq {dev.name!r} needs frequencies_hz and its default governor "
                "among its governors"
            )
    for acc in (gpu, npu):
        if acc is not None and acc.layout not in ("kgsl", "mali", "devfreq"):
            raise ProfileError(f"profile {source}: {acc.unit}.layout must be kgsl, mali or devfreq")
    return profile


def _devfreq(raw: dict[str, Any]) -> DevfreqSpec:
    governors = tuple(str(g) for g in raw.get("governors", ["simple_ondemand", *LOAD_FREE_GOVERNORS]))
    return DevfreqSpec(
        name=str(raw["devfreq"]),
        frequencies_hz=tuple(sorted(int(f) for f in raw["frequencies_hz"])),
        governors=governors,
        default_governor=str(raw.get("default_governor", governors[0])),
    )


def _cost(raw: dict[str, Any]) -> CostSpec:
    wg = tuple(int(x) for x in raw.get("workgroup", (8, 8, 1)))
    if len(wg) != 3 or min(wg) < 1:
        raise ValueError("cost.workgroup must be three positive integers")
    return CostSpec(
        launch_us=float(raw["launch_us"]),
        macs_per_cycle={str(k): float(v) for k, v in raw["macs_per_cycle"].items()},
        bus_bytes_per_cycle=float(raw["bus_bytes_per_cycle"]),
        workgroup=(wg[0], wg[1], wg[2]),
        graph_us=float(raw.get("graph_us", 0.0)),
        unsupported_ops=tuple(str(op) for op in raw.get("unsupported_ops", [])),
        transfer_us=float(raw.get("transfer_us", 0.0)),
        fuses_elementwise=bool(raw.get("fuses_elementwise", True)),
    )


def _accelerator(raw: dict[str, Any], unit: str) -> AcceleratorSpec:
    return AcceleratorSpec(
        unit=unit,
        model=str(raw["model"]),
        layout=str(raw.get("layout", "devfreq")),
        devfreq=_devfreq(raw),
        cost=_cost(raw["cost"]),
        info=str(raw.get("info", "")),
        heat_weight=float(raw.get("heat_weight", 1.0)),
    )


def _legacy_gpu(frequencies_hz: list[int]) -> AcceleratorSpec:
    """A kgsl GPU with default constants, for a profile that lists only `gpu_frequencies_hz`."""
    return _accelerator(
        {
            "model": "Adreno",
            "layout": "kgsl",
            "devfreq": "3d00000.qcom,kgsl-3d0",
            "frequencies_hz": frequencies_hz,
            "governors": ["msm-adreno-tz", "performance", "powersave", "userspace", "simple_ondemand"],
            "cost": {
                "launch_us": 20.0,
                "macs_per_cycle": {"fp32": 256, "fp16": 512},
                "bus_bytes_per_cycle": 8,
            },
        },
        "gpu",
    )
