"""`/v1/jobs`: expansion into tasks, reuse, validation (nothing written on a bad request), cancel."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from profilers.blocks import config_hash
from service.jobs.models import Job, Task, TaskStatus
from service.measurements.models import Measurement
from tests.service.jobs.conftest import BIG, LITTLE


def _cfg(w: int = 8, **extra: Any) -> dict[str, Any]:
    return {"scale": 2, "height": 16, "width": 16, "widths": [w, w], **extra}


def _submit(client: TestClient, headers: dict[str, str], **body: Any) -> Any:
    return client.post("/v1/jobs", json={"family": "sr_block", **body}, headers=headers)


def _counts(db_session: Session) -> tuple[int, int]:
    return (
        db_session.scalar(select(func.count()).select_from(Job)) or 0,
        db_session.scalar(select(func.count()).select_from(Task)) or 0,
    )


def test_job_expands_to_device_config_frequency(
    client: TestClient, make_headers: Callable[..., dict[str, str]], make_device, db_session: Session
) -> None:
    a, b = make_device("10.0.0.1:5555"), make_device("10.0.0.2:5555")
    headers = make_headers("profile", "read")
    r = _submit(
        client, headers, configs=[_cfg(8), _cfg(4), _cfg(8)], devices=[a.id, b.id], frequencies="min-mid-max"
    )
    assert r.status_code == 202, r.text
    job = r.json()
    # Two distinct configs (the repeated one counts once) × 2 devices × 3 frequencies.
    assert job["total_tasks"] == 12
    assert job["counts"]["queued"] == 12 and job["status"] == "queued"
    tasks = list(db_session.scalars(select(Task).where(Task.job_id == job["id"])))
    assert {t.frequency_khz for t in tasks} == set(BIG)  # the fastest cluster by default
    assert {t.cluster for t in tasks} == {"big"}
    assert {t.config_hash for t in tasks} == {
        config_hash("sr_block", _cfg(8)),
        config_hash("sr_block", _cfg(4)),
    }
    assert job["created_by"].startswith("test-")
    assert client.get(f"/v1/jobs/{job['id']}", headers=headers).json()["total_tasks"] == 12


def test_selector_cluster_and_all_frequencies(
    client: TestClient, make_headers: Callable[..., dict[str, str]], make_device
) -> None:
    make_device("10.0.0.1:5555", tags=["flagship", "lab1"])
    make_device("10.0.0.2:5555", tags=["midrange"])
    make_device("10.0.0.3:5555", tags=["flagship"], enabled=False)
    r = _submit(
        client,
        make_headers("profile"),
        configs=[_cfg()],
        selector={"tags": ["flagship"]},
        frequencies="all",
        runtime={"cluster": "little", "runs": 3, "warmup": 1},
    )
    assert r.status_code == 202, r.text
    assert r.json()["total_tasks"] == len(LITTLE)


def test_identical_valid_measurement_is_reused_unless_forced(
    client: TestClient, make_headers: Callable[..., dict[str, str]], make_device, db_session: Session
) -> None:
    device = make_device("10.0.0.1:5555")
    cfg = _cfg(8)
    db_session.add(
        Measurement(
            device_id=device.id,
            family="sr_block",
            config=cfg,
            config_hash=config_hash("sr_block", cfg),
            cluster="big",
            frequency_khz=BIG[0],
            observed_frequency_khz=BIG[0],
            pinned=True,
            runtime_name="onnxruntime",
            threads=1,
            runs=3,
            warmup=1,
            median_ms=1.0,
            mean_ms=1.0,
            min_ms=1.0,
            max_ms=1.0,
            p90_ms=1.0,
            valid=True,
        )
    )
    db_session.commit()
    headers = make_headers("profile")
    body = {
        "configs": [cfg],
        "devices": [device.id],
        "frequencies": [BIG[0]],
        "runtime": {"runs": 3, "warmup": 1},
    }
    reused = _submit(client, headers, **body).json()
    assert reused["counts"]["reused"] == 1 and reused["status"] == "done"
    other_runtime = _submit(client, headers, **{**body, "runtime": {"runs": 5, "warmup": 1}}).json()
    assert other_runtime["counts"]["queued"] == 1
    # Runs split into passes are another protocol: the one-invocation record is not reused for it.
    in_passes = _submit(client, headers, **{**body, "runtime": {"runs": 3, "warmup": 1, "passes": 3}}).json()
    assert in_passes["counts"]["queued"] == 1
    forced = _submit(client, headers, **body, force=True).json()
    assert forced["counts"] == {**forced["counts"], "queued": 1, "reused": 0}


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"family": "no_such_family"}, ["body", "family"]),
        ({"configs": []}, ["body", "configs"]),
        (
            {"configs": [_cfg(), _cfg(), _cfg(), {"scale": 2, "height": 16, "width": 16, "widths": [0]}]},
            ["body", "configs", 3, "widths"],
        ),
        ({"frequencies": [123]}, ["body", "frequencies", 0]),
        ({"runtime": {"cluster": "gpu"}}, ["body", "runtime", "unit"]),
        ({"runtime": {"unit": "npu"}}, ["body", "runtime", "unit"]),
        ({"runtime": {"unit": "big", "precision": "fp16"}}, ["body", "runtime", "precision"]),
        ({"runtime": {"unit": "big", "accelerator": "qnn"}}, ["body", "runtime", "accelerator"]),
        ({"runtime": {"precision": "fp64"}}, ["body", "runtime", "precision"]),
        ({"runtime": {"runs": 2, "passes": 3}}, ["body", "runtime", "passes"]),
        ({"devices": [999_999]}, ["body", "devices", 0]),
        ({"selector": {"tags": ["nowhere"]}, "devices": None}, ["body", "selector"]),
        (
            {
                "sampler": {
                    "strategy": "random",
                    "n": 1_000_000,
                    "space": {
                        "scale": 2,
                        "height": 16,
                        "width": 16,
                        "widths": {"length": 2, "choices": [4, 8]},
                    },
                },
                "configs": None,
            },
            ["body"],
        ),
        (
            {"sampler": {"strategy": "grid", "space": {"colour": 1}}, "configs": None},
            ["body", "sampler", "space", "colour"],
        ),
    ],
)
def test_bad_job_is_422_naming_the_field_and_writes_nothing(
    client: TestClient,
    make_headers: Callable[..., dict[str, str]],
    make_device,
    db_session: Session,
    body: dict[str, Any],
    loc: list[Any],
) -> None:
    device = make_device("10.0.0.1:5555")
    request = {"family": "sr_block", "configs": [_cfg()], "devices": [device.id], **body}
    request = {k: v for k, v in request.items() if v is not None}
    r = client.post("/v1/jobs", json=request, headers=make_headers("profile"))
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert any(e["loc"][: len(loc)] == loc for e in r.json()["errors"]), r.json()
    assert _counts(db_session) == (0, 0)


def test_disabled_and_unprobed_devices_are_refused(
    client: TestClient, make_headers: Callable[..., dict[str, str]], make_device, db_session: Session
) -> None:
    disabled = make_device("10.0.0.1:5555", enabled=False)
    unprobed = make_device("10.0.0.2:5555", probed=False)
    headers = make_headers("profile")
    r = _submit(client, headers, configs=[_cfg()], devices=[disabled.id])
    assert r.status_code == 422 and "disabled" in r.json()["detail"]
    r = _submit(client, headers, configs=[_cfg()], devices=[unprobed.id])
    assert r.status_code == 422 and "probe" in r.json()["detail"]
    assert _counts(db_session) == (0, 0)


def test_task_cap_is_enforced(
    client: TestClient,
    make_headers: Callable[..., dict[str, str]],
    make_device,
    db_session: Session,
    settings,
) -> None:
    device = make_device("10.0.0.1:5555")
    settings.max_tasks_per_job = 5
    r = _submit(client, make_headers("profile"), configs=[_cfg(w) for w in range(1, 3)], devices=[device.id])
    assert r.status_code == 422 and "limit is 5" in r.json()["detail"]
    assert _counts(db_session) == (0, 0)


def test_samplers_are_seeded_and_respect_n(
    client: TestClient, make_headers: Callable[..., dict[str, str]], make_device, db_session: Session
) -> None:
    device = make_device("10.0.0.1:5555")
    space = {
        "scale": 2,
        "height": 16,
        "width": {"min": 8, "max": 16, "step": 8},
        "widths": {"length": {"min": 1, "max": 3}, "choices": [2, 4, 8]},
    }
    headers = make_headers("profile")
    hashes = []
    for strategy in ("random", "sobol", "sobol"):
        body = {
            "sampler": {"strategy": strategy, "n": 10, "space": space, "seed": 7},
            "devices": [device.id],
            "frequencies": [BIG[-1]],
        }
        job = _submit(client, headers, **body).json()
        assert job["total_tasks"] == 10
        hashes.append(sorted(db_session.scalars(select(Task.config_hash).where(Task.job_id == job["id"]))))
    assert hashes[1] == hashes[2]  # same seed, same configs
    grid = _submit(
        client,
        headers,
        sampler={"strategy": "grid", "space": space},
        devices=[device.id],
        frequencies=[BIG[-1]],
    ).json()
    assert grid["total_tasks"] == 2 * (3 + 9 + 27)


def test_cancel_turns_queued_tasks_cancelled(
    client: TestClient, make_headers: Callable[..., dict[str, str]], make_device, db_session: Session
) -> None:
    device = make_device("10.0.0.1:5555")
    headers = make_headers("profile", "read")
    job = _submit(client, headers, configs=[_cfg(2), _cfg(4)], devices=[device.id]).json()
    r = client.post(f"/v1/jobs/{job['id']}/cancel", headers=headers)
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    assert r.json()["counts"]["cancelled"] == 6
    statuses = set(db_session.scalars(select(Task.status).where(Task.job_id == job["id"])))
    assert statuses == {TaskStatus.cancelled}
    assert client.post(f"/v1/jobs/{job['id']}/cancel", headers=headers).status_code == 409
    assert client.post("/v1/jobs/999999/cancel", headers=headers).status_code == 404


def test_scopes(client: TestClient, make_headers: Callable[..., dict[str, str]], make_device) -> None:
    device = make_device("10.0.0.1:5555")
    r = _submit(client, make_headers("read"), configs=[_cfg()], devices=[device.id])
    assert r.status_code == 403
    assert client.get("/v1/jobs").status_code == 401


def test_a_profile_token_reads_the_jobs_it_submitted_only(
    client: TestClient, make_headers: Callable[..., dict[str, str]], make_device, db_session: Session
) -> None:
    device = make_device("10.0.0.1:5555")
    mine, theirs = make_headers("profile"), make_headers("profile")
    own = _submit(client, mine, configs=[_cfg(8)], devices=[device.id], frequencies="min-mid-max").json()
    other = _submit(client, theirs, configs=[_cfg(4)], devices=[device.id], frequencies="min-mid-max").json()

    got = client.get(f"/v1/jobs/{own['id']}", headers=mine)
    assert got.status_code == 200 and got.json()["id"] == own["id"]
    tasks = client.get(f"/v1/jobs/{own['id']}/tasks", headers=mine)
    assert tasks.status_code == 200 and len(tasks.json()["items"]) == own["total_tasks"]
    assert [j["id"] for j in client.get("/v1/jobs", headers=mine).json()["items"]] == [own["id"]]
    # Another token's job stays out of sight; a reader sees both.
    for path in (f"/v1/jobs/{other['id']}", f"/v1/jobs/{other['id']}/tasks"):
        hidden = client.get(path, headers=mine)
        assert hidden.status_code == 404 and hidden.headers["content-type"] == "application/problem+json"
    everything = client.get("/v1/jobs", headers=make_headers("read")).json()["items"]
    assert {j["id"] for j in everything} == {own["id"], other["id"]}
    assert client.get("/v1/jobs", headers=make_headers("predict")).status_code == 403
    assert client.get("/v1/jobs").status_code == 401


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"devices": [True]}, "devices"),
        ({"configs": [{"scale": 2, "height": 16, "width": 16, "widths": [True, 8]}]}, "configs"),
        ({"runtime": {"runs": True}}, "runs"),
        ({"devices": [2**31]}, "devices"),
        ({"frequencies": [2**31]}, "frequencies"),
        ({"priority": True}, "priority"),
    ],
)
def test_booleans_and_out_of_range_integers_are_refused(
    client: TestClient,
    make_headers: Callable[..., dict[str, str]],
    make_device,
    db_session: Session,
    change: dict[str, Any],
    field: str,
) -> None:
    device = make_device("10.0.0.1:5555")
    body = {"configs": [_cfg(8)], "devices": [device.id], **change}
    r = _submit(client, make_headers("profile"), **body)
    assert r.status_code == 422, r.text
    assert any(field in [str(p) for p in e["loc"]] or field in e["msg"] for e in r.json()["errors"]), r.text
    assert _counts(db_session) == (0, 0)
