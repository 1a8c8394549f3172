"""A measurement's per-layer chart: where one run's time went, layer by layer, and on which unit.

A measurement taken with `layer_profile` carries `layers` (a list of `profilers.adb.units.LayerTime`: node
name, op type, mean ms per run, the unit it ran on — `cpu` for a node an NPU left to the CPU). The chart
draws them as horizontal bars in graph order, one colour per unit, so a block that is slow on a GPU shows
which layer is slow and whether it fell back to the CPU. Numbers from a virtual phone are marked as such
wherever they are drawn. Read-only: nothing here writes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import TypeAdapter, ValidationError
from sqlalchemy.orm import Session

from profilers.adb.units import LayerTime
from service.dashboard.pivot import config_label, format_ms
from service.devices.models import Device
from service.measurements.models import Measurement
from service.problems import NotFoundError

_LAYERS = TypeAdapter(list[LayerTime])


@dataclass(frozen=True)
class LayerChart:
    """One measurement, its conditions, and its per-layer times (empty when none were stored).

    `problem` says why no bars are drawn when the stored profile is missing or unreadable.
    """

    measurement: Measurement
    device_name: str
    label: str
    layers: list[LayerTime]
    problem: str | None

    @property
    def virtual(self) -> bool:
        """True when the numbers come from a virtual phone (its modelled GPU/NPU), not a real one."""
        return self.measurement.virtual

    @property
    def total_ms(self) -> float:
        """Sum of the layers' mean ms (the runtime's own overhead between them is not a layer)."""
        return sum(layer.ms for layer in self.layers)

    @property
    def units(self) -> list[str]:
        """The units the layers ran on, in order of first appearance (one legend entry each)."""
        return list(dict.fromkeys(self.unit_of(layer) for layer in self.layers))

    def unit_of(self, layer: LayerTime) -> str:
        """Where `layer` ran: its own `unit`, else the measurement's unit."""
        return layer.unit or self.measurement.cluster

    def plot_data(self) -> dict[str, Any]:
        """The chart as JSON for plots.js: one bar trace per unit, the layers in graph order."""
        traces = []
        for unit in self.units:
            mine = [(i, layer) for i, layer in enumerate(self.layers) if self.unit_of(layer) == unit]
            traces.append(
                {
                    "unit": unit,
                    "y": [_bar_label(i, layer) for i, layer in mine],
                    "x": [layer.ms for _, layer in mine],
                    "op_types": [layer.op_type for _, layer in mine],
                    "names": [layer.name for _, layer in mine],
                }
            )
        return {
            "measurement_id": self.measurement.id,
            "order": [_bar_label(i, layer) for i, layer in enumerate(self.layers)],
            "traces": traces,
            "virtual": self.virtual,
            "unit": self.measurement.cluster,
            "precision": self.measurement.precision,
        }

    @property
    def total_text(self) -> str:
        """The layers' sum as the page prints it (the table's ms formatting)."""
        return format_ms(self.total_ms)


def _bar_label(index: int, layer: LayerTime) -> str:
    """A bar's axis label: its place in the graph, its name and its op type (names repeat across blocks)."""
    return f"{index + 1}. {layer.name} ({layer.op_type})"


def layer_chart(session: Session, measurement_id: int) -> LayerChart:
    """The per-layer chart of measurement `measurement_id` (NotFoundError when there is no such row)."""
    measurement = session.get(Measurement, measurement_id)
    if measurement is None:
        raise NotFoundError(f"measurement {measurement_id} does not exist")
    device = session.get(Device, measurement.device_id)
    device_name = (device.name or device.serial) if device is not None else f"device {measurement.device_id}"
    layers: list[LayerTime] = []
    problem = None
    if not measurement.layers:
        problem = (
            "the run asked for a per-layer profile but none was stored"
            if measurement.layer_profile
            else "this measurement was taken without a per-layer profile (runtime.layer_profile)"
        )
    else:
        try:
            layers = _LAYERS.validate_python(measurement.layers)
        except ValidationError as exc:
            problem = f"the stored per-layer profile is unreadable: {exc.errors()[0]['msg']}"
    return LayerChart(
        measurement=measurement,
        device_name=device_name,
        label=config_label(measurement.family, measurement.config),
        layers=layers,
        problem=problem,
    )
