"""How the benchmark program runs — the settings a job carries from its request to the phone.

`RuntimeSettings` is the one typed home of these settings: the profiler runs with it, the service's job
request extends it (adding the cluster), a task row stores one column per field, a claimed batch carries
it back to the phone, and every `MeasurementRecord` says which settings it was taken with. A new setting
is a new field here (and a column on the task and measurement tables); the hand-offs between them follow
the field list, they don't repeat it.

This module imports pydantic only, so request schemas can use it without importing the profiler.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, ValidationInfo, field_validator

from profilers.adb.units import BenchmarkProgram, Precision


def check_passes(passes: int, runs: int | None) -> int:
    """`passes` if every pass can time at least one of the `runs`, else ValueError."""
    if runs is not None and passes > runs:
        raise ValueError(f"passes ({passes}) must not exceed runs ({runs}): a pass times a run")
    return passes


class RuntimeSettings(BaseModel):
    """How the benchmark program runs: timed runs, warm-up runs, intra-op threads, passes; which program,
    at which precision, through which accelerator option, and whether it records per-layer times.

    Integers are strict (JSON `true` or `"5"` is no count), unknown fields refused.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    runs: StrictInt = Field(default=10, ge=1, le=10_000)
    warmup: StrictInt = Field(default=2, ge=0, le=1_000)
    threads: StrictInt = Field(default=1, ge=1, le=64)
    passes: StrictInt = Field(
        default=1,
        ge=1,
        le=100,
        description="split each config's runs into this many passes through its batch (at most `runs`)",
    )

    benchmark: BenchmarkProgram = Field(
        default="onnxruntime",
        description="benchmark program: onnxruntime (onnxruntime_perf_test) or tflite (benchmark_model)",
    )
    precision: Precision = Field(default="fp32", description="numeric precision: fp32, fp16 or int8")
    accelerator: str | None = Field(
        default=None,
        min_length=1,
        max_length=32,
        pattern=r"^[a-z0-9_]+$",
        description="the program's accelerator option (onnxruntime execution provider, TFLite delegate); "
        "default: the unit's first (see profilers.adb.units.ACCELERATOR_OPTIONS)",
    )
    layer_profile: StrictBool = Field(
        default=False,
        description="record per-layer times (taken in the warm-up invocation, never in the timed runs)",
    )

    @field_validator("passes")
    @classmethod
    def _a_run_per_pass(cls, value: int, info: ValidationInfo) -> int:
        # A field validator (not a model one) so the error names `passes`.
        return check_passes(value, info.data.get("runs"))

    def runs_of_pass(self, index: int) -> int:
        """Timed runs of pass `index` (0-based): spread as evenly as they go, earlier passes first."""
        base, extra = divmod(self.runs, self.passes)
        return base + (1 if index < extra else 0)

    def as_settings(self) -> RuntimeSettings:
        """These settings alone, without what a subclass (a job's request) adds."""
        if type(self) is RuntimeSettings:
            return self
        return RuntimeSettings.model_validate(self.model_dump(include=set(RuntimeSettings.model_fields)))


#: The settings' field names: the task and measurement columns that hold them are named the same.
RUNTIME_FIELDS: tuple[str, ...] = tuple(RuntimeSettings.model_fields)

__all__ = ["RUNTIME_FIELDS", "RuntimeSettings", "check_passes"]
