"""Bootstrap campaigns as plain functions over a `Session`: start, read, list, cancel.

A campaign profiles one device for one family (and unit) in rounds until a predictor trained on its
measurements predicts a held-out set within ±10 % often enough, or a budget (configs, minutes) is spent.
Starting one validates everything a round will need — the device (404 when unknown), the family, the unit
and its clocks, the space, the budgets — and writes the campaign row with its held-out configs; the rounds
are run by `service.campaigns.runner` in a worker loop. At most one campaign per (device, family) runs.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from profilers.blocks import canonical_json, get_family
from service.campaigns.models import Campaign, CampaignRound, CampaignStatus
from service.campaigns.schemas import CampaignCreate, CampaignOut, RoundOut
from service.db import begin_write, utcnow
from service.devices.models import Device
from service.jobs import service as jobs
from service.jobs.models import Job, JobStatus
from service.jobs.sampling import parse_space, sample_configs
from service.jobs.schemas import JobCreate, RuntimeSpec, SamplerSpec
from service.pagination import keyset_page
from service.predictors.models import Predictor, PredictorStatus
from service.predictors.service import check_family
from service.problems import ConflictError, InvalidInputError, NotFoundError

#: What a job request's error locations become in a campaign request (the fields are spelled differently).
_LOC_RENAMES: dict[tuple[str | int, ...], list[str | int]] = {
    ("body", "runtime", "unit"): ["body", "unit"],
    ("body", "sampler", "space"): ["body", "space"],
    ("body", "sampler"): ["body", "space"],
}


def _as_campaign_error(exc: InvalidInputError) -> InvalidInputError:
    """The same error, at the campaign request's field (`body.unit`, not a job's `body.runtime.unit`)."""
    errors = exc.errors or []
    if not errors:
        return exc
    loc = list(errors[0]["loc"])
    for prefix, renamed in _LOC_RENAMES.items():
        if tuple(loc[: len(prefix)]) == prefix:
            loc = [*renamed, *loc[len(prefix) :]]
            break
    return InvalidInputError.at(loc, str(errors[0]["msg"]))


def job_request(campaign: Campaign, spec: CampaignCreate, configs: list[dict[str, Any]]) -> JobCreate:
    """The profiling job of one round: `configs` on the campaign's device and unit, at the clocks resolved
    when it started (a re-probe in between changes nothing), with its runtime."""
    runtime = RuntimeSpec(**spec.runtime.model_dump(), unit=campaign.unit)
    return JobCreate(
        family=campaign.family,
        configs=configs,
        devices=[campaign.device_id],
        frequencies=list(campaign.frequencies_khz) or spec.frequencies,
        runtime=runtime,
    )


def space_of(spec: CampaignCreate) -> dict[str, Any]:
    """The space the campaign draws from: its own, else the family's example space."""
    return spec.space if spec.space is not None else get_family(spec.family).search_space_example()


def draw_configs(spec: CampaignCreate, n: int, seed: int) -> list[dict[str, Any]]:
    """Up to `n` distinct valid configs drawn at random from the campaign's space (canonical documents)."""
    family = get_family(spec.family)
    drawn = sample_configs(family, SamplerSpec(strategy="random", n=n, space=space_of(spec), seed=seed))
    return [json.loads(canonical_json(spec.family, config)) for config in drawn]


#: The held-out set is drawn with the campaign's seed shifted by this, the rounds' candidates with the
#: seed plus their round number: the two draws never share a seed.
HOLDOUT_SEED_OFFSET = 1_000_003


def _peer_devices(session: Session, device_id: int, family: str) -> list[int]:
    """Other devices with an active predictor of `family`: the peers whose predictions guide the picks."""
    return list(
        session.scalars(
            select(Predictor.device_id)
            .where(
                Predictor.family == family,
                Predictor.active.is_(True),
                Predictor.device_id.is_not(None),
                Predictor.device_id != device_id,
            )
            .order_by(Predictor.device_id)
        )
    )


def start_campaign(
    session: Session, device_id: int, data: CampaignCreate, created_by: str | None = None
) -> Campaign:
    """Validate a campaign request and record it `running` with its held-out set; 4xx writes nothing."""
    begin_write(session)
    # Locked (PostgreSQL) so two starts for one device serialise and the one-running check holds.
    device = session.scalars(select(Device).where(Device.id == device_id).with_for_update()).first()
    if device is None:
        raise NotFoundError(f"device {device_id} does not exist")
    check_family(data.family, ["body", "family"])
    family = get_family(data.family)
    try:
        parse_space(family, space_of(data))
        placeholder = JobCreate(
            family=data.family,
            sampler=SamplerSpec(strategy="random", n=1, space=space_of(data)),
            devices=[device_id],
            frequencies=data.frequencies,
            runtime=RuntimeSpec(**data.runtime.model_dump(), unit=data.unit),
        )
        plan = jobs.device_plan(placeholder, device, ["body", "device"])
    except InvalidInputError as exc:
        raise _as_campaign_error(exc) from None
    if data.max_configs <= data.holdout_size:
        raise InvalidInputError.at(
            ["body", "max_configs"],
            f"{data.max_configs} configs leave none to train on after the {data.holdout_size} held-out "
            "ones; raise max_configs or lower holdout_size",
        )
    running = session.scalar(
        select(Campaign.id).where(
            Campaign.device_id == device_id,
            Campaign.family == data.family,
            Campaign.status == CampaignStatus.running,
        )
    )
    if running is not None:
        raise ConflictError(
            f"campaign {running} is already running for device {device_id} and {data.family}; "
            f"wait for it or cancel it (POST /v1/campaigns/{running}/cancel)"
        )
    try:
        holdout = draw_configs(data, data.holdout_size, data.seed + HOLDOUT_SEED_OFFSET)
    except InvalidInputError as exc:
        raise _as_campaign_error(exc) from None
    peers = _peer_devices(session, device_id, data.family)
    note = None
    if not peers:
        note = (
            f"no peers: no other device has an active {data.family} predictor, so configs are spread by "
            "their features alone"
        )
    campaign = Campaign(
        device_id=device_id,
        family=data.family,
        unit=plan.unit,
        spec={**data.model_dump(mode="json"), "unit": plan.unit},
        frequencies_khz=[khz for khz in plan.frequencies if khz is not None],
        holdout=holdout,
        status=CampaignStatus.running,
        note=note,
        created_by=created_by,
    )
    session.add(campaign)
    session.commit()
    return campaign


def get_campaign(session: Session, campaign_id: int) -> Campaign:
    """The campaign with this id, or `NotFoundError`."""
    campaign = session.get(Campaign, campaign_id)
    if campaign is None:
        raise NotFoundError(f"campaign {campaign_id} does not exist")
    return campaign


def rounds_of(session: Session, campaign_id: int) -> list[CampaignRound]:
    """A campaign's rounds, first to last."""
    return list(
        session.scalars(
            select(CampaignRound)
            .where(CampaignRound.campaign_id == campaign_id)
            .order_by(CampaignRound.number)
        )
    )


def list_campaigns(
    session: Session,
    *,
    device_id: int | None = None,
    status: CampaignStatus | None = None,
    cursor: int | None = None,
    limit: int = 100,
) -> tuple[list[Campaign], int | None]:
    """A page of campaigns, newest first (of one device, in one status, when given)."""
    query = select(Campaign)
    if device_id is not None:
        query = query.where(Campaign.device_id == device_id)
    if status is not None:
        query = query.where(Campaign.status == status)
    return keyset_page(session, query, Campaign.id, cursor=cursor, limit=limit, newest_first=True)


def cancel_campaign(session: Session, campaign_id: int, cancelled_by: str | None = None) -> Campaign:
    """Stop a running campaign: its open job is cancelled (measurements taken stay), a training it queued is
    failed before it can finish (never activated), and the active predictor — whichever it was — stays."""
    begin_write(session)
    campaign = session.scalars(select(Campaign).where(Campaign.id == campaign_id).with_for_update()).first()
    if campaign is None:
        raise NotFoundError(f"campaign {campaign_id} does not exist")
    if campaign.status is not CampaignStatus.running:
        raise ConflictError(
            f"campaign {campaign_id} is {campaign.status.value} already; only a running one cancels"
        )
    rounds = rounds_of(session, campaign_id)
    now = utcnow()
    job_ids = [r.job_id for r in rounds if r.job_id is not None]
    open_jobs = list(
        session.scalars(
            select(Job.id).where(Job.id.in_(job_ids), Job.status.in_((JobStatus.queued, JobStatus.running)))
        )
    )
    predictor_ids = [r.predictor_id for r in rounds if r.predictor_id is not None]
    # A training still queued or running is failed now: a trainer stores a result only while the row is
    # `training` (`queue.lock_claimed_predictor`), so whatever it computes later is dropped.
    session.execute(
        update(Predictor)
        .where(Predictor.id.in_(predictor_ids), Predictor.status == PredictorStatus.training)
        .values(
            status=PredictorStatus.failed,
            error=f"campaign {campaign_id} was cancelled before this training finished",
            finished_at=now,
            lease_owner=None,
            lease_expires_at=None,
        )
        .execution_options(synchronize_session=False)
    )
    campaign.status = CampaignStatus.cancelled
    campaign.reason = f"cancelled by {cancelled_by}" if cancelled_by else "cancelled"
    campaign.finished_at = now
    session.commit()
    for job_id in open_jobs:
        try:
            jobs.cancel_job(session, job_id)
        except ConflictError:  # it finished in between: nothing left to cancel
            session.rollback()
    return campaign


def round_out(row: CampaignRound) -> RoundOut:
    """A round as the API shows it."""
    return RoundOut(
        number=row.number,
        phase=row.phase,
        job_id=row.job_id,
        predictor_id=row.predictor_id,
        picked=len(row.configs or []),
        peers=list(row.peers or []),
        configs_measured=row.configs_measured,
        within_10=row.within_10,
        mape=row.mape,
        minutes=row.minutes,
        note=row.note,
    )


def campaign_out(session: Session, campaign: Campaign) -> CampaignOut:
    """The response body of a campaign: its row and its rounds."""
    return CampaignOut(
        id=campaign.id,
        device_id=campaign.device_id,
        family=campaign.family,
        unit=campaign.unit,
        frequencies_khz=list(campaign.frequencies_khz),
        status=campaign.status,
        reason=campaign.reason,
        note=campaign.note,
        holdout_size=len(campaign.holdout or []),
        best_predictor_id=campaign.best_predictor_id,
        spec=campaign.spec,
        rounds=[round_out(r) for r in rounds_of(session, campaign.id)],
        created_by=campaign.created_by,
        created_at=campaign.created_at,
        finished_at=campaign.finished_at,
    )
