"""Device profiles: the JSON files under `profiles/` describing a phone's props, clusters and heat."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from profilers.virtual_phone.errors import ProfileError

PROFILES_DIR = Path(__file__).parent / "profiles"
DEFAULT_PROFILE = "virtual-flagship"


@dataclass(frozen=True)
class ClusterSpec:
    """One CPU cluster (one cpufreq policy): its CPUs, frequency table and scaling constants.

    `c` is the compute-bound fraction of a run and `f_ref_khz` the frequency at which this cluster runs as
    fast as the host; a little cluster therefore has an `f_ref_khz` above its own maximum.
    """

    name: str
    cpus: tuple[int, ...]
    frequencies_khz: tuple[int, ...]
    c: float
    f_ref_khz: int
    default_governor: str = "schedutil"


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
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def cpu_count(self) -> int:
        """Number of CPUs over all clusters."""
        return max(cpu for cl in self.clusters for cpu in cl.cpus) + 1


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
            )
            for c in raw["clusters"]
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
        profile = Profile(
            name=str(raw["name"]),
            description=str(raw.get("description", "")),
            props={str(k): str(v) for k, v in raw.get("props", {}).items()},
            clusters=clusters,
            thermal=thermal,
            rooted=bool(raw.get("rooted", True)),
            storage_free_bytes=int(raw.get("storage_free_bytes", 8_000_000_000)),
            gpu_frequencies_hz=tuple(int(f) for f in raw.get("gpu_frequencies_hz", [])),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ProfileError(f"profile {source}: missing or invalid field: {exc}") from exc
    if not clusters or any(not cl.frequencies_khz or not cl.cpus for cl in clusters):
        raise ProfileError(f"profile {source}: every cluster needs cpus and frequencies_khz")
    if any(not 0.0 <= cl.c <= 1.0 for cl in clusters):
        raise ProfileError(f"profile {source}: cluster 'c' must be within [0, 1]")
    if thermal.tau_s <= 0:
        raise ProfileError(f"profile {source}: thermal.tau_s must be positive")
    return profile
