"""The phone's GPU and NPU from devfreq sysfs, and pinning one to a clock with a guaranteed restore.

Where the kernel shows them (frequencies in devfreq files are Hz; latfarm speaks kHz):

- **Adreno** (Qualcomm kgsl): `/sys/class/kgsl/kgsl-3d0/` holds `gpu_model` ("Adreno660v1"), `gpuclk`,
  `gpu_available_frequencies` and `devfreq/` — the GPU's devfreq node (`available_frequencies`,
  `available_governors`, `governor`, `min_freq`, `max_freq`, `cur_freq`), the same node as
  `/sys/class/devfreq/<addr>.qcom,kgsl-3d0`.
- **Mali** (Arm): `/sys/class/misc/mali0/device/gpuinfo` ("Mali-G57 MC2 2 cores r1p0 0x9093") and a devfreq
  node `/sys/class/devfreq/<addr>.mali`.
- **Generic devfreq**: `/sys/class/devfreq/<name>`; a name with `gpu`, `mali` or `kgsl` is a GPU, with
  `npu` or `apu` an NPU, with `ddr`, `mif`, `dmc`, `llcc` or `dvfsrc` the memory bus. A name with `bw`
  (a bandwidth voter such as `soc:qcom,gpubw`) is no clock of a unit and is skipped.

Probing takes two round trips: one `ls /sys/class/devfreq`, one batched read of every file it needs.

Pinning (root only; the same protocol as CPU clusters in `profilers.adb.frequency`): save governor,
min_freq and max_freq; write max_freq = the top of the table (so that min = f is valid whatever the saved
limits were), min_freq = f, max_freq = f, governor `performance` (with min = max it runs at f); then read
`cur_freq` back — a mismatch (a thermal cap) is reported, not hidden. The saved state is restored on exit,
on errors and on KeyboardInterrupt alike.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Literal

from profilers.adb.errors import FrequencyPinError, UnsupportedRunError
from profilers.adb.frequency import PinnedClock, restore_after, root_mode
from profilers.adb.session import DeviceSession
from profilers.adb.sysfs import list_dir, read_files, write_file
from profilers.adb.units import Accelerator, Precision

DEVFREQ_ROOT = "/sys/class/devfreq"
KGSL_ROOT = "/sys/class/kgsl/kgsl-3d0"
MALI_GPUINFO = "/sys/class/misc/mali0/device/gpuinfo"

#: What each kind of accelerator runs (the runtime's options decide which of them a run uses).
GPU_PRECISIONS: list[Precision] = ["fp32", "fp16"]
NPU_PRECISIONS: list[Precision] = ["int8", "fp16"]

# Memory-bus devfreq names, the DRAM clock preferred over the caches' and the voters'.
_BUS_WORDS = ("ddr", "mif", "dmc", "dvfsrc", "llcc")
_GPU_WORDS = ("gpu", "mali", "kgsl")
_NPU_WORDS = ("npu", "apu")

DevfreqRole = Literal["gpu", "npu", "bus"]


def devfreq_role(name: str) -> DevfreqRole | None:
    """What a `/sys/class/devfreq` entry clocks, judged by its name (None: something else)."""
    low = name.lower()
    if any(word in low for word in _BUS_WORDS):
        return "bus"
    if "bw" in low:
        return None
    if any(word in low for word in _GPU_WORDS):
        return "gpu"
    if any(word in low for word in _NPU_WORDS):
        return "npu"
    return None


def _khz_table(hz_text: str | None) -> list[int]:
    return sorted({int(f) // 1000 for f in (hz_text or "").split() if f.isdigit() and int(f) > 0})


def _mali_model(gpuinfo: str | None) -> str:
    # "Mali-G57 MC2 2 cores r1p0 0x9093" → "Mali-G57 MC2"
    if not gpuinfo:
        return "Mali"
    line = gpuinfo.splitlines()[0].strip()
    match = re.match(r"(.+?)\s+\d+\s+cores?\b", line)
    return match.group(1) if match else line


def probe_accelerators(session: DeviceSession) -> list[Accelerator]:
    """The phone's GPU and NPU (each when present) with their clock tables and the memory bus's devfreq."""
    names = sorted(list_dir(session, DEVFREQ_ROOT))
    roles = {name: devfreq_role(name) for name in names}
    kgsl_files = ("gpu_model", "gpu_available_frequencies", "devfreq/available_frequencies")
    kgsl_paths = [f"{KGSL_ROOT}/{f}" for f in (*kgsl_files, "devfreq/available_governors")]
    node_paths = [
        f"{DEVFREQ_ROOT}/{name}/{f}"
        for name, role in roles.items()
        if role is not None
        for f in ("available_frequencies", "available_governors", "cur_freq")
    ]
    values = read_files(session, [*kgsl_paths, MALI_GPUINFO, *node_paths])

    def node(name: str, file: str) -> str | None:
        return values.get(f"{DEVFREQ_ROOT}/{name}/{file}")

    buses = [n for n in names if roles[n] == "bus" and node(n, "cur_freq")]
    buses.sort(key=lambda n: next(i for i, w in enumerate(_BUS_WORDS) if w in n.lower()))
    bus = f"{DEVFREQ_ROOT}/{buses[0]}" if buses else None

    found: list[Accelerator] = []
    kgsl_table = _khz_table(values[f"{KGSL_ROOT}/devfreq/available_frequencies"]) or _khz_table(
        values[f"{KGSL_ROOT}/gpu_available_frequencies"]
    )
    gpu_nodes = [n for n in names if roles[n] == "gpu" and _khz_table(node(n, "available_frequencies"))]
    if values[f"{KGSL_ROOT}/gpu_model"] is not None or kgsl_table:
        devfreq_ok = values[f"{KGSL_ROOT}/devfreq/available_frequencies"] is not None
        found.append(
            Accelerator(
                name="gpu",
                model=values[f"{KGSL_ROOT}/gpu_model"] or "Adreno",
                devfreq=f"{KGSL_ROOT}/devfreq" if devfreq_ok else None,
                frequencies_khz=kgsl_table,
                governors=(values[f"{KGSL_ROOT}/devfreq/available_governors"] or "").split(),
                precisions=GPU_PRECISIONS,
                bus_devfreq=bus,
            )
        )
    elif gpu_nodes or values[MALI_GPUINFO] is not None:
        # Mali's own node first (its gpuinfo names the model), then any other GPU-named devfreq.
        gpu_nodes.sort(key=lambda n: "mali" not in n.lower())
        name = gpu_nodes[0] if gpu_nodes else None
        mali = values[MALI_GPUINFO] is not None or (name is not None and "mali" in name.lower())
        found.append(
            Accelerator(
                name="gpu",
                model=_mali_model(values[MALI_GPUINFO]) if mali else str(name),
                devfreq=f"{DEVFREQ_ROOT}/{name}" if name else None,
                frequencies_khz=_khz_table(node(name, "available_frequencies")) if name else [],
                governors=(node(name, "available_governors") or "").split() if name else [],
                precisions=GPU_PRECISIONS,
                bus_devfreq=bus,
            )
        )
    npu_nodes = [n for n in names if roles[n] == "npu" and _khz_table(node(n, "available_frequencies"))]
    if npu_nodes:
        name = npu_nodes[0]
        found.append(
            Accelerator(
                name="npu",
                model=name,
                devfreq=f"{DEVFREQ_ROOT}/{name}",
                frequencies_khz=_khz_table(node(name, "available_frequencies")),
                governors=(node(name, "available_governors") or "").split(),
                precisions=NPU_PRECISIONS,
                bus_devfreq=bus,
            )
        )
    return found


def find_accelerator(accelerators: list[Accelerator], unit: str) -> Accelerator:
    """The probed `gpu` or `npu`; UnsupportedRunError naming what the phone has when it lacks `unit`."""
    for accelerator in accelerators:
        if accelerator.name == unit:
            return accelerator
    have = ", ".join(f"{a.name} ({a.model})" for a in accelerators) or "none"
    raise UnsupportedRunError(f"this phone has no {unit}; its accelerators: {have}")


def _hz_to_khz(text: str | None) -> int | None:
    return int(text) // 1000 if text and text.isdigit() else None


def read_clocks_khz(session: DeviceSession, accelerator: Accelerator) -> tuple[int | None, int | None]:
    """The unit's and the memory bus's `cur_freq` now, in kHz (None where unreadable); one round trip."""
    unit_path = f"{accelerator.devfreq}/cur_freq" if accelerator.devfreq else None
    bus_path = f"{accelerator.bus_devfreq}/cur_freq" if accelerator.bus_devfreq else None
    values = read_files(session, [p for p in (unit_path, bus_path) if p is not None])
    unit = _hz_to_khz(values.get(unit_path)) if unit_path else None
    bus = _hz_to_khz(values.get(bus_path)) if bus_path else None
    return unit, bus


def read_devfreq_khz(session: DeviceSession, accelerator: Accelerator) -> int | None:
    """The accelerator's `cur_freq` now, in kHz (None when it has no readable devfreq)."""
    return read_clocks_khz(session, accelerator)[0]


def read_bus_khz(session: DeviceSession, accelerator: Accelerator) -> int | None:
    """The memory bus's `cur_freq` now, in kHz (None when the phone shows no readable bus devfreq)."""
    return read_clocks_khz(session, accelerator)[1]


@dataclass
class PinnedDevfreq(PinnedClock):
    """A GPU's or NPU's pin (devfreq `cur_freq` read back)."""

    accelerator: Accelerator = field(kw_only=True)


def check_devfreq_khz(accelerator: Accelerator, khz: int) -> int:
    """`khz` if it is in the accelerator's clock table, else FrequencyPinError naming the table."""
    if khz not in accelerator.frequencies_khz:
        raise FrequencyPinError(
            f"{khz} kHz is not a clock of the {accelerator.name} ({accelerator.model}); "
            f"available: {accelerator.frequencies_khz}"
        )
    return khz


@contextmanager
def pin_devfreq(
    session: DeviceSession, accelerator: Accelerator, khz: int, *, root: str | None = "detect"
) -> Iterator[PinnedDevfreq]:
    """Pin the accelerator to `khz` for the `with` body and restore governor/min/max afterwards."""
    check_devfreq_khz(accelerator, khz)
    if accelerator.devfreq is None:
        raise FrequencyPinError(f"the {accelerator.name} ({accelerator.model}) shows no devfreq node to pin")
    mode = root_mode(session) if root == "detect" else root
    if mode is None:
        raise FrequencyPinError("pinning needs root; this phone has neither a root adbd nor su")
    use_su = mode == "su"
    base = accelerator.devfreq
    names = ("governor", "min_freq", "max_freq")
    state = read_files(session, [f"{base}/{n}" for n in (*names, "available_frequencies")])
    if any(state[f"{base}/{n}"] is None for n in names):
        raise FrequencyPinError(f"cannot read the devfreq state of {base}: {state}")
    saved = {n: str(state[f"{base}/{n}"]) for n in names}
    # The table in Hz as the kernel spells it: a clock such as 133333333 Hz is not 133333 kHz × 1000.
    table_hz = {int(f) // 1000: int(f) for f in (state[f"{base}/available_frequencies"] or "").split()}
    target_hz = table_hz.get(khz, khz * 1000)
    top_hz = table_hz.get(accelerator.frequencies_khz[-1], accelerator.frequencies_khz[-1] * 1000)

    def restore() -> None:
        write_file(session, f"{base}/governor", saved["governor"], use_su=use_su)
        write_file(session, f"{base}/max_freq", top_hz, use_su=use_su)
        write_file(session, f"{base}/min_freq", saved["min_freq"], use_su=use_su)
        write_file(session, f"{base}/max_freq", saved["max_freq"], use_su=use_su)

    what = f"the {accelerator.name}'s devfreq state"
    try:
        write_file(session, f"{base}/max_freq", top_hz, use_su=use_su)
        write_file(session, f"{base}/min_freq", target_hz, use_su=use_su)
        write_file(session, f"{base}/max_freq", target_hz, use_su=use_su)
        write_file(session, f"{base}/governor", "performance", use_su=use_su)
        pinned = PinnedDevfreq(khz, read_devfreq_khz(session, accelerator), saved, accelerator=accelerator)
    except BaseException as exc:
        restore_after(restore, exc, what)
        raise
    try:
        yield pinned
    except BaseException as exc:
        restore_after(restore, exc, what)
        raise
    restore()


__all__ = [
    "DEVFREQ_ROOT",
    "GPU_PRECISIONS",
    "KGSL_ROOT",
    "NPU_PRECISIONS",
    "PinnedDevfreq",
    "check_devfreq_khz",
    "devfreq_role",
    "find_accelerator",
    "pin_devfreq",
    "probe_accelerators",
    "read_bus_khz",
    "read_clocks_khz",
    "read_devfreq_khz",
]
