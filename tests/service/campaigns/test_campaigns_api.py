"""Bootstrap campaigns over HTTP and their runner, on both engines: the 4xx answers, rounds to the target
or a budget, cancel halfway, and a runner that dies and is replaced.

The phone is synthetic (`conftest.measure`: a known latency law written as a worker would store it) and
trainings run when the test says so, so each step of a campaign can be looked at.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from profilers.blocks import config_hash
from service.campaigns.models import Campaign, CampaignRound
from service.db import utcnow
from service.jobs import queue
from service.jobs.models import Job, Task, TaskStatus
from service.measurements.models import Measurement
from service.predictors.models import Predictor, PredictorStatus
from service.predictors.service import activate_predictor
from service.predictors.trainer import train_predictor
from service.settings import Settings
from tests.service.campaigns.conftest import Drive, campaign_body, measure
from tests.service.predictors.synthetic import (
    FREQUENCIES,
    insert_rows,
    sample_configs,
    synthetic_rows,
    train_now,
)

PROBLEM = "application/problem+json"


def _start(client: TestClient, headers: dict[str, str], device: int, **overrides: object) -> dict:
    r = client.post(f"/v1/devices/{device}/bootstrap", json=campaign_body(**overrides), headers=headers)
    assert r.status_code == 202, r.text
    return r.json()


def _problem(
    client: TestClient, headers: dict[str, str], device: int, status: int, **overrides: object
) -> dict:
    r = client.post(f"/v1/devices/{device}/bootstrap", json=campaign_body(**overrides), headers=headers)
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == PROBLEM
    return r.json()


# -- bad input --------------------------------------------------------------------------------------------
def test_bad_requests_answer_problems_naming_the_cause(
    client: TestClient, admin_headers: dict[str, str], make_device: Callable[..., int], db_session: Session
) -> None:
    device = make_device()
    assert "device 999 does not exist" in _problem(client, admin_headers, 999, 404)["detail"]
    for field in ("max_configs", "max_minutes"):
        body = _problem(client, admin_headers, device, 422, **{field: 0})
        assert [e["loc"] for e in body["errors"]] == [["body", field]]
    body = _problem(client, admin_headers, device, 422, family="no_such_family")
    assert body["errors"][0]["loc"] == ["body", "family"]
    body = _problem(client, admin_headers, device, 422, unit="npu")
    assert body["errors"][0]["loc"] == ["body", "unit"] and "has no unit 'npu'" in body["detail"]
    body = _problem(client, admin_headers, device, 422, frequencies=[123])
    assert body["errors"][0]["loc"] == ["body", "frequencies", 0]
    body = _problem(client, admin_headers, device, 422, space={"scale": {"choices": [2]}, "bogus": 1})
    assert body["errors"][0]["loc"] == ["body", "space", "bogus"]
    body = _problem(client, admin_headers, device, 422, space={})
    assert body["errors"][0]["loc"] == ["body", "space"]
    body = _problem(client, admin_headers, device, 422, max_configs=10, holdout_size=10)
    assert body["errors"][0]["loc"] == ["body", "max_configs"] and "held-out" in body["detail"]
    assert db_session.scalar(select(func.count()).select_from(Campaign)) == 0  # nothing written

    first = _start(client, admin_headers, device)
    conflict = _problem(client, admin_headers, device, 409)
    assert f"campaign {first['id']} is already running" in conflict["detail"]
    read = client.get(f"/v1/campaigns/{first['id']}", headers=admin_headers)
    assert read.status_code == 200 and read.json()["status"] == "running"
    missing = client.get("/v1/campaigns/999", headers=admin_headers)
    assert missing.status_code == 404 and missing.headers["content-type"] == PROBLEM
    assert client.post(f"/v1/devices/{device}/bootstrap", json=campaign_body()).status_code == 401


def test_a_device_without_peers_still_runs_and_says_so(
    client: TestClient, admin_headers: dict[str, str], make_device: Callable[..., int], drive: Drive
) -> None:
    device = make_device()
    started = _start(client, admin_headers, device)
    assert started["note"] and started["note"].startswith("no peers")
    assert started["unit"] == "big" and started["frequencies_khz"] == [652800, 1478400, 2208000]
    assert started["holdout_size"] == 10 and started["rounds"] == []
    drive.step()
    [first] = drive.rounds(started["id"])
    assert first.peers == [] and len(first.configs) == 8 and first.job_id is not None


# -- rounds -----------------------------------------------------------------------------------------------
def test_rounds_until_the_target_then_the_best_predictor_is_active(
    client: TestClient, admin_headers: dict[str, str], make_device: Callable[..., int], drive: Drive
) -> None:
    device = make_device()
    started = _start(client, admin_headers, device, target_accuracy=0.9)
    campaign = drive.run(started["id"])
    assert campaign.status.value == "succeeded", campaign.reason
    rounds = drive.rounds(started["id"])
    # Round 0: 8 training configs × 3 clocks = 24 rows, fewer than a predictor needs (40): not scored.
    assert rounds[0].phase.value == "unscored" and "24 training measurements" in (rounds[0].note or "")
    last = rounds[-1]
    assert last.phase.value == "scored" and last.within_10 is not None and last.within_10 >= 0.9
    assert [r.configs_measured for r in rounds] == [8 * (i + 1) for i in range(len(rounds))]
    best = drive.session.get(Predictor, campaign.best_predictor_id, populate_existing=True)
    assert best is not None and best.active and best.id == last.predictor_id
    # The held-out configs were never trained on: the filters exclude them, the rows count only the picks.
    holdout = {config_hash("sr_block", c) for c in campaign.holdout}
    assert set(best.filters["exclude_config_hashes"]) == holdout and len(holdout) == 10
    assert best.row_count == last.configs_measured * 3
    picked = {config_hash("sr_block", c) for r in rounds for c in r.configs}
    assert not picked & holdout and len(picked) == sum(len(r.configs) for r in rounds)

    shown = client.get(f"/v1/campaigns/{started['id']}", headers=admin_headers).json()
    assert shown["status"] == "succeeded" and shown["best_predictor_id"] == best.id
    assert [r["number"] for r in shown["rounds"]] == list(range(len(rounds)))
    listed = client.get(f"/v1/campaigns?device={device}", headers=admin_headers).json()["items"]
    assert [c["id"] for c in listed] == [started["id"]]


def test_a_spent_budget_ends_the_campaign_with_its_best_predictor_active(
    client: TestClient, admin_headers: dict[str, str], make_device: Callable[..., int], drive: Drive
) -> None:
    device = make_device()
    # Noisy measurements (8 %) cannot all fall within ±10 %: the target of 100 % is out of reach.
    started = _start(client, admin_headers, device, target_accuracy=1.0, max_configs=10 + 24)
    campaign = drive.run(started["id"], noise=0.08)
    assert campaign.status.value == "budget_exhausted" and "max_configs (34)" in (campaign.reason or "")
    rounds = drive.rounds(started["id"])
    assert [len(r.configs) for r in rounds] == [8, 8, 8]  # 10 held out + 24 picked = the budget
    scored = [r for r in rounds if r.phase.value == "scored"]
    assert scored and all(r.within_10 is not None and r.within_10 < 1.0 for r in scored)
    best = max(scored, key=lambda r: (r.within_10, -(r.mape or 0.0)))
    assert campaign.best_predictor_id == best.predictor_id
    active = drive.session.scalars(select(Predictor.id).where(Predictor.active.is_(True))).all()
    assert active == [best.predictor_id]


# -- cancel -----------------------------------------------------------------------------------------------
def test_cancel_halfway_keeps_measurements_cancels_the_job_and_activates_nothing(
    client: TestClient,
    admin_headers: dict[str, str],
    make_device: Callable[..., int],
    drive: Drive,
    session_factory: sessionmaker[Session],
    settings: Settings,
) -> None:
    device = make_device()
    # An active predictor from before the campaign (other clocks, so the campaign never trains on its rows).
    insert_rows(drive.session, device, synthetic_rows(20, frequencies=FREQUENCIES, seed=7))
    previous = train_now(session_factory, settings, device)
    activate_predictor(drive.session, previous.id)

    started = _start(client, admin_headers, device, holdout_size=10, configs_per_round=16)
    drive.step()  # round 0: held-out + 16 configs × 3 clocks
    [round0] = drive.rounds(started["id"])
    assert round0.job_id is not None
    measure(drive.session, round0.job_id)
    drive.step()  # 48 training rows: a training is queued
    [round0] = drive.rounds(started["id"])
    assert round0.phase.value == "training" and round0.predictor_id is not None
    # A trainer has claimed it and is fitting when the campaign is cancelled.
    assert (
        queue.claim_training(session_factory, "slow-trainer", 60, 3, round0.predictor_id)
        == round0.predictor_id
    )

    cancelled = client.post(f"/v1/campaigns/{started['id']}/cancel", headers=admin_headers)
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    # The trainer finishes, but its result is dropped: the training was failed under it.
    assert not train_predictor(session_factory, round0.predictor_id, settings, owner="slow-trainer")
    drive.session.rollback()
    half = drive.session.get(Predictor, round0.predictor_id, populate_existing=True)
    assert half is not None and half.status is PredictorStatus.failed and not half.active
    assert "cancelled" in (half.error or "")
    still = drive.session.get(Predictor, previous.id, populate_existing=True)
    assert still is not None and still.active
    assert drive.step() == 0  # a cancelled campaign is never stepped again
    again = client.post(f"/v1/campaigns/{started['id']}/cancel", headers=admin_headers)
    assert again.status_code == 409 and again.headers["content-type"] == PROBLEM


def test_cancel_while_measuring_cancels_the_job_and_keeps_what_was_measured(
    client: TestClient, admin_headers: dict[str, str], make_device: Callable[..., int], drive: Drive
) -> None:
    device = make_device()
    started = _start(client, admin_headers, device)
    drive.step()
    [round0] = drive.rounds(started["id"])
    assert round0.job_id is not None
    assert measure(drive.session, round0.job_id, limit=5) == 5
    body = client.post(f"/v1/campaigns/{started['id']}/cancel", headers=admin_headers).json()
    assert body["status"] == "cancelled" and body["reason"].startswith("cancelled by ")
    drive.session.rollback()
    job = drive.session.get(Job, round0.job_id, populate_existing=True)
    assert job is not None and job.status.value == "cancelled"
    statuses = drive.session.scalars(select(Task.status).where(Task.job_id == job.id)).all()
    assert statuses.count(TaskStatus.done) == 5 and statuses.count(TaskStatus.cancelled) == len(statuses) - 5
    kept = drive.session.scalar(select(func.count()).where(Measurement.job_id == job.id))
    assert kept == 5
    assert drive.session.scalar(select(func.count()).select_from(Predictor)) == 0


# -- restart ----------------------------------------------------------------------------------------------
def test_a_runner_that_dies_is_replaced_and_the_campaign_resumes_its_round(
    client: TestClient,
    admin_headers: dict[str, str],
    make_device: Callable[..., int],
    drive: Drive,
    session_factory: sessionmaker[Session],
) -> None:
    device = make_device()
    started = _start(client, admin_headers, device, configs_per_round=16)
    campaign_id = started["id"]
    drive.step("runner-a")
    [round0] = drive.rounds(campaign_id)
    first_job = round0.job_id
    assert first_job is not None

    # Runner a died between writing round 1 and submitting its job: round 0 is done, round 1 has no job,
    # and a's lease on the campaign is still there.
    measure(drive.session, first_job)
    drive.step("runner-a")
    while drive.trainer.run_once():
        pass
    drive.step("runner-a")  # round 0 scored
    assert queue.claim_campaign(session_factory, campaign_id, "runner-a", 600)
    drive.session.add(
        CampaignRound(campaign_id=campaign_id, number=1, configs=sample_configs(2, seed=99), peers=[])
    )
    drive.session.commit()
    assert drive.step("runner-b") == 0  # a's lease holds it
    drive.session.execute(
        update(Campaign)
        .where(Campaign.id == campaign_id)
        .values(lease_expires_at=utcnow() - dt.timedelta(hours=1))
    )
    drive.session.commit()
    # The written round is not lost: b submits its job (two drawn configs stand for a's pick).
    assert drive.step("runner-b") == 1
    rounds = drive.rounds(campaign_id)
    assert [r.number for r in rounds] == [0, 1] and rounds[1].job_id is not None
    assert drive.campaign(campaign_id).lease_owner is None  # b gave its lease back after the step
    finished = drive.run(campaign_id)
    assert finished.status.value in ("succeeded", "budget_exhausted")
    assert [r.number for r in drive.rounds(campaign_id)] == list(range(len(drive.rounds(campaign_id))))


# -- peers ------------------------------------------------------------------------------------------------
def test_peers_with_active_predictors_shape_the_picks(
    client: TestClient,
    admin_headers: dict[str, str],
    make_device: Callable[..., int],
    drive: Drive,
    session_factory: sessionmaker[Session],
    settings: Settings,
) -> None:
    # A campaign started before any peer exists picks by features alone.
    lonely = _start(client, admin_headers, make_device("lonely"))
    drive.step()
    [alone] = drive.rounds(lonely["id"])
    # Two peers that disagree: one follows the FLOPs law, the other pays per layer whatever its width.
    peers = []
    for i in range(2):
        peer = make_device(f"peer-{i}")
        rows = synthetic_rows(20, seed=10 + i)
        if i == 1:
            per_layer = [
                0.5 + 2.0 * len(c["widths"]) * 1e6 / f
                for c, f in zip(rows.configs, rows.frequencies_khz, strict=True)
            ]
            rows = dataclasses.replace(rows, median_ms=per_layer)
        insert_rows(drive.session, peer, rows)
        activate_predictor(drive.session, train_now(session_factory, settings, peer).id)
        peers.append(peer)
    started = _start(client, admin_headers, make_device("new-phone"))
    assert started["note"] is None
    drive.step()
    [guided] = drive.rounds(started["id"])
    assert guided.peers == peers and len(guided.configs) == len(alone.configs) == 8
    # Same seed, same candidates: only the peers' predictions can have changed the pick.
    assert guided.configs != alone.configs


def test_each_round_trains_a_transfer_predictor_over_the_peers_it_can_use(
    client: TestClient,
    admin_headers: dict[str, str],
    make_device: Callable[..., int],
    drive: Drive,
    session_factory: sessionmaker[Session],
    settings: Settings,
) -> None:
    # Two peers measured on the campaign's unit (the fastest cluster, big) and one on the little cluster
    # only: its predictions still guide the picks, but a transfer training on big cannot learn from it.
    peers = []
    for i, unit in enumerate(("big", "big", "little")):
        peer = make_device(f"peer-{i}")
        rows = synthetic_rows(20, seed=10 + i)
        insert_rows(drive.session, peer, dataclasses.replace(rows, clusters=[unit] * len(rows)))
        activate_predictor(drive.session, train_now(session_factory, settings, peer).id)
        peers.append(peer)
    started = _start(client, admin_headers, make_device("new-phone"), target_accuracy=0.9)
    drive.run(started["id"])
    trained = [r for r in drive.rounds(started["id"]) if r.predictor_id is not None]
    assert trained and all(r.peers == peers for r in trained)
    for r in trained:
        predictor = drive.session.get(Predictor, r.predictor_id, populate_existing=True)
        assert predictor is not None and predictor.status.value == "ready" and predictor.transfer is not None
        assert [p["device_id"] for p in predictor.transfer["peers"]] == peers[:2]


# -- minutes and failures -------------------------------------------------------------------------------
def test_minutes_spent_mid_round_cancel_its_job_and_end_the_campaign(
    client: TestClient, admin_headers: dict[str, str], make_device: Callable[..., int], drive: Drive
) -> None:
    device = make_device()
    started = _start(client, admin_headers, device, max_minutes=1)
    drive.step()
    [round0] = drive.rounds(started["id"])
    # An hour later the round's job is still measuring (as if the phone were slow).
    drive.session.execute(
        update(Campaign)
        .where(Campaign.id == started["id"])
        .values(created_at=utcnow() - dt.timedelta(hours=1))
    )
    drive.session.commit()
    drive.step()
    campaign = drive.campaign(started["id"])
    assert campaign.status.value == "budget_exhausted" and "max_minutes (1) spent during round 0" in (
        campaign.reason or ""
    )
    assert "none was activated" in (campaign.reason or "")
    job = drive.session.get(Job, round0.job_id, populate_existing=True)
    assert job is not None and job.status.value == "cancelled"


def test_a_step_that_breaks_fails_the_campaign_with_the_reason(
    client: TestClient,
    admin_headers: dict[str, str],
    make_device: Callable[..., int],
    drive: Drive,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from service.campaigns import runner

    def broken(*_: object, **__: object) -> None:
        raise RuntimeError("picker exploded")

    monkeypatch.setattr(runner, "pick_round", broken)
    started = _start(client, admin_headers, make_device())
    assert drive.step() == 0
    shown = client.get(f"/v1/campaigns/{started['id']}", headers=admin_headers).json()
    assert shown["status"] == "failed"
    assert shown["reason"] == "a step failed: RuntimeError: picker exploded"
    assert shown["finished_at"] is not None and drive.step() == 0
