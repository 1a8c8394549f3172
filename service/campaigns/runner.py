"""The campaign runner: one step at a time, each decided from the campaign's rows alone.

A step looks at the newest round and does the one thing due, then returns (it never waits):

- no round yet, or the last one scored and neither the target nor a budget is reached: pick the next
  configs (round 0: the first training configs; the held-out set drawn at start rides along in its job),
  write the round, then submit its profiling job (`create_job`, the ordinary path);
- `measuring`: when its job has finished, queue the training (`request_training`, the one seam a
  transfer predictor plugs into) — or, with too few rows to train on yet, mark it `unscored`;
- `training`: when the predictor is ready, score it on the held-out measurements and record the round;
- `scored` / `unscored`: stop at the target (`succeeded`) or a budget (`budget_exhausted`) — activating
  the round's best predictor — or start the next round.

The round row is committed before its job is submitted and the job id after, so a runner that dies
between them leaves a round whose job is resubmitted (its measured configs are reused, not re-measured).
Runners take a campaign's lease for a step (`service.jobs.queue.claim_campaign`); a worker calls
`run_campaigns` in its housekeeping.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from profilers.blocks import config_hash
from service.campaigns.models import Campaign, CampaignRound, CampaignStatus, RoundPhase
from service.campaigns.picker import disagreement, embed, pick_spread
from service.campaigns.schemas import CampaignCreate
from service.campaigns.service import draw_configs, job_request, rounds_of
from service.db import utcnow
from service.jobs import queue
from service.jobs import service as jobs
from service.jobs.models import Job, JobStatus
from service.measurements.models import Measurement
from service.predictors.features import FeatureError, Featurizer, UnseenConditionError
from service.predictors.models import Predictor, PredictorStatus
from service.predictors.registry import load_latency_model
from service.predictors.schemas import PredictorCreate, TrainFilters, TransferRequest
from service.predictors.service import (
    activate_predictor,
    count_training_rows,
    create_predictor,
    resolve_peers,
)
from service.predictors.training import accuracy_metrics
from service.problems import InvalidInputError, LatfarmError
from service.settings import Settings

_log = logging.getLogger("latfarm.campaigns")

#: Who a campaign's jobs and predictors say created them.
CREATOR = "campaign"


def run_campaigns(factory: sessionmaker[Session], settings: Settings, owner: str) -> int:
    """Step every running campaign nobody else is stepping; returns how many were stepped."""
    stepped = 0
    for campaign_id in queue.steppable_campaigns(factory):
        if not queue.claim_campaign(factory, campaign_id, owner, settings.lease_seconds):
            continue
        try:
            with factory() as session:
                step_campaign(session, campaign_id, settings)
            stepped += 1
        except DBAPIError:
            raise  # the database, not the campaign: the step is repeated at the next housekeeping
        except Exception as exc:  # one campaign's bug must not stop the worker; it is failed with the reason
            _log.exception("campaign %s: a step failed", campaign_id)
            with factory() as session:
                _fail(session, campaign_id, f"a step failed: {type(exc).__name__}: {exc}")
        finally:
            queue.release_campaign(factory, campaign_id, owner)
    return stepped


# -- one step ---------------------------------------------------------------------------------------------
def step_campaign(session: Session, campaign_id: int, settings: Settings) -> None:
    """Do the one thing due for a running campaign (see the module docstring); no waiting."""
    campaign = session.get(Campaign, campaign_id)
    if campaign is None or campaign.status is not CampaignStatus.running:
        return
    spec = CampaignCreate.model_validate(campaign.spec)
    rounds = rounds_of(session, campaign_id)
    latest = rounds[-1] if rounds else None
    if latest is None:
        _start_round(session, campaign, spec, rounds, settings)
    elif latest.phase is RoundPhase.measuring:
        _after_measuring(session, campaign, spec, latest, rounds, settings)
    elif latest.phase is RoundPhase.training:
        _after_training(session, campaign, spec, latest)
    else:
        _decide(session, campaign, spec, latest, rounds, settings)


def _minutes(campaign: Campaign) -> float:
    return (utcnow() - campaign.created_at).total_seconds() / 60.0


def _submitted(campaign: Campaign, rounds: Sequence[CampaignRound]) -> int:
    """Configs the campaign has asked to measure: the held-out set and every round's picks."""
    return len(campaign.holdout) + sum(len(r.configs) for r in rounds)


def _decide(
    session: Session,
    campaign: Campaign,
    spec: CampaignCreate,
    latest: CampaignRound,
    rounds: Sequence[CampaignRound],
    settings: Settings,
) -> None:
    if latest.within_10 is not None and latest.within_10 >= spec.target_accuracy:
        _finish(
            session,
            campaign,
            CampaignStatus.succeeded,
            f"round {latest.number}: {latest.within_10:.1%} of the held-out set within ±10 % "
            f"(target {spec.target_accuracy:.0%})",
        )
    elif _submitted(campaign, rounds) >= spec.max_configs:
        _finish(
            session, campaign, CampaignStatus.budget_exhausted, f"max_configs ({spec.max_configs}) measured"
        )
    elif _minutes(campaign) >= spec.max_minutes:
        _finish(
            session, campaign, CampaignStatus.budget_exhausted, f"max_minutes ({spec.max_minutes:g}) spent"
        )
    else:
        _start_round(session, campaign, spec, rounds, settings)


def _start_round(
    session: Session,
    campaign: Campaign,
    spec: CampaignCreate,
    rounds: Sequence[CampaignRound],
    settings: Settings,
) -> None:
    """Pick the next configs, write the round, submit its job."""
    number = len(rounds)
    room = spec.max_configs - _submitted(campaign, rounds)
    picked_before = [c for r in rounds for c in r.configs]
    peers, configs = pick_round(
        session, campaign, spec, picked_before, min(spec.configs_per_round, room), number
    )
    if not configs:
        _finish(
            session,
            campaign,
            CampaignStatus.budget_exhausted,
            "the space holds no config the campaign has not measured yet",
        )
        return
    row = CampaignRound(
        campaign_id=campaign.id,
        number=number,
        phase=RoundPhase.measuring,
        configs=configs,
        peers=peers,
        configs_measured=rounds[-1].configs_measured if rounds else 0,
    )
    session.add(row)
    session.commit()
    _submit_job(session, campaign, spec, row, settings)


def _submit_job(
    session: Session, campaign: Campaign, spec: CampaignCreate, row: CampaignRound, settings: Settings
) -> None:
    """The round's profiling job (round 0's also measures the held-out set)."""
    configs = [*campaign.holdout, *row.configs] if row.number == 0 else list(row.configs)
    job = jobs.create_job(session, job_request(campaign, spec, configs), settings, CREATOR)
    row.job_id = job.id
    session.commit()
    session.refresh(campaign)
    if campaign.status is not CampaignStatus.running:  # cancelled while the job was being written
        try:
            jobs.cancel_job(session, job.id)
        except LatfarmError:
            session.rollback()


def _after_measuring(
    session: Session,
    campaign: Campaign,
    spec: CampaignCreate,
    row: CampaignRound,
    rounds: Sequence[CampaignRound],
    settings: Settings,
) -> None:
    if row.job_id is None:  # the runner died between writing the round and submitting its job
        _submit_job(session, campaign, spec, row, settings)
        return
    job = session.get(Job, row.job_id)
    if job is None:
        _fail(session, campaign.id, f"round {row.number}'s job {row.job_id} no longer exists")
        return
    if job.status in (JobStatus.queued, JobStatus.running):
        if _minutes(campaign) >= spec.max_minutes:
            jobs.cancel_job(session, job.id)
            _finish(
                session,
                campaign,
                CampaignStatus.budget_exhausted,
                f"max_minutes ({spec.max_minutes:g}) spent during round {row.number}",
            )
        return
    if job.status is JobStatus.cancelled:
        _fail(session, campaign.id, f"round {row.number}'s job {job.id} was cancelled outside the campaign")
        return
    picked = [c for r in rounds for c in r.configs]
    row.configs_measured = _measured_count(session, campaign, picked)
    filters = training_filters(campaign, spec)
    available = count_training_rows(session, campaign.family, campaign.device_id, filters)
    if job.status is JobStatus.failed and row.configs_measured == 0:
        _fail(session, campaign.id, f"round {row.number}'s job {job.id} failed: {job.error}")
        return
    if available < settings.min_training_rows:
        row.phase = RoundPhase.unscored
        row.note = (
            f"{available} training measurements; a predictor needs {settings.min_training_rows} "
            "(LATFARM_MIN_TRAINING_ROWS): the next round adds more"
        )
        row.minutes = _minutes(campaign)
        row.finished_at = utcnow()
        session.commit()
        return
    predictor = request_training(session, campaign, spec, settings, transfer_peers=list(row.peers) or None)
    row.predictor_id = predictor.id
    row.phase = RoundPhase.training
    session.commit()
    session.refresh(campaign)
    if campaign.status is not CampaignStatus.running:  # cancelled while the training was being queued
        predictor.status = PredictorStatus.failed
        predictor.error = f"campaign {campaign.id} was cancelled before this training finished"
        session.commit()


def _after_training(session: Session, campaign: Campaign, spec: CampaignCreate, row: CampaignRound) -> None:
    predictor = session.get(Predictor, row.predictor_id) if row.predictor_id is not None else None
    if predictor is None:
        row.phase, row.note = RoundPhase.unscored, "its predictor no longer exists"
    elif predictor.status is PredictorStatus.training:
        return
    elif predictor.status is PredictorStatus.failed:
        row.phase, row.note = RoundPhase.unscored, f"training failed: {predictor.error}"
    else:
        scores = score_on_holdout(session, campaign, spec, predictor.id)
        if scores is None:
            row.phase, row.note = RoundPhase.unscored, "no valid held-out measurement to score on"
        else:
            row.phase = RoundPhase.scored
            row.within_10, row.mape = float(scores["within_10"]), float(scores["mape"])
    row.minutes = _minutes(campaign)
    row.finished_at = utcnow()
    session.commit()


def _finish(session: Session, campaign: Campaign, status: CampaignStatus, reason: str) -> None:
    """End the campaign; on reaching the target or a budget, its best scored predictor becomes active."""
    best = session.scalars(
        select(CampaignRound)
        .join(Predictor, Predictor.id == CampaignRound.predictor_id)
        .where(
            CampaignRound.campaign_id == campaign.id,
            CampaignRound.phase == RoundPhase.scored,
            Predictor.status == PredictorStatus.ready,
        )
        .order_by(CampaignRound.within_10.desc(), CampaignRound.mape, CampaignRound.number.desc())
        .limit(1)
    ).first()
    if best is not None and best.predictor_id is not None:
        activate_predictor(session, best.predictor_id)
        campaign.best_predictor_id = best.predictor_id
    else:
        reason += "; no round produced a scored predictor, so none was activated"
    campaign.status, campaign.reason, campaign.finished_at = status, reason, utcnow()
    session.commit()


def _fail(session: Session, campaign_id: int, reason: str) -> None:
    session.rollback()
    campaign = session.get(Campaign, campaign_id)
    if campaign is not None and campaign.status is CampaignStatus.running:
        campaign.status, campaign.reason, campaign.finished_at = CampaignStatus.failed, reason, utcnow()
        session.commit()


# -- training: the seam -----------------------------------------------------------------------------------
def training_filters(campaign: Campaign, spec: CampaignCreate) -> TrainFilters:
    """The campaign's measurements: its unit, clocks, precision and threads — never its held-out configs."""
    return TrainFilters(
        unit=campaign.unit,
        frequencies_khz=list(campaign.frequencies_khz) or None,
        precision=spec.runtime.precision,
        threads=spec.runtime.threads,
        exclude_config_hashes=[config_hash(campaign.family, c) for c in campaign.holdout],
    )


def request_training(
    session: Session,
    campaign: Campaign,
    spec: CampaignCreate,
    settings: Settings,
    *,
    transfer_peers: list[int] | None,
) -> Predictor:
    """Queue the training of the campaign's predictor on what it measured so far, learning from
    `transfer_peers` (the devices whose active predictors shaped this round's picks) as a transfer training
    (`service.predictors.transfer`): it serves only where the run's selection says it beats the device's own
    models. A peer a transfer training cannot use (its predictor serves a transfer model itself, or never
    saw the campaign's unit) is left out (logged); with none left the round trains on the device alone."""
    filters = training_filters(campaign, spec)
    usable = [p for p in transfer_peers or [] if _can_teach(session, campaign, p, filters.unit)]
    transfer = TransferRequest(peers=usable) if usable else None
    data = PredictorCreate(
        family=campaign.family,
        device=campaign.device_id,
        params=spec.params,
        filters=filters,
        transfer=transfer,
    )
    return create_predictor(session, data, settings, created_by=f"{CREATOR} {campaign.id}")


def _can_teach(session: Session, campaign: Campaign, peer: int, unit: str | None) -> bool:
    """Whether `peer`'s active predictor may be a transfer training's peer (`resolve_peers` says why not)."""
    try:
        resolve_peers(session, campaign.family, campaign.device_id, TransferRequest(peers=[peer]), unit)
    except InvalidInputError as exc:
        _log.info("campaign %s: device %s is no transfer peer (%s)", campaign.id, peer, exc)
        return False
    return True


def score_on_holdout(
    session: Session, campaign: Campaign, spec: CampaignCreate, predictor_id: int
) -> dict[str, Any] | None:
    """The predictor's accuracy on the campaign's held-out measurements (None when none is valid)."""
    hashes = [config_hash(campaign.family, c) for c in campaign.holdout]
    frequency = func.coalesce(Measurement.frequency_khz, Measurement.observed_frequency_khz)
    query = select(Measurement.config, frequency, Measurement.median_ms).where(
        Measurement.device_id == campaign.device_id,
        Measurement.family == campaign.family,
        Measurement.cluster == campaign.unit,
        Measurement.precision == spec.runtime.precision,
        Measurement.threads == spec.runtime.threads,
        Measurement.valid.is_(True),
        Measurement.median_ms > 0,
        Measurement.config_hash.in_(hashes),
        frequency.is_not(None),
    )
    if campaign.frequencies_khz:
        query = query.where(frequency.in_(campaign.frequencies_khz))
    rows = session.execute(query.order_by(Measurement.id)).all()
    if not rows:
        return None
    model = load_latency_model(session, predictor_id)
    measured: list[float] = []
    predicted: list[float] = []
    for khz in sorted({int(r[1]) for r in rows}):
        at = [r for r in rows if int(r[1]) == khz]
        result = model.predict(
            [r[0] for r in at],
            [khz],
            cluster=campaign.unit,
            threads=spec.runtime.threads,
            precision=spec.runtime.precision,
        )
        measured.extend(float(r[2]) for r in at)
        predicted.extend(result.latency_ms.tolist())
    return dict(accuracy_metrics(np.asarray(measured), np.asarray(predicted)))


def _measured_count(session: Session, campaign: Campaign, picked: Sequence[Mapping[str, Any]]) -> int:
    """Distinct picked configs with a valid measurement on the campaign's unit."""
    hashes = list({config_hash(campaign.family, c) for c in picked})
    if not hashes:
        return 0
    return int(
        session.scalar(
            select(func.count(func.distinct(Measurement.config_hash))).where(
                Measurement.device_id == campaign.device_id,
                Measurement.family == campaign.family,
                Measurement.cluster == campaign.unit,
                Measurement.valid.is_(True),
                Measurement.config_hash.in_(hashes),
            )
        )
        or 0
    )


# -- picking ----------------------------------------------------------------------------------------------
def peer_log_predictions(
    session: Session, campaign: Campaign, configs: Sequence[Mapping[str, Any]]
) -> tuple[list[int], np.ndarray]:
    """The peers (other devices' active predictors of the family) and their log predicted latency of each
    config (n × peers), each at its own top trained clock and on the campaign's unit when it knows it."""
    predictors = session.scalars(
        select(Predictor)
        .where(
            Predictor.family == campaign.family,
            Predictor.active.is_(True),
            Predictor.device_id.is_not(None),
            Predictor.device_id != campaign.device_id,
        )
        .order_by(Predictor.device_id)
    ).all()
    peers: list[int] = []
    columns: list[np.ndarray] = []
    for predictor in predictors:
        try:
            model = load_latency_model(session, predictor.id)
            unit = campaign.unit if campaign.unit in model.featurizer.clusters else None
            result = model.predict(configs, [max(1, round(model.top_frequency_khz))], cluster=unit)
        except (FeatureError, UnseenConditionError, ValueError, KeyError) as exc:
            _log.info("campaign %s: peer predictor %s skipped (%s)", campaign.id, predictor.id, exc)
            continue
        if predictor.device_id is not None and np.all(np.isfinite(result.latency_ms)):
            peers.append(predictor.device_id)
            columns.append(np.log(np.maximum(result.latency_ms, 1e-9)))
    matrix = np.column_stack(columns) if columns else np.zeros((len(configs), 0))
    return peers, matrix


def pick_round(
    session: Session,
    campaign: Campaign,
    spec: CampaignCreate,
    picked_before: Sequence[Mapping[str, Any]],
    n: int,
    number: int,
) -> tuple[list[int], list[dict[str, Any]]]:
    """The peers used and `n` new training configs for round `number`: a seeded random draw from the space
    (the held-out set and earlier picks left out), then the picker's spread, peer-disagreement-weighted."""
    if n <= 0:
        return [], []
    exclude = {config_hash(campaign.family, c) for c in [*campaign.holdout, *picked_before]}
    drawn = draw_configs(spec, spec.candidates, spec.seed + number)
    candidates = [c for c in drawn if config_hash(campaign.family, c) not in exclude]
    if not candidates:
        return [], []
    featurizer = Featurizer(campaign.family, [campaign.unit])
    peers, logs = peer_log_predictions(session, campaign, [*candidates, *picked_before])
    rows = featurizer.config_rows([*candidates, *picked_before])
    points = embed(rows, logs if peers else None)
    disputed = disagreement(logs[: len(candidates)]) if len(peers) >= 2 else None
    chosen = pick_spread(points[: len(candidates)], points[len(candidates) :], n, disputed=disputed)
    return peers, [candidates[i] for i in chosen]
