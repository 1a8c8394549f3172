"""Seeded farms for the dashboard tests: devices, measurements, a job in several states, a predictor.

Rows are written straight through the ORM (the dashboard only reads them), so each test knows every number
the pages must show.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from sqlalchemy.orm import Session

from profilers.blocks import config_hash
from service.db import utcnow
from service.devices.models import Device, DeviceStatus, Transport
from service.jobs.models import Job, JobStatus, Task, TaskStatus
from service.measurements.models import Measurement
from service.predictors.models import Predictor, PredictorStatus

FREQUENCIES_KHZ = (800_000, 1_400_000, 2_000_000)
WIDTH_CHOICES = (8, 16, 32)


@dataclass
class Seeded:
    """Ids and expectations of a seeded farm."""

    device_id: int
    other_device_id: int
    job_id: int
    predictor_id: int
    #: (config_hash, frequency_khz) → the median the table must show (the newest valid measurement).
    medians: dict[tuple[str, int], float] = field(default_factory=dict)
    #: config_hash → (depth, widest width)
    shapes: dict[str, tuple[int, int]] = field(default_factory=dict)


def sr_configs(n: int) -> list[dict]:
    """`n` distinct sr_block configs over depths 1–5 and widths 8–32."""
    configs = []
    for depth, width, act in itertools.product(range(1, 6), WIDTH_CHOICES, ("relu", "prelu")):
        configs.append(
            {
                "scale": 2,
                "height": 90,
                "width": 160,
                "kernel": 3,
                "widths": [width] * (depth + 1),
                "activation": act,
                "residual": False,
            }
        )
    return configs[:n]


def _measurement(device: Device, config: dict, khz: int, median: float, **extra: object) -> Measurement:
    values: dict[str, object] = {
        "device_id": device.id,
        "family": "sr_block",
        "config": config,
        "config_hash": config_hash("sr_block", config),
        "cluster": "big",
        "frequency_khz": khz,
        "observed_frequency_khz": khz,
        "pinned": True,
        "runtime_name": "onnxruntime",
        "runtime_version": "1.20",
        "threads": 1,
        "runs": 10,
        "warmup": 2,
        "passes": 2,
        "median_ms": median,
        "mean_ms": median * 1.01,
        "std_ms": median * 0.02,
        "min_ms": median * 0.97,
        "max_ms": median * 1.08,
        "p90_ms": median * 1.04,
        "raw_runs_ms": [],
        "valid": True,
        "virtual": device.is_virtual,
        "measured_at": utcnow(),
    }
    values.update(extra)
    return Measurement(**values)


def seed_farm(session: Session, n_configs: int = 30) -> Seeded:
    """A virtual phone with `n_configs` sr_block configs × 3 frequencies, an offline phone, a job, a
    predictor."""
    phone = Device(
        serial="127.0.0.1:5555",
        transport=Transport.tcp,
        address="127.0.0.1:5555",
        name="virtual-pixel",
        model="Pixel 7 (virtual)",
        manufacturer="Google",
        soc="Tensor G2",
        is_virtual=True,
        status=DeviceStatus.busy,
        temperature_c=41.5,
        current_frequencies_khz={"big": 2_000_000},
        clusters=[{"name": "big", "cpus": [4, 5, 6, 7], "frequencies_khz": list(FREQUENCIES_KHZ)}],
        last_seen_at=utcnow(),
    )
    broken = Device(
        serial="R58M123",
        transport=Transport.usb,
        name="old-galaxy",
        status=DeviceStatus.offline,
        last_error="adb: device offline after 3 attempts",
    )
    session.add_all([phone, broken])
    session.flush()

    seeded = Seeded(device_id=phone.id, other_device_id=broken.id, job_id=0, predictor_id=0)
    rows = []
    for i, config in enumerate(sr_configs(n_configs)):
        digest = config_hash("sr_block", config)
        depth, width = len(config["widths"]) - 1, max(config["widths"])
        seeded.shapes[digest] = (depth, width)
        for khz in FREQUENCIES_KHZ:
            # Distinct, irregular numbers so a sort or a wrong column shows.
            median = round(depth * width * 2.0e5 / khz + (i % 7) * 0.137 + 0.5, 6)
            # An older measurement of the same point that the table must not show.
            rows.append(_measurement(phone, config, khz, median * 3))
            rows.append(_measurement(phone, config, khz, median))
            seeded.medians[(digest, khz)] = median
        # Invalid rows never reach the table.
        rows.append(
            _measurement(phone, config, FREQUENCIES_KHZ[0], 999.0, valid=False, invalid_reason="throttled")
        )
    session.add_all(rows)

    job = Job(
        family="sr_block",
        spec={"configs": n_configs},
        status=JobStatus.running,
        total_tasks=6,
        created_by="test",
        started_at=utcnow() - dt.timedelta(minutes=2),
    )
    session.add(job)
    session.flush()
    seeded.job_id = job.id
    statuses = [
        TaskStatus.done,
        TaskStatus.reused,
        TaskStatus.failed,
        TaskStatus.leased,
        TaskStatus.queued,
        TaskStatus.queued,
    ]
    for n, status in enumerate(statuses):
        config = sr_configs(6)[n]
        session.add(
            Task(
                job_id=job.id,
                device_id=phone.id,
                family="sr_block",
                config=config,
                config_hash=config_hash("sr_block", config),
                cluster="big",
                frequency_khz=FREQUENCIES_KHZ[-1],
                runs=10,
                warmup=2,
                threads=1,
                status=status,
                attempts=3 if status is TaskStatus.failed else 1,
                last_error="benchmark exited 134: model load failed" if status is TaskStatus.failed else None,
                started_at=utcnow() - dt.timedelta(seconds=90 - n),
                duration_s=2.0 if status in (TaskStatus.done, TaskStatus.failed) else None,
            ),
        )

    holdout = [
        {
            "config_hash": f"h{i}",
            "frequency_khz": 2_000_000,
            "measured_ms": 1.0 + i,
            "predicted_ms": (1.0 + i) * f,
        }
        for i, f in enumerate([0.95, 1.02, 1.2, 0.99, 1.05, 0.85, 1.01, 1.0])
    ]
    for version, active in ((1, False), (2, True)):
        predictor = Predictor(
            family="sr_block",
            device_id=phone.id,
            version=version,
            status=PredictorStatus.ready,
            metrics={"rmse_ms": 0.12 * version, "mape": 4.2 / version, "within_10_pct": 75.0},
            holdout=holdout,
            row_count=90,
            model=b"model-bytes",
            active=active,
            finished_at=utcnow(),
        )
        session.add(predictor)
        session.flush()
        seeded.predictor_id = predictor.id
    session.commit()
    return seeded


GPU_KHZ = (315_000, 840_000)
NPU_KHZ = (1_000_000,)
GPU = {
    "name": "gpu",
    "model": "Adreno660v1",
    "devfreq": "/sys/class/kgsl/kgsl-3d0/devfreq",
    "frequencies_khz": [315_000, 443_000, 540_000, 608_000, 738_000, 840_000],
    "governors": ["msm-adreno-tz", "performance", "powersave", "userspace", "simple_ondemand"],
    "precisions": ["fp32", "fp16"],
    "bus_devfreq": "/sys/class/devfreq/ddrfreq",
}
NPU = {
    "name": "npu",
    "model": "virtual NPU",
    "devfreq": "/sys/class/devfreq/19000000.npu",
    "frequencies_khz": list(NPU_KHZ),
    "precisions": ["fp16", "int8"],
}


@dataclass
class AcceleratorSeed:
    """Ids and expectations of the GPU/NPU rows added to a seeded phone."""

    #: (unit, precision) → the config hashes measured there.
    configs: dict[tuple[str, str], set[str]] = field(default_factory=dict)
    #: (unit, precision, config_hash, khz) → median shown.
    medians: dict[tuple[str, str, str, int], float] = field(default_factory=dict)
    #: measurement id → its layers (as stored) for the rows that carry a per-layer profile.
    layers: dict[int, list[dict]] = field(default_factory=dict)
    #: the GPU rows without a per-layer profile (one config's, at each clock).
    plain_ids: set[int] = field(default_factory=set)


def _layers(config: dict, unit: str, scale: float) -> list[dict]:
    """A per-layer profile of an sr_block: one Conv per width step, then the pixel shuffle; on the NPU the
    DepthToSpace falls back to the CPU (as an unsupported op does)."""
    widths = config["widths"]
    out = [
        {"name": f"/body.{i}/Conv", "op_type": "Conv", "ms": round(scale * (i + 1) * w / 16, 4), "unit": unit}
        for i, w in enumerate(widths)
    ]
    out.append(
        {
            "name": "/upsample/DepthToSpace",
            "op_type": "DepthToSpace",
            "ms": round(scale * 0.3, 4),
            "unit": "cpu" if unit == "npu" else unit,
        }
    )
    return out


def seed_accelerator_rows(session: Session, device_id: int, n_configs: int = 6) -> AcceleratorSeed:
    """GPU (fp32 and fp16 at two clocks) and NPU (int8) measurements with per-layer profiles on the phone
    `device_id`, which gains a probed Adreno GPU and an NPU. fp16 is faster than fp32, as on a real GPU."""
    device = session.get(Device, device_id)
    assert device is not None
    device.accelerators = [GPU, NPU]
    out = AcceleratorSeed()
    rows: list[tuple[Measurement, bool]] = []
    plans = [("gpu", "fp32", GPU_KHZ, 1.0), ("gpu", "fp16", GPU_KHZ, 0.55), ("npu", "int8", NPU_KHZ, 0.3)]
    for unit, precision, clocks, factor in plans:
        configs = sr_configs(n_configs) if unit == "gpu" else sr_configs(n_configs)[: n_configs // 2]
        for i, config in enumerate(configs):
            digest = config_hash("sr_block", config)
            out.configs.setdefault((unit, precision), set()).add(digest)
            for khz in clocks:
                median = round(factor * (2.0 + i) * 840_000 / khz, 6)
                with_layers = not (unit == "gpu" and precision == "fp32" and i == 0)
                row = _measurement(
                    device,
                    config,
                    khz,
                    median,
                    cluster=unit,
                    precision=precision,
                    accelerator="qnn" if unit == "gpu" else "nnapi",
                    bus_frequency_khz=2_092_000,
                    layer_profile=with_layers,
                    layers=_layers(config, unit, median / 10) if with_layers else None,
                )
                rows.append((row, with_layers))
                out.medians[(unit, precision, digest, khz)] = median
    session.add_all([r for r, _ in rows])
    session.flush()
    for row, with_layers in rows:
        if with_layers:
            out.layers[row.id] = list(row.layers or [])
        else:
            out.plain_ids.add(row.id)
    session.commit()
    return out


@pytest.fixture(scope="session")
def seed_accelerators() -> Callable[..., AcceleratorSeed]:
    """`seed_accelerator_rows` itself: GPU/NPU rows with per-layer profiles on a seeded phone."""
    return seed_accelerator_rows


@pytest.fixture
def seeded(db_session: Session) -> Seeded:
    """The seeded farm in this test's database."""
    return seed_farm(db_session)


@pytest.fixture(scope="session")
def seed_function() -> Callable[..., Seeded]:
    """`seed_farm` itself, for tests that seed a database of their own (the browser tests)."""
    return seed_farm


@pytest.fixture(scope="session")
def new_measurement() -> Callable[..., Measurement]:
    """`new_measurement(device, config, khz, median, **columns)` → an unsaved sr_block measurement row."""
    return _measurement


@pytest.fixture(scope="session")
def configs_of_seed() -> Callable[[int], list[dict]]:
    """`configs_of_seed(n)` → the first `n` sr_block configs the seed measures."""
    return sr_configs
