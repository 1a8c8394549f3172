"""Compute units, numeric precisions, benchmark programs and accelerator options — the words of #12.

A measurement runs on one **compute unit**: a CPU cluster (`little`, `mid`, `big`, `clusterN`, `policyN`),
the phone's `gpu`, or its `npu` (NNAPI or a vendor accelerator). The unit's name is what the `cluster`
field of a profile request, task and measurement holds (a CPU cluster's name, or `gpu` / `npu`), so the
rows measured before accelerators existed read as what they are: a CPU cluster at fp32.

It runs at one **precision** (`fp32`, `fp16`, `int8`) through one **benchmark program** (onnxruntime's
`onnxruntime_perf_test` or TFLite's `benchmark_model`) with one **accelerator option** of that program: an
onnxruntime execution provider (`-e cpu|xnnpack|qnn|nnapi`) or a TFLite delegate (`xnnpack`, `gpu`,
`nnapi`). Which options reach which unit, and which precisions a unit takes, are fixed here, once, for the
profiler, the job validation and the CLI alike.

Imports pydantic only, like `profilers.adb.runtime`: request schemas use it.
"""

from __future__ import annotations

from typing import Literal, get_args

from pydantic import BaseModel, Field

Precision = Literal["fp32", "fp16", "int8"]
BenchmarkProgram = Literal["onnxruntime", "tflite"]
UnitKind = Literal["cpu", "gpu", "npu"]

PRECISIONS: tuple[str, ...] = get_args(Precision)
BENCHMARK_PROGRAMS: tuple[str, ...] = get_args(BenchmarkProgram)
ACCELERATOR_UNITS: tuple[str, ...] = ("gpu", "npu")
#: What a CPU cluster runs: the fp32 graph as built (no quantised or half-precision CPU kernels are chosen).
CPU_PRECISIONS: tuple[str, ...] = ("fp32",)

#: Accelerator options by (benchmark program, unit kind); the first is the default.
ACCELERATOR_OPTIONS: dict[tuple[str, str], tuple[str, ...]] = {
    ("onnxruntime", "cpu"): ("cpu", "xnnpack"),
    ("onnxruntime", "gpu"): ("qnn",),  # QNN's GPU backend (libQnnGpu.so)
    ("onnxruntime", "npu"): ("nnapi", "qnn"),  # NNAPI, or QNN's HTP backend (libQnnHtp.so)
    ("tflite", "cpu"): ("xnnpack", "cpu"),
    ("tflite", "gpu"): ("gpu",),
    ("tflite", "npu"): ("nnapi",),
}


def unit_kind(unit: str) -> UnitKind:
    """`gpu` / `npu` for those units, `cpu` for any other name (a CPU cluster's)."""
    if unit == "gpu":
        return "gpu"
    if unit == "npu":
        return "npu"
    return "cpu"


def resolve_accelerator(benchmark: str, unit: str, accelerator: str | None) -> str:
    """The accelerator option a run of `benchmark` on `unit` uses: `accelerator`, or the default.

    ValueError naming the options when `accelerator` does not reach that unit with that program.
    """
    options = ACCELERATOR_OPTIONS[(benchmark, unit_kind(unit))]
    if accelerator is None:
        return options[0]
    if accelerator not in options:
        raise ValueError(
            f"{benchmark} has no accelerator option {accelerator!r} for the {unit_kind(unit)} unit "
            f"{unit!r}; it has: {', '.join(options)}"
        )
    return accelerator


class Accelerator(BaseModel):
    """A probed accelerator of a phone: the `gpu` or the `npu`, its clock table and how to pin it.

    `devfreq` is its devfreq directory (for Adreno `/sys/class/kgsl/kgsl-3d0/devfreq`); `bus_devfreq` the
    memory bus's (DDR / LLCC / MIF) whose clock is recorded beside each run, when readable.
    """

    name: Literal["gpu", "npu"]
    model: str = ""
    devfreq: str | None = None
    frequencies_khz: list[int] = Field(default_factory=list)
    governors: list[str] = Field(default_factory=list)
    precisions: list[Precision] = Field(default_factory=list)
    bus_devfreq: str | None = None


class LayerTime(BaseModel):
    """One layer (graph node or dispatched kernel) of a per-layer profile: its mean time per run.

    `unit` is where the runtime ran it: the measured unit, or `cpu` for a node an accelerator left to the
    CPU (an NPU's unsupported op).
    """

    name: str
    op_type: str
    ms: float = Field(ge=0)
    unit: str | None = None


def check_precision(unit: str, precision: str, supported: list[str] | tuple[str, ...]) -> str:
    """`precision` if `unit` supports it (per its probed `supported` list), else ValueError naming them."""
    if precision not in supported:
        raise ValueError(
            f"the {unit} unit does not run {precision}; it supports: {', '.join(supported) or 'none'}"
        )
    return precision


__all__ = [
    "ACCELERATOR_OPTIONS",
    "ACCELERATOR_UNITS",
    "BENCHMARK_PROGRAMS",
    "CPU_PRECISIONS",
    "PRECISIONS",
    "Accelerator",
    "BenchmarkProgram",
    "LayerTime",
    "Precision",
    "UnitKind",
    "check_precision",
    "resolve_accelerator",
    "unit_kind",
]
