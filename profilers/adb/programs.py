"""Which benchmark program a phone is given, and what a real phone is never given.

A latfarm virtual phone (its props say so: `DeviceFacts.is_virtual`) runs the virtual phone's stand-ins
(`profilers/virtual_phone/bin/onnxruntime_perf_test`, `…/benchmark_model`: marker files its shell runs)
unless a program is configured. Any other phone runs only a program latfarm was given
(`LATFARM_BENCHMARK_BINARY` / `LATFARM_TFLITE_BENCHMARK_BINARY`, `latfarm profile --binary` /
`--tflite-binary`): without one it is refused, and a configured file that is a stand-in (it starts with
the marker) is refused too — a stand-in on a real phone would "measure" nothing. benchmark_model on a real
phone also needs a .tflite model, which latfarm cannot make (it builds ONNX): refused, naming what is
missing. Every refusal is an :class:`UnsupportedRunError`, raised before anything runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from profilers.adb.errors import UnsupportedRunError
from profilers.adb.facts import DeviceFacts

DEVICE_BIN = "/data/local/tmp/latfarm/bin"
_VIRTUAL_BIN = Path(__file__).resolve().parents[1] / "virtual_phone" / "bin"
VIRTUAL_BENCHMARK_BINARY = _VIRTUAL_BIN / "onnxruntime_perf_test"
VIRTUAL_TFLITE_BENCHMARK_BINARY = _VIRTUAL_BIN / "benchmark_model"
#: The first bytes of every virtual stand-in program.
VIRTUAL_PROGRAM_MARKER = b"#!latfarm-virtual"


@dataclass(frozen=True)
class Program:
    """One benchmark program: its name, where it goes on the phone, its stand-in, and its setting."""

    name: str
    stand_in: Path
    setting: str

    @property
    def device_path(self) -> str:
        """Where the program is pushed on the phone."""
        return f"{DEVICE_BIN}/{self.name}"


PROGRAMS: dict[str, Program] = {
    "onnxruntime": Program(
        "onnxruntime_perf_test",
        VIRTUAL_BENCHMARK_BINARY,
        "LATFARM_BENCHMARK_BINARY (latfarm profile --binary PATH)",
    ),
    "tflite": Program(
        "benchmark_model",
        VIRTUAL_TFLITE_BENCHMARK_BINARY,
        "LATFARM_TFLITE_BENCHMARK_BINARY (latfarm profile --tflite-binary PATH)",
    ),
}


def program_file(facts: DeviceFacts, benchmark: str, configured: Path | None) -> Path:
    """The local file to push as `benchmark`'s program to this phone; UnsupportedRunError when none may go."""
    program = PROGRAMS[benchmark]
    phone = facts.model or facts.serial
    if configured is None:
        if not facts.is_virtual:
            raise UnsupportedRunError(
                f"{phone} is not a virtual phone and no {program.name} is configured: set {program.setting} "
                f"to a build of {program.name} for its ABI ({facts.abi or 'unknown'})"
            )
        return program.stand_in
    if (
        not facts.is_virtual
        and configured.read_bytes()[: len(VIRTUAL_PROGRAM_MARKER)] == VIRTUAL_PROGRAM_MARKER
    ):
        raise UnsupportedRunError(
            f"{configured} is the virtual phone's stand-in, not {program.name}; it is never pushed to a real "
            f"phone ({phone}): set {program.setting} to a real build"
        )
    return configured


def check_runnable(facts: DeviceFacts, benchmark: str, configured: Path | None) -> None:
    """Refuse, before anything runs, a program or a model format this phone cannot be given."""
    program_file(facts, benchmark, configured)
    if benchmark == "tflite" and not facts.is_virtual:
        raise UnsupportedRunError(
            "benchmark_model on a real phone needs a .tflite model, and latfarm builds ONNX: there is no "
            "ONNX→TFLite converter in latfarm; use the onnxruntime benchmark on this phone"
        )


__all__ = [
    "PROGRAMS",
    "VIRTUAL_BENCHMARK_BINARY",
    "VIRTUAL_PROGRAM_MARKER",
    "VIRTUAL_TFLITE_BENCHMARK_BINARY",
    "Program",
    "check_runnable",
    "program_file",
]
