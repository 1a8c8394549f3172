"""End to end: one bootstrap call profiles a virtual phone through the in-process worker and ends with an
active predictor scored on its own held-out set.

The API runs as `latfarm serve --with-worker` does (the worker thread steps the campaign, measures the
phone and trains); the phone is a virtual phone speaking ADB. Tiny sr_block configs, 3 runs, two clocks,
6 held-out configs and rounds of 8: a few dozen benchmarks in all. SQLite only: the engines are covered by
`test_campaigns_api.py`; this test is about the path from one call to a served predictor.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from profilers.virtual_phone import VirtualPhone
from service.app import create_app
from service.jobs.worker import attach_background_worker
from service.settings import Settings
from tests.service.predictors.synthetic import FAST_PARAMS
from tests.service.predictors.test_virtual_phone_e2e import TINY_SPACE

WAIT_S = 120.0


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_one_bootstrap_call_ends_with_an_active_scored_predictor(
    make_headers: Callable[..., dict[str, str]], settings: Settings, tmp_path: Path
) -> None:
    settings.worker_poll_seconds = 0.1
    settings.worker_batch_size = 8
    settings.cooldown_celsius = 95
    settings.min_training_rows = 16
    app = create_app(settings)
    attach_background_worker(app, settings)
    headers = make_headers("admin")
    with (
        VirtualPhone(profile="virtual-flagship", state_dir=tmp_path / "phone") as phone,
        TestClient(app) as client,
    ):
        phone_body = {"serial": phone.serial, "transport": "tcp"}
        device = client.post("/v1/devices", json=phone_body, headers=headers)
        assert device.status_code == 201 and device.json()["status"] == "online", device.text
        fastest = max(device.json()["clusters"], key=lambda c: max(c["frequencies_khz"]))
        clocks = [min(fastest["frequencies_khz"]), max(fastest["frequencies_khz"])]
        body = {
            "family": "sr_block",
            "space": TINY_SPACE,
            "frequencies": clocks,
            "target_accuracy": 0.8,
            "max_configs": 6 + 3 * 8,
            "configs_per_round": 8,
            "holdout_size": 6,
            "candidates": 60,
            "runtime": {"runs": 3, "warmup": 0},
            "params": FAST_PARAMS,
        }
        started = client.post(f"/v1/devices/{device.json()['id']}/bootstrap", json=body, headers=headers)
        assert started.status_code == 202, started.text
        campaign = _wait_until_finished(client, headers, started.json()["id"])

        assert campaign["status"] in ("succeeded", "budget_exhausted"), campaign["reason"]
        scored = [r for r in campaign["rounds"] if r["phase"] == "scored"]
        assert scored and all(0.0 <= r["within_10"] <= 1.0 and r["minutes"] >= 0 for r in scored)
        if campaign["status"] == "succeeded":
            assert scored[-1]["within_10"] >= 0.8
        best = client.get(f"/v1/predictors/{campaign['best_predictor_id']}", headers=headers).json()
        assert best["active"] and best["status"] == "ready" and best["device_id"] == device.json()["id"]
        assert best["filters"]["unit"] == fastest["name"] and best["filters"]["frequencies_khz"] == clocks
        # Every measurement came from the phone, through ordinary profiling jobs the campaign submitted.
        for r in campaign["rounds"]:
            job = client.get(f"/v1/jobs/{r['job_id']}", headers=headers).json()
            assert job["status"] == "done" and job["created_by"] == "campaign"


def _wait_until_finished(client: TestClient, headers: dict[str, str], campaign_id: int) -> dict[str, Any]:
    """Poll the campaign (bounded) until it is no longer running."""
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        body: dict[str, Any] = client.get(f"/v1/campaigns/{campaign_id}", headers=headers).json()
        if body["status"] != "running":
            return body
        time.sleep(0.2)
    raise AssertionError(f"campaign {campaign_id} still running after {WAIT_S} s: {body}")
