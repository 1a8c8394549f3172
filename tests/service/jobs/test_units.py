"""Jobs on accelerators: a unit expands to its own clock table, every refusal is a 422 with nothing queued,
reuse compares unit, precision and accelerator option. Devices are rows with `accelerators` set directly."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from profilers.blocks import config_hash
from service.devices.models import Device
from service.devices.runner import NoopRunner
from service.jobs.models import Job, Task
from service.jobs.worker import Worker
from service.measurements.models import Measurement
from service.settings import Settings

GPU = [180000, 315000, 443000, 540000, 676000]
NPU_PRECISIONS = ["int8", "fp16"]
ACCELERATORS = [
    # Listed NPU first: the device API and the jobs read them in unit order all the same.
    {
        "name": "npu",
        "model": "Virtual NPU",
        "devfreq": None,
        "frequencies_khz": [],
        "precisions": NPU_PRECISIONS,
    },
    {
        "name": "gpu",
        "model": "Adreno660v1",
        "devfreq": "/sys/class/kgsl/kgsl-3d0/devfreq",
        "frequencies_khz": list(reversed(GPU)),
        "governors": ["msm-adreno-tz", "performance"],
        "precisions": ["fp32", "fp16"],
        "bus_devfreq": "/sys/class/devfreq/ddrfreq",
    },
]


def _cfg(w: int = 8) -> dict[str, Any]:
    return {"scale": 2, "height": 16, "width": 16, "widths": [w, w]}


def _submit(client: TestClient, headers: dict[str, str], device: Device, **body: Any) -> Any:
    request = {"family": "sr_block", "configs": [_cfg()], "devices": [device.id], **body}
    return client.post("/v1/jobs", json=request, headers=headers)


def _counts(db_session: Session) -> tuple[int, int]:
    return (
        db_session.scalar(select(func.count()).select_from(Job)) or 0,
        db_session.scalar(select(func.count()).select_from(Task)) or 0,
    )


@pytest.fixture
def phone(make_device: Callable[..., Device]) -> Device:
    return make_device("10.0.0.9:5555", accelerators=ACCELERATORS)


def _tasks(db_session: Session, job_id: int) -> list[Task]:
    return list(db_session.scalars(select(Task).where(Task.job_id == job_id).order_by(Task.id)))


def test_gpu_job_expands_to_the_gpu_table(
    client: TestClient, make_headers: Callable[..., dict[str, str]], phone: Device, db_session: Session
) -> None:
    r = _submit(
        client,
        make_headers("profile"),
        phone,
        configs=[_cfg(4), _cfg(8)],
        runtime={"unit": "gpu", "precision": "fp16", "layer_profile": True},
    )
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["spec"]["runtime"]["unit"] == "gpu" and "cluster" not in job["spec"]["runtime"]
    tasks = _tasks(db_session, job["id"])
    assert len(tasks) == 6
    assert sorted({t.frequency_khz for t in tasks}) == [GPU[0], GPU[2], GPU[-1]]  # min-mid-max of the GPU
    assert {(t.cluster, t.precision, t.accelerator, t.benchmark, t.layer_profile) for t in tasks} == {
        ("gpu", "fp16", "qnn", "onnxruntime", True)
    }
    listed = client.get(f"/v1/jobs/{job['id']}/tasks", headers=make_headers("read")).json()["items"]
    assert {(t["cluster"], t["precision"], t["accelerator"]) for t in listed} == {("gpu", "fp16", "qnn")}

    everything = _submit(
        client,
        make_headers("profile"),
        phone,
        frequencies="all",
        runtime={"unit": "gpu", "benchmark": "tflite"},
    ).json()
    tasks = _tasks(db_session, everything["id"])
    assert [t.frequency_khz for t in tasks] == GPU
    assert {t.accelerator for t in tasks} == {"gpu"}  # TFLite's GPU delegate


def test_cluster_is_still_read_as_the_unit(
    client: TestClient, make_headers: Callable[..., dict[str, str]], phone: Device, db_session: Session
) -> None:
    r = _submit(client, make_headers("profile"), phone, frequencies=[GPU[1]], runtime={"cluster": "gpu"})
    assert r.status_code == 202, r.text
    assert r.json()["spec"]["runtime"]["unit"] == "gpu"
    assert [(t.cluster, t.frequency_khz, t.precision) for t in _tasks(db_session, r.json()["id"])] == [
        ("gpu", GPU[1], "fp32")
    ]
    little = _submit(
        client, make_headers("profile"), phone, frequencies="min-mid-max", runtime={"cluster": "little"}
    )
    assert {t.cluster for t in _tasks(db_session, little.json()["id"])} == {"little"}
    both = _submit(client, make_headers("profile"), phone, runtime={"cluster": "gpu", "unit": "gpu"})
    assert both.status_code == 422


def test_unpinnable_npu_runs_unpinned(
    client: TestClient, make_headers: Callable[..., dict[str, str]], phone: Device, db_session: Session
) -> None:
    r = _submit(client, make_headers("profile"), phone, runtime={"unit": "npu", "precision": "int8"})
    assert r.status_code == 202, r.text
    tasks = _tasks(db_session, r.json()["id"])
    assert [(t.cluster, t.frequency_khz, t.precision, t.accelerator) for t in tasks] == [
        ("npu", None, "int8", "nnapi")
    ]


@pytest.mark.parametrize(
    ("body", "loc", "says"),
    [
        ({"runtime": {"unit": "dsp"}}, ["body", "runtime", "unit"], "little, big, gpu, npu"),
        ({"runtime": {"unit": "gpu", "precision": "int8"}}, ["body", "runtime", "precision"], "fp32, fp16"),
        ({"runtime": {"unit": "npu", "precision": "fp32"}}, ["body", "runtime", "precision"], "int8, fp16"),
        ({"runtime": {"unit": "little", "precision": "fp16"}}, ["body", "runtime", "precision"], "fp32"),
        ({"runtime": {"unit": "gpu", "accelerator": "nnapi"}}, ["body", "runtime", "accelerator"], "qnn"),
        (
            {"runtime": {"unit": "npu", "benchmark": "tflite", "accelerator": "gpu", "precision": "int8"}},
            ["body", "runtime", "accelerator"],
            "nnapi",
        ),
        ({"runtime": {"unit": "gpu"}, "frequencies": [GPU[0], 123]}, ["body", "frequencies", 1], "540000"),
        (
            {"runtime": {"unit": "gpu"}, "frequencies": [652800]},  # a CPU clock is no GPU clock
            ["body", "frequencies", 0],
            "gpu",
        ),
        (
            {"runtime": {"unit": "npu", "precision": "int8"}, "frequencies": [100000]},
            ["body", "frequencies"],
            "no clock table",
        ),
    ],
)
def test_refusals_name_the_field_and_queue_nothing(
    client: TestClient,
    make_headers: Callable[..., dict[str, str]],
    phone: Device,
    db_session: Session,
    body: dict[str, Any],
    loc: list[Any],
    says: str,
) -> None:
    headers = make_headers("profile")
    assert _submit(client, headers, phone).status_code == 202  # something queued already, left as it is
    before = _counts(db_session)
    r = _submit(client, headers, phone, **body)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    errors = r.json()["errors"]
    assert any(e["loc"] == loc for e in errors), errors
    assert says in r.json()["detail"]
    assert _counts(db_session) == before


def test_unit_of_a_device_without_accelerators_is_refused(
    client: TestClient, make_headers: Callable[..., dict[str, str]], make_device, db_session: Session
) -> None:
    plain = make_device("10.0.0.1:5555")
    r = _submit(client, make_headers("profile"), plain, runtime={"unit": "gpu"})
    assert r.status_code == 422
    assert r.json()["errors"][0]["loc"] == ["body", "runtime", "unit"]
    assert "(it has: little, big)" in r.json()["detail"]
    assert _counts(db_session) == (0, 0)


def _gpu_measurement(device: Device, precision: str, khz: int) -> Measurement:
    cfg = _cfg()
    return Measurement(
        device_id=device.id,
        family="sr_block",
        config=cfg,
        config_hash=config_hash("sr_block", cfg),
        cluster="gpu",
        frequency_khz=khz,
        observed_frequency_khz=khz,
        pinned=True,
        runtime_name="onnxruntime",
        threads=1,
        runs=10,
        warmup=2,
        benchmark="onnxruntime",
        precision=precision,
        accelerator="qnn",
        median_ms=1.0,
        mean_ms=1.0,
        min_ms=1.0,
        max_ms=1.0,
        p90_ms=1.0,
        valid=True,
    )


def test_reuse_compares_unit_precision_and_accelerator(
    client: TestClient, make_headers: Callable[..., dict[str, str]], phone: Device, db_session: Session
) -> None:
    db_session.add(_gpu_measurement(phone, "fp32", GPU[0]))
    db_session.commit()
    headers = make_headers("profile")
    same = _submit(client, headers, phone, frequencies=[GPU[0]], runtime={"unit": "gpu"}).json()
    assert same["counts"]["reused"] == 1 and same["status"] == "done"
    # The same config at the same clock, at fp16: the fp32 measurement does not stand in for it.
    fp16 = _submit(client, headers, phone, frequencies=[GPU[0]], runtime={"unit": "gpu", "precision": "fp16"})
    assert fp16.json()["counts"] == {**fp16.json()["counts"], "queued": 1, "reused": 0}
    # Another program (TFLite's GPU delegate) is another measurement too.
    tflite = _submit(
        client, headers, phone, frequencies=[GPU[0]], runtime={"unit": "gpu", "benchmark": "tflite"}
    )
    assert tflite.json()["counts"]["queued"] == 1
    # Nor does a GPU clock reuse a CPU measurement at the same number.
    cpu = _submit(client, headers, phone, frequencies="all", runtime={"unit": "little"}).json()
    assert cpu["counts"]["reused"] == 0


def test_unit_precision_and_option_travel_to_the_stored_measurement(
    client: TestClient,
    make_headers: Callable[..., dict[str, str]],
    phone: Device,
    db_session: Session,
    session_factory: sessionmaker[Session],
    settings: Settings,
) -> None:
    headers = make_headers("profile")
    runtime = {"unit": "gpu", "precision": "fp16", "layer_profile": True, "runs": 3}
    gpu = _submit(client, headers, phone, frequencies=[GPU[0], GPU[-1]], runtime=runtime).json()
    npu = _submit(
        client, headers, phone, runtime={"unit": "npu", "precision": "int8", "benchmark": "tflite"}
    ).json()
    Worker(session_factory, settings, NoopRunner()).run(once=True)
    db_session.expire_all()
    stored = db_session.scalars(select(Measurement).order_by(Measurement.frequency_khz)).all()
    by_job = {
        job: [
            (m.cluster, m.frequency_khz, m.precision, m.benchmark, m.accelerator, m.layer_profile)
            for m in stored
            if m.job_id == job
        ]
        for job in (gpu["id"], npu["id"])
    }
    assert sorted(by_job[gpu["id"]], key=str) == [
        ("gpu", GPU[0], "fp16", "onnxruntime", "qnn", True),
        ("gpu", GPU[-1], "fp16", "onnxruntime", "qnn", True),
    ]
    assert by_job[npu["id"]] == [("npu", None, "int8", "tflite", "nnapi", False)]
