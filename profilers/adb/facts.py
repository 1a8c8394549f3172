"""What a phone is: props, CPU clusters, GPU and NPU, root, thermal zones — read in a few round trips."""

from __future__ import annotations

import re

from pydantic import BaseModel, Field

from profilers.adb.accelerators import probe_accelerators
from profilers.adb.frequency import Cluster, discover_clusters, root_mode
from profilers.adb.session import DeviceSession
from profilers.adb.sysfs import read_files
from profilers.adb.thermal import ThermalZone, list_zones
from profilers.adb.units import Accelerator

# GPU frequency tables, in Hz: Adreno (kgsl) first, then Mali and generic devfreq nodes.
_GPU_TABLES = (
    "/sys/class/kgsl/kgsl-3d0/gpu_available_frequencies",
    "/sys/class/misc/mali0/device/available_frequencies",
    "/sys/class/devfreq/gpufreq/available_frequencies",
)
# A latfarm virtual phone says so in its build props (ro.hardware=virtual, brand latfarm).
_VIRTUAL_PROPS = {"ro.hardware": "virtual", "ro.product.brand": "latfarm"}


class DeviceFacts(BaseModel):
    """Probed facts of one phone, as the device registry stores them."""

    serial: str
    model: str
    manufacturer: str
    board: str
    soc: str
    abi: str
    android_version: str
    sdk: int | None
    clusters: list[Cluster]
    gpu_frequencies_khz: list[int]
    accelerators: list[Accelerator] = Field(default_factory=list)
    rooted: bool
    thermal_zones: list[ThermalZone]
    is_virtual: bool


def read_props(session: DeviceSession) -> dict[str, str]:
    """All system properties (``getprop`` lists them as ``[key]: [value]``)."""
    out = session.run("getprop")
    return dict(re.findall(r"^\[([^\]]+)\]: \[(.*)\]\s*$", out, re.M))


def probe(session: DeviceSession) -> DeviceFacts:
    """Read the phone's identity, clusters, GPU table, accelerators, root and thermal zones."""
    props = read_props(session)
    gpu_raw = read_files(session, list(_GPU_TABLES))
    gpu_hz = next((v for v in gpu_raw.values() if v), "") or ""
    gpu_khz = sorted({int(f) // 1000 for f in gpu_hz.split() if f.isdigit()})
    accelerators = probe_accelerators(session)
    gpu = next((a for a in accelerators if a.name == "gpu"), None)
    if not gpu_khz and gpu is not None:
        gpu_khz = list(gpu.frequencies_khz)  # a Mali or generic devfreq GPU: its table is the GPU's
    sdk = props.get("ro.build.version.sdk", "")
    serial = props.get("ro.serialno") or props.get("ro.boot.serialno") or session.address
    return DeviceFacts(
        serial=serial,
        model=props.get("ro.product.model", ""),
        manufacturer=props.get("ro.product.manufacturer", ""),
        board=props.get("ro.product.board", "") or props.get("ro.board.platform", ""),
        soc=props.get("ro.soc.model", "") or props.get("ro.board.platform", ""),
        abi=props.get("ro.product.cpu.abi", ""),
        android_version=props.get("ro.build.version.release", ""),
        sdk=int(sdk) if sdk.isdigit() else None,
        clusters=discover_clusters(session),
        gpu_frequencies_khz=gpu_khz,
        accelerators=accelerators,
        rooted=root_mode(session) is not None,
        thermal_zones=list_zones(session),
        is_virtual=any(props.get(k) == v for k, v in _VIRTUAL_PROPS.items()),
    )
