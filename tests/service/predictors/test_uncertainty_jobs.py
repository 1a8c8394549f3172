"""`sampler.strategy = "uncertainty"` in `POST /v1/jobs`: each device measures where its predictor is unsure.

The predictor is trained on synthetic data that is dense for narrow blocks (every width ≤ 24) and holds only
a handful of wide ones, so its p10–p90 bands vary across the space; the job must pick, per device, the
widest bands among its random candidates — wider on average than a random draw of the same size.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from profilers.blocks import config_hash, get_family
from service.devices.models import Device, DeviceStatus, Transport
from service.jobs.models import Job, Task
from service.jobs.sampling import candidate_configs, sample_configs
from service.jobs.schemas import SamplerSpec
from service.predictors.models import Predictor
from service.predictors.registry import load_latency_model
from service.predictors.service import activate_predictor
from service.predictors.training import TrainingRows
from service.settings import Settings
from tests.service.predictors.synthetic import (
    FREQUENCIES,
    SPACE,
    insert_rows,
    law_ms,
    train_now,
)
from tests.service.predictors.synthetic import sample_configs as synthetic_configs

N, CANDIDATES, SEED = 8, 80, 5


def _probed_device(session: Session, serial: str) -> int:
    """A device whose big cluster runs the synthetic frequencies (jobs need a probed frequency table), and
    a GPU with the same table."""
    device = Device(
        serial=serial,
        transport=Transport.tcp,
        address=serial,
        is_virtual=True,
        status=DeviceStatus.online,
        clusters=[{"name": "big", "cpus": [0, 1, 2, 3], "frequencies_khz": FREQUENCIES}],
        accelerators=[{"name": "gpu", "frequencies_khz": FREQUENCIES, "precisions": ["fp32", "fp16"]}],
    )
    session.add(device)
    session.commit()
    return device.id


def _sparse_rows(seed: int) -> TrainingRows:
    """Synthetic rows (the known law, 3 % noise): 60 narrow configs, only 3 with a width above 24."""
    family = get_family("sr_block")
    rng = np.random.default_rng(seed)
    pool = synthetic_configs(400, seed)
    narrow = [c for c in pool if max(c["widths"]) <= 24][:60]
    wide = [c for c in pool if max(c["widths"]) > 24][:3]
    ids, configs, hashes, freqs, ms = [], [], [], [], []
    for config in narrow + wide:
        flops = family.costs(config).flops
        for f in FREQUENCIES:
            ids.append(len(ids) + 1)
            configs.append(config)
            hashes.append(config_hash("sr_block", config))
            freqs.append(f)
            ms.append(law_ms(flops, f) * (1.0 + rng.normal(0.0, 0.03)))
    n = len(ids)
    return TrainingRows("sr_block", ids, configs, hashes, freqs, [1] * n, ["big"] * n, ms)


def _band(session: Session, predictor_id: int, configs: list[dict[str, Any]], khz: int) -> np.ndarray:
    """Relative p10–p90 band of each config under the predictor, as `select_uncertain` ranks them."""
    result = load_latency_model(session, predictor_id).predict(configs, [khz])
    return (result.p90_ms - result.p10_ms) / result.latency_ms


def _sampler(**extra: Any) -> dict[str, Any]:
    return {"strategy": "uncertainty", "n": N, "space": SPACE, "seed": SEED, **extra}


def _submit(
    client: TestClient,
    headers: dict[str, str],
    device_ids: list[int],
    runtime: dict[str, Any] | None = None,
    **sampler: Any,
) -> Any:
    body = {
        "family": "sr_block",
        "sampler": _sampler(**sampler),
        "devices": device_ids,
        "frequencies": [FREQUENCIES[1], FREQUENCIES[2]],
        "runtime": runtime or {},
    }
    return client.post("/v1/jobs", json=body, headers=headers)


def _rows_written(session: Session) -> tuple[int, int]:
    session.rollback()
    return (
        session.scalar(select(func.count()).select_from(Job)) or 0,
        session.scalar(select(func.count()).select_from(Task)) or 0,
    )


def test_uncertainty_job_measures_the_widest_bands(
    client: TestClient,
    make_headers: Callable[..., dict[str, str]],
    db_session: Session,
    session_factory: sessionmaker[Session],
    settings: Settings,
) -> None:
    device = _probed_device(db_session, "uncertain-1")
    insert_rows(db_session, device, _sparse_rows(seed=3))
    predictor = train_now(session_factory, settings, device)
    assert predictor.status.value == "ready", predictor.error
    activate_predictor(db_session, predictor.id)

    r = _submit(client, make_headers("profile", "read"), [device], candidates=CANDIDATES)
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["total_tasks"] == N * 2  # n configs × the job's two frequencies
    assert job["spec"]["sampler"]["candidates"] == CANDIDATES

    db_session.rollback()
    tasks = list(db_session.scalars(select(Task).where(Task.job_id == job["id"])))
    chosen = list({t.config_hash: t.config for t in tasks}.values())
    assert len(chosen) == N and {t.frequency_khz for t in tasks} == {FREQUENCIES[1], FREQUENCIES[2]}

    # The bands are read at the first of the job's frequencies on the device.
    khz = FREQUENCIES[1]
    family = get_family("sr_block")
    spec = SamplerSpec.model_validate(_sampler(candidates=CANDIDATES))
    candidates = [c.model_dump(mode="json") for c in candidate_configs(family, spec)]
    assert all(c in candidates for c in chosen)
    widths = _band(db_session, predictor.id, candidates, khz)
    assert widths.max() > widths.min()  # the sparse region makes the bands differ at all
    chosen_width = _band(db_session, predictor.id, chosen, khz)
    assert np.allclose(sorted(chosen_width, reverse=True), sorted(widths, reverse=True)[:N])

    random_draw = sample_configs(family, SamplerSpec(strategy="random", n=N, space=SPACE, seed=SEED))
    random_width = _band(db_session, predictor.id, [c.model_dump(mode="json") for c in random_draw], khz)
    assert len(random_draw) == N
    assert chosen_width.mean() > random_width.mean(), (chosen_width, random_width)


def test_uncertainty_job_without_an_active_predictor_is_409_and_writes_nothing(
    client: TestClient,
    make_headers: Callable[..., dict[str, str]],
    db_session: Session,
    session_factory: sessionmaker[Session],
    settings: Settings,
) -> None:
    headers = make_headers("profile", "read")
    ready = _probed_device(db_session, "uncertain-2")
    bare = _probed_device(db_session, "uncertain-3")
    insert_rows(db_session, ready, _sparse_rows(seed=4))
    predictor = train_now(session_factory, settings, ready)
    assert predictor.status.value == "ready", predictor.error

    # Trained but not active: still no predictor to rank with.
    r = _submit(client, headers, [ready])
    assert r.status_code == 409, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert "train and activate" in r.json()["detail"] and f"device {ready}" in r.json()["detail"]
    assert _rows_written(db_session) == (0, 0)

    # One device ready, the other not: the whole job is refused, not half-written.
    activate_predictor(db_session, predictor.id)
    r = _submit(client, headers, [ready, bare])
    assert r.status_code == 409, r.text
    assert f"device {bare}" in r.json()["detail"]
    assert _rows_written(db_session) == (0, 0)
    assert db_session.scalar(select(func.count()).select_from(Predictor)) == 1

    # The active predictor knows the big cluster only: it cannot rank candidates for the GPU.
    r = _submit(client, headers, [ready], {"unit": "gpu"})
    assert r.status_code == 422, r.text
    assert r.json()["errors"][0]["loc"] == ["body", "runtime", "unit"], r.json()
    assert "never on 'gpu'" in r.json()["detail"]
    assert _rows_written(db_session) == (0, 0)


def test_uncertainty_sampler_fields_are_checked(
    client: TestClient, make_headers: Callable[..., dict[str, str]], db_session: Session, settings: Settings
) -> None:
    headers = make_headers("profile", "read")
    device = _probed_device(db_session, "uncertain-4")
    cases: list[tuple[dict[str, Any], str]] = [
        (_sampler(candidates=N - 1), "must be at least n"),
        ({**_sampler(candidates=40), "strategy": "random"}, "only applies to the uncertainty sampler"),
        (_sampler(candidates=settings.max_predict_configs + 1), "LATFARM_MAX_PREDICT_CONFIGS"),
    ]
    for sampler, message in cases:
        body = {"family": "sr_block", "sampler": sampler, "devices": [device], "frequencies": "all"}
        r = client.post("/v1/jobs", json=body, headers=headers)
        assert r.status_code == 422, r.text
        problem = r.json()
        assert message in str(problem), problem
        assert any("sampler" in e["loc"] for e in problem["errors"]), problem
    assert _rows_written(db_session) == (0, 0)
