"""`POST /v1/devices/{id}/bootstrap` and `/v1/campaigns`: start, list, inspect and cancel bootstrap
campaigns (thin: parse, call the domain, shape the answer)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from service.bounds import Cursor, PathId
from service.campaigns import service
from service.campaigns.models import CampaignStatus
from service.campaigns.schemas import CampaignCreate, CampaignOut
from service.deps import ProfileAccess, ReadAccess, SessionDep, SettingsDep
from service.pagination import Page
from service.problems import problem_responses

router = APIRouter(tags=["campaigns"], responses=problem_responses(401, 403, 404, 409, 422))


@router.post("/v1/devices/{device_id}/bootstrap", status_code=202, response_model=CampaignOut)
def bootstrap(
    device_id: PathId, body: CampaignCreate, session: SessionDep, who: ProfileAccess
) -> CampaignOut:
    """Start a bootstrap campaign for the device; poll `GET /v1/campaigns/{id}` for its rounds."""
    campaign = service.start_campaign(session, device_id, body, created_by=who.name)
    return service.campaign_out(session, campaign)


@router.get("/v1/campaigns", response_model=Page[CampaignOut])
def list_campaigns(
    session: SessionDep,
    settings: SettingsDep,
    _: ReadAccess,
    device: Annotated[PathId | None, Query()] = None,
    status: CampaignStatus | None = None,
    cursor: Cursor | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> Page[CampaignOut]:
    rows, next_cursor = service.list_campaigns(
        session, device_id=device, status=status, cursor=cursor, limit=min(limit, settings.page_size_max)
    )
    return Page[CampaignOut](items=[service.campaign_out(session, c) for c in rows], next_cursor=next_cursor)


@router.get("/v1/campaigns/{campaign_id}", response_model=CampaignOut)
def get_campaign(campaign_id: PathId, session: SessionDep, _: ReadAccess) -> CampaignOut:
    return service.campaign_out(session, service.get_campaign(session, campaign_id))


@router.post("/v1/campaigns/{campaign_id}/cancel", response_model=CampaignOut)
def cancel_campaign(campaign_id: PathId, session: SessionDep, who: ProfileAccess) -> CampaignOut:
    campaign = service.cancel_campaign(session, campaign_id, cancelled_by=who.name)
    return service.campaign_out(session, campaign)
