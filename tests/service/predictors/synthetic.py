"""Synthetic measurements with a known latency law, and quick training helpers.

Law: latency_ms = FLOPs / (4 · f_kHz) + 0.5, times (1 + 1 % Gaussian noise) — a 4-FLOPs-per-cycle core with
a fixed half-millisecond overhead. Tiny boosters (`FAST_PARAMS`) keep each training near a second.
"""

from __future__ import annotations

import random
import time
import uuid
from typing import Any

import numpy as np
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from profilers.blocks import config_hash, get_family
from service.devices.models import Device, Transport
from service.measurements.models import Measurement
from service.predictors.models import Predictor
from service.predictors.schemas import PredictorCreate, TrainParams
from service.predictors.service import create_predictor
from service.predictors.trainer import train_predictor, trainer_name
from service.predictors.training import TrainingRows
from service.settings import Settings

FREQUENCIES = [800_000, 1_600_000, 2_400_000]
FAST_PARAMS = {"n_estimators": 120, "learning_rate": 0.1, "early_stopping_rounds": 20}
SPACE = {
    "scale": {"choices": [2]},
    "height": {"choices": [45, 90]},
    "width": {"choices": [80, 160]},
    "kernel": {"choices": [3]},
    "widths": {"length": {"min": 2, "max": 9}, "choices": [8, 12, 16, 24, 32, 48, 64]},
    "activation": {"choices": ["relu", "prelu"]},
    "residual": {"choices": [False, True]},
}


def law_ms(flops: float, frequency_khz: float) -> float:
    """The synthetic device's noiseless latency."""
    return flops / (4.0 * frequency_khz) + 0.5


def sample_configs(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """`n` distinct sr_block configs from `SPACE`."""
    family = get_family("sr_block")
    rng = random.Random(seed)
    found: dict[str, dict[str, Any]] = {}
    while len(found) < n:
        config = family.sample(rng, SPACE).model_dump(mode="json")
        found.setdefault(config_hash("sr_block", config), config)
    return list(found.values())


def synthetic_rows(
    n_configs: int, frequencies: list[int] = FREQUENCIES, seed: int = 0, noise: float = 0.01
) -> TrainingRows:
    """Training rows following the law (no database)."""
    family = get_family("sr_block")
    rng = np.random.default_rng(seed)
    ids, configs, hashes, freqs, ms = [], [], [], [], []
    for config in sample_configs(n_configs, seed):
        flops = family.costs(config).flops
        for f in frequencies:
            ids.append(len(ids) + 1)
            configs.append(config)
            hashes.append(config_hash("sr_block", config))
            freqs.append(f)
            ms.append(law_ms(flops, f) * (1.0 + rng.normal(0.0, noise)))
    n = len(ids)
    return TrainingRows("sr_block", ids, configs, hashes, freqs, [1] * n, ["big"] * n, ms)


def add_device(session: Session) -> int:
    """A registered (virtual) device; returns its id."""
    device = Device(serial=f"synthetic-{uuid.uuid4().hex[:8]}", transport=Transport.tcp, is_virtual=True)
    session.add(device)
    session.commit()
    return device.id


def insert_rows(session: Session, device_id: int, rows: TrainingRows) -> None:
    """Store training rows as valid measurements of `device_id` (on their units, at their precisions)."""
    precisions = rows.precision_of_rows()
    for i in range(len(rows)):
        ms = float(rows.median_ms[i])
        session.add(
            Measurement(
                device_id=device_id,
                family=rows.family,
                config=dict(rows.configs[i]),
                config_hash=rows.config_hashes[i],
                cluster=rows.clusters[i],
                frequency_khz=rows.frequencies_khz[i],
                observed_frequency_khz=rows.frequencies_khz[i],
                pinned=True,
                runtime_name="onnxruntime",
                threads=rows.threads[i],
                precision=precisions[i],
                runs=5,
                warmup=1,
                median_ms=ms,
                mean_ms=ms,
                min_ms=ms,
                max_ms=ms,
                p90_ms=ms,
                virtual=True,
            )
        )
    session.commit()


def train_now(
    session_factory: sessionmaker[Session], settings: Settings, device_id: int, **params: Any
) -> Predictor:
    """Create and train a predictor synchronously (the functions a trainer runs); created already leased
    to this caller, so an app's trainer thread running alongside leaves it alone."""
    owner = trainer_name("test")
    with session_factory() as session:
        data = PredictorCreate(
            family="sr_block", device=device_id, params=TrainParams(**{**FAST_PARAMS, **params})
        )
        predictor_id = create_predictor(session, data, settings, claimed_by=owner).id
    assert train_predictor(session_factory, predictor_id, settings, owner=owner)
    with session_factory() as session:
        predictor = session.get(Predictor, predictor_id)
        assert predictor is not None
        return predictor


def wait_for_status(
    client: TestClient, headers: dict[str, str], predictor_id: int, deadline_s: float = 120.0
) -> dict[str, Any]:
    """Poll `GET /v1/predictors/{id}` (bounded) until it leaves `training`."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        body = client.get(f"/v1/predictors/{predictor_id}", headers=headers).json()
        if body["status"] != "training":
            return body
        time.sleep(0.05)
    raise AssertionError(f"predictor {predictor_id} still training after {deadline_s} s")
