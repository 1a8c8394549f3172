"""End to end: a small set measured from a virtual phone through the real profiler trains and serves.

24 tiny sr_block configs × 2 pinned frequencies (lowest and top of the big cluster), 3 runs each, go from
`profilers.adb.Profiler` over a `DeviceSession` into Measurement rows of a registered virtual device; the
predictor is trained, activated and queried over HTTP. SQLite only: this test is about the data path from
phone to predictions, which the engine does not change (the other predictor tests run on both engines).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from profilers.adb import DeviceSession, MeasurementRecord, Profiler, ProfileRequest, RuntimeSettings
from profilers.blocks import config_hash, get_family
from profilers.virtual_phone import VirtualPhone
from service.devices.models import Device, Transport
from service.measurements.models import Measurement
from tests.service.predictors.synthetic import FAST_PARAMS, wait_for_status

#: Tiny blocks: milliseconds on the host, still several times more work in the largest than the smallest.
TINY_SPACE = {
    "scale": {"choices": [2]},
    "height": {"choices": [16, 24, 32]},
    "width": {"choices": [16, 24, 32]},
    "kernel": {"choices": [3]},
    "widths": {"length": {"min": 1, "max": 4}, "choices": [4, 8, 16]},
    "activation": {"choices": ["relu", "prelu"]},
    "residual": {"choices": [False, True]},
}
N_CONFIGS = 24


def _tiny_configs(n: int, seed: int) -> list[dict]:
    family = get_family("sr_block")
    rng = random.Random(seed)
    found: dict[str, dict] = {}
    while len(found) < n:
        config = family.sample(rng, TINY_SPACE).model_dump(mode="json")
        found.setdefault(config_hash("sr_block", config), config)
    return list(found.values())


def _measure(tmp_path: Path, configs: list[dict]) -> tuple[list[MeasurementRecord], list[int]]:
    """Every config at the big cluster's lowest and top frequency, measured by the profiler."""
    with (
        VirtualPhone("virtual-flagship", state_dir=tmp_path / "phone", port=0) as phone,
        DeviceSession.connect(
            f"127.0.0.1:{phone.port}", key_path=tmp_path / "adbkey", command_timeout_s=60.0
        ) as session,
    ):
        profiler = Profiler(session, RuntimeSettings(runs=3, warmup=0, threads=1), cooldown_celsius=None)
        levels = profiler.facts.clusters[-1].frequencies_khz
        freqs = [levels[0], levels[-1]]
        requests = [
            ProfileRequest(family="sr_block", config=c, cluster="big", frequency_khz=f)
            for f in freqs
            for c in configs
        ]
        return list(profiler.measure(requests)), freqs


def _store(session: Session, records: list[MeasurementRecord]) -> int:
    """Register a virtual device and store the records as its measurements; returns the device id."""
    device = Device(serial="virtual-e2e", transport=Transport.tcp, is_virtual=True)
    session.add(device)
    session.flush()
    for r in records:
        session.add(
            Measurement(
                device_id=device.id,
                family=r.family,
                config=r.config,
                config_hash=r.config_hash,
                cluster=r.cluster,
                frequency_khz=r.frequency_khz,
                observed_frequency_khz=r.observed_frequency_khz,
                pinned=r.pinned,
                runtime_name=r.runtime_name,
                runtime_version=r.runtime_version,
                threads=r.threads,
                runs=r.runs,
                warmup=r.warmup,
                median_ms=r.median_ms,
                mean_ms=r.mean_ms,
                std_ms=r.std_ms,
                min_ms=r.min_ms,
                max_ms=r.max_ms,
                p90_ms=r.p90_ms if r.p90_ms is not None else r.max_ms,
                raw_runs_ms=r.raw_runs_ms,
                temperature_before_c=r.temperature_before_c,
                temperature_after_c=r.temperature_after_c,
                valid=r.valid,
                invalid_reason=r.invalid_reason,
                virtual=r.virtual,
                measured_at=r.finished_at,
            )
        )
    session.commit()
    return device.id


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_virtual_phone_measurements_train_and_serve(
    tmp_path: Path,
    client: TestClient,
    make_headers: Callable[..., dict[str, str]],
    db_session: Session,
) -> None:
    configs = _tiny_configs(N_CONFIGS, seed=3)
    records, freqs = _measure(tmp_path, configs)
    assert len(records) == 2 * N_CONFIGS
    assert all(r.virtual and r.pinned and r.median_ms > 0 for r in records)
    valid = [r for r in records if r.valid]
    assert len(valid) >= 40, [r.invalid_reason for r in records if not r.valid]  # the training minimum
    device_id = _store(db_session, records)

    profile, predict = make_headers("profile", "read"), make_headers("predict")
    created = client.post(
        "/v1/predictors",
        json={"family": "sr_block", "device": device_id, "params": FAST_PARAMS},
        headers=profile,
    )
    assert created.status_code == 202, created.text
    done = wait_for_status(client, profile, created.json()["id"])
    assert done["status"] == "ready", done["error"]
    assert done["row_count"] == len(valid)
    metrics = done["metrics"]
    assert set(metrics["per_frequency"]) == {str(f) for f in freqs}
    for per_freq in metrics["per_frequency"].values():
        assert per_freq["rmse_ms"] >= 0 and 0 <= per_freq["within_10"] <= 1
    assert metrics["split"]["holdout_configs"] >= 1 and metrics["split"]["train_configs"] >= 1

    activated = client.post(f"/v1/predictors/{done['id']}/activate", headers=profile)
    assert activated.status_code == 200 and activated.json()["active"] is True
    answer = client.post(
        "/v1/predict",
        json={"device": device_id, "family": "sr_block", "frequencies_khz": freqs, "configs": configs},
        headers=predict,
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["predictor_id"] == done["id"] and len(body["predictions"]) == 2 * N_CONFIGS
    latency = np.array([p["latency_ms"] for p in body["predictions"]]).reshape(N_CONFIGS, 2)  # config-major
    assert (latency > 0).all()
    for p in body["predictions"]:
        assert 0 < p["p10_ms"] <= p["latency_ms"] <= p["p90_ms"]
    # The same configs at the lowest clock are predicted slower than at the top clock, as measured.
    assert latency[:, 0].mean() > latency[:, 1].mean()
    assert (latency[:, 0] > latency[:, 1]).mean() >= 0.75
    measured = {(r.config_hash, r.frequency_khz): r.median_ms for r in valid}
    slow = [measured[k] for k in measured if k[1] == freqs[0]]
    fast = [measured[k] for k in measured if k[1] == freqs[1]]
    assert np.mean(slow) > np.mean(fast)
