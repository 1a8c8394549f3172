"""A device's compute units: its CPU clusters and its probed accelerators, as one typed list.

The device row keeps what probing found in two JSON columns — `clusters` (cpufreq policies) and
`accelerators` (`profilers.adb.units.Accelerator`: the `gpu` and the `npu`). Jobs validate a requested
unit, its precision and its frequencies against this list, and the device API shows it, so both read the
same facts the same way: CPU clusters first (in probed order), then `gpu`, then `npu`. A CPU cluster runs
`units.CPU_PRECISIONS`; an accelerator the precisions it was probed with. A unit without a clock table is
not pinnable: it is measured at whatever clock its governor picks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from profilers.adb.units import ACCELERATOR_UNITS, CPU_PRECISIONS, Accelerator, UnitKind, unit_kind
from service.devices.models import Device


class ComputeUnit(BaseModel):
    """One compute unit of a device: its name (a job's `runtime.unit`), kind, clocks and precisions."""

    name: str
    kind: UnitKind
    model: str | None = Field(None, description="the accelerator's model (GPU/NPU), None for a CPU cluster")
    frequencies_khz: list[int] = Field(default_factory=list, description="its clock table, ascending")
    precisions: list[str] = Field(default_factory=list)
    governors: list[str] = Field(default_factory=list)

    @property
    def clock_range(self) -> str:
        """`min–max MHz` of its clock table (one value when it has one; `no clock table` when none)."""
        if not self.frequencies_khz:
            return "no clock table"
        low, high = min(self.frequencies_khz) / 1000, max(self.frequencies_khz) / 1000
        return f"{low:g} MHz" if low == high else f"{low:g}–{high:g} MHz"

    @property
    def pinnable(self) -> bool:
        """Whether a clock of this unit can be pinned (it has a clock table)."""
        return bool(self.frequencies_khz)


def device_accelerators(device: Device) -> list[Accelerator]:
    """The device's probed accelerators, `gpu` before `npu`; entries that do not parse are skipped (a row
    written by hand or by an older build never breaks a listing or a job)."""
    found: list[Accelerator] = []
    for raw in device.accelerators or []:
        try:
            found.append(Accelerator.model_validate(raw))
        except ValidationError:
            continue
    return sorted(found, key=lambda a: ACCELERATOR_UNITS.index(a.name))


def _cluster_unit(raw: Mapping[str, Any]) -> ComputeUnit:
    return ComputeUnit(
        name=str(raw.get("name", "?")),
        kind="cpu",
        frequencies_khz=sorted(int(f) for f in raw.get("frequencies_khz") or []),
        precisions=list(CPU_PRECISIONS),
        governors=[str(g) for g in raw.get("governors") or []],
    )


def _accelerator_unit(accelerator: Accelerator) -> ComputeUnit:
    return ComputeUnit(
        name=accelerator.name,
        kind=unit_kind(accelerator.name),
        model=accelerator.model or None,
        frequencies_khz=sorted(accelerator.frequencies_khz),
        precisions=list(accelerator.precisions),
        governors=list(accelerator.governors),
    )


def units_of(clusters: Sequence[Mapping[str, Any]], accelerators: Sequence[Accelerator]) -> list[ComputeUnit]:
    """The compute units of probed `clusters` and `accelerators`: clusters first, then `gpu`, then `npu`."""
    ordered = sorted(accelerators, key=lambda a: ACCELERATOR_UNITS.index(a.name))
    return [_cluster_unit(c) for c in clusters] + [_accelerator_unit(a) for a in ordered]


def device_units(device: Device) -> list[ComputeUnit]:
    """Every compute unit of `device`: CPU clusters first, then `gpu`, then `npu`."""
    clusters = [c for c in device.clusters or [] if isinstance(c, Mapping)]
    return units_of(clusters, device_accelerators(device))


__all__ = ["ComputeUnit", "device_accelerators", "device_units", "units_of"]
