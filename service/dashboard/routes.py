"""`/dashboard`: server-rendered pages over `service.dashboard.service` (reads) and `service.dashboard.pivot`.

Thin: each route parses its query or form, calls the domain, and renders a template (or redirects after a
form post). Pages carry a strict Content-Security-Policy (`'self'` only): scripts, styles and plotly come
from `/dashboard/static`, and the browser itself refuses any request that would leave the machine.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode

import plotly
from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import FileResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from pydantic import ValidationError

from profilers.blocks import FAMILIES
from service.auth.models import Scope
from service.auth.service import authenticate
from service.bounds import PathId
from service.campaigns import service as campaigns_service
from service.campaigns.schemas import CampaignCreate
from service.dashboard import campaigns, layers, pivot, service
from service.dashboard.access import AdminForm, PageReader, ProfileForm, SessionForm, safe_next
from service.dashboard.csrf import FIELD, csrf_token
from service.deps import ANONYMOUS, TOKEN_COOKIE, Principal, ReadAccess, RunnerDep, SessionDep
from service.devices import probing
from service.devices import service as devices
from service.devices.models import Device, DeviceStatus
from service.devices.schemas import DeviceCreate, DevicePatch
from service.jobs import service as jobs_service
from service.predictors import service as predictors_service
from service.predictors.deps import RegistryDep
from service.problems import LatfarmError, NotFoundError

router = APIRouter(prefix="/dashboard", tags=["dashboard"], include_in_schema=False)

_HERE = Path(__file__).parent
templates = Jinja2Templates(directory=_HERE / "templates")

#: The files `/dashboard/static/{name}` serves: ours, and plotly's bundle from the installed package.
STATIC_FILES: dict[str, Path] = {
    path.name: path for path in (_HERE / "static").iterdir() if path.suffix in {".css", ".js", ".svg"}
} | {"plotly.min.js": Path(plotly.__file__).parent / "package_data" / "plotly.min.js"}

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


def _render(
    request: Request, name: str, principal: Principal | None, status_code: int = 200, **context: Any
) -> Response:
    secret = request.cookies.get(TOKEN_COOKIE)
    base = {
        "principal": principal,
        "anonymous": principal is None or principal is ANONYMOUS,
        "can_admin": principal is not None and principal is not ANONYMOUS and principal.has(Scope.admin),
        "can_profile": principal is not None and principal is not ANONYMOUS and principal.has(Scope.profile),
        "csrf_field": FIELD,
        "csrf": csrf_token(secret),
        "notice": request.query_params.get("notice"),
        "error": context.pop("error", None) or request.query_params.get("error"),
    }
    response = templates.TemplateResponse(request, name, base | context, status_code=status_code)
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    return response


def _back(path: str, notice: str) -> RedirectResponse:
    return RedirectResponse(f"{path}?{urlencode({'notice': notice})}", status_code=303)


@router.get("", include_in_schema=False)
def index() -> RedirectResponse:
    return RedirectResponse("/dashboard/farm", status_code=303)


@router.get("/static/{name}")
def static_file(name: str) -> FileResponse:
    path = STATIC_FILES.get(name)
    if path is None:
        raise NotFoundError(f"no static file {name!r}")
    return FileResponse(path, headers={"Cache-Control": "public, max-age=3600"})


# --- login -------------------------------------------------------------------------------------


@router.get("/login")
def login_form(request: Request, next: str | None = None) -> Response:
    return _render(request, "login.html", None, next=safe_next(next))


@router.post("/login")
def login(
    request: Request,
    session: SessionDep,
    token: Annotated[str, Form(max_length=500)] = "",
    next: Annotated[str, Form(max_length=2000)] = "",
) -> Response:
    secret = token.strip()
    if not secret or authenticate(session, secret) is None:
        return _render(
            request, "login.html", None, 401, next=safe_next(next), error="token: unknown, revoked or empty"
        )
    response = RedirectResponse(safe_next(next), status_code=303)
    response.set_cookie(
        TOKEN_COOKIE,
        secret,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/",
        max_age=12 * 3600,
    )
    return response


@router.post("/logout")
def logout(_: SessionForm) -> RedirectResponse:
    response = RedirectResponse("/dashboard/login", status_code=303)
    response.delete_cookie(TOKEN_COOKIE, path="/", httponly=True, samesite="strict")
    return response


# --- farm --------------------------------------------------------------------------------------


def _farm(
    request: Request, session: SessionDep, principal: Principal, status: int = 200, **extra: Any
) -> Response:
    cards = service.farm_cards(session)
    return _render(request, "farm.html", principal, status, cards=cards, families=sorted(FAMILIES), **extra)


@router.get("/farm")
def farm(request: Request, session: SessionDep, principal: PageReader) -> Response:
    return _farm(request, session, principal)


@router.post("/devices")
def register_device_form(
    request: Request,
    session: SessionDep,
    runner: RunnerDep,
    principal: AdminForm,
    serial: Annotated[str, Form(max_length=200)] = "",
    transport: Annotated[str, Form(max_length=8)] = "tcp",
    address: Annotated[str, Form(max_length=255)] = "",
    name: Annotated[str, Form(max_length=200)] = "",
    tags: Annotated[str, Form(max_length=2000)] = "",
) -> Response:
    try:
        body = DeviceCreate.model_validate(
            {
                "serial": serial.strip(),
                "transport": transport,
                "address": address.strip() or None,
                "name": name.strip() or None,
                "tags": [t.strip() for t in tags.split(",") if t.strip()],
            }
        )
        # Probed at once, as `POST /v1/devices` does; a phone that does not answer stays registered, offline.
        device = probing.register_and_probe(session, body, runner)
    except ValidationError as exc:
        errors = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'form'}: {e['msg']}" for e in exc.errors()
        )
        return _farm(request, session, principal, 422, error=errors)
    except LatfarmError as exc:
        return _farm(request, session, principal, exc.status, error=exc.detail)
    return _report_probe(device, "registered")


def _report_probe(device: Device, verb: str) -> RedirectResponse:
    """Back to the farm page, saying how the phone answered its probe."""
    outcome = device.last_error if device.status is DeviceStatus.offline else device.status.value
    return _back("/dashboard/farm", f"{verb} device {device.id} ({device.serial}): {outcome}")


@router.post("/devices/{device_id}/enabled")
def set_device_enabled(
    request: Request,
    device_id: PathId,
    session: SessionDep,
    principal: AdminForm,
    enabled: Annotated[bool, Form()],
) -> Response:
    try:
        device = devices.update_device(session, device_id, DevicePatch(enabled=enabled))
    except LatfarmError as exc:
        return _farm(request, session, principal, exc.status, error=exc.detail)
    return _back("/dashboard/farm", f"device {device.id} {'enabled' if enabled else 'disabled'}")


@router.post("/devices/{device_id}/probe")
def probe_device_form(
    request: Request, device_id: PathId, session: SessionDep, runner: RunnerDep, principal: AdminForm
) -> Response:
    try:
        device = devices.get_device(session, device_id)
    except LatfarmError as exc:
        return _farm(request, session, principal, exc.status, error=exc.detail)
    return _report_probe(probing.probe_device(session, device, runner), "probed")


# --- latency tables ----------------------------------------------------------------------------


@router.get("/latency")
def latency(
    request: Request,
    session: SessionDep,
    principal: PageReader,
    query: Annotated[pivot.PivotQuery, Query()],
) -> Response:
    pairs = service.measured_pairs(session)
    if query.device is None and pairs:
        query = query.model_copy(update={"device": pairs[0].device_id, "family": pairs[0].family})
    page = pivot.latency_pivot(session, query) if query.device is not None and query.family else None
    return _render(request, "latency.html", principal, pairs=pairs, page=page, query=query)


@router.get("/latency.csv")
def latency_csv(session: SessionDep, _: PageReader, query: Annotated[pivot.PivotQuery, Query()]) -> Response:
    page = pivot.latency_pivot(session, query)
    shown = page.query  # the unit and precision the table resolved to, named in the file
    filename = (
        f"latency-{shown.family}-device{shown.device}-{shown.unit}-{shown.precision}-page{shown.page}.csv"
    )
    return Response(
        pivot.pivot_csv(page),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


# --- plots -------------------------------------------------------------------------------------


@router.get("/plots")
def plots(
    request: Request, session: SessionDep, principal: PageReader, query: Annotated[service.PlotQuery, Query()]
) -> Response:
    pairs = service.measured_pairs(session)
    if query.device is None and pairs:
        query = query.model_copy(update={"device": pairs[0].device_id, "family": pairs[0].family})
    predictors = service.predictors_with_devices(session)
    if query.predictor is None and predictors:
        active = [p for p, _ in predictors if p.active] or [p for p, _ in predictors]
        query = query.model_copy(update={"predictor": active[0].id})
    data = service.plot_data(session, query)
    return _render(
        request, "plots.html", principal, pairs=pairs, predictors=predictors, query=query, data=data
    )


# --- a measurement's per-layer chart ----------------------------------------------------------


@router.get("/measurements/{measurement_id}")
def measurement_layers(
    request: Request, measurement_id: PathId, session: SessionDep, principal: PageReader
) -> Response:
    chart = layers.layer_chart(session, measurement_id)
    return _render(request, "layers.html", principal, chart=chart, data=chart.plot_data())


# --- jobs --------------------------------------------------------------------------------------


def _jobs(
    request: Request, session: SessionDep, principal: Principal, status: int = 200, **extra: Any
) -> Response:
    progress = service.job_progress(session)
    failures = service.failed_tasks(session, [p.id for p in progress])
    return _render(request, "jobs.html", principal, status, jobs=progress, failures=failures, **extra)


@router.get("/jobs")
def jobs(request: Request, session: SessionDep, principal: PageReader) -> Response:
    return _jobs(request, session, principal)


@router.post("/jobs/{job_id}/cancel")
def cancel_job(request: Request, job_id: PathId, session: SessionDep, principal: ProfileForm) -> Response:
    try:
        jobs_service.cancel_job(session, job_id)
    except LatfarmError as exc:
        return _jobs(request, session, principal, exc.status, error=exc.detail)
    return _back("/dashboard/jobs", f"job {job_id} cancelled")


@router.get("/jobs/progress.json")
def jobs_progress(session: SessionDep, _: ReadAccess) -> list[service.JobProgress]:
    return service.job_progress(session)


# --- predictors --------------------------------------------------------------------------------


def _predictors(
    request: Request, session: SessionDep, principal: Principal, status: int = 200, **extra: Any
) -> Response:
    rows = [
        (p, device, service.scalar_metrics(p.metrics or {}), service.model_comparison(p.metrics or {}))
        for p, device in service.predictors_with_devices(session)
    ]
    return _render(request, "predictors.html", principal, status, predictors=rows, **extra)


@router.get("/predictors")
def predictors(request: Request, session: SessionDep, principal: PageReader) -> Response:
    return _predictors(request, session, principal)


@router.post("/predictors/{predictor_id}/activate")
def activate_predictor(
    request: Request, predictor_id: PathId, session: SessionDep, registry: RegistryDep, principal: ProfileForm
) -> Response:
    try:
        predictor = predictors_service.activate_predictor(session, predictor_id, registry)
    except LatfarmError as exc:
        return _predictors(request, session, principal, exc.status, error=exc.detail)
    return _back("/dashboard/predictors", f"predictor {predictor.id} (v{predictor.version}) is now active")


# --- bootstrap campaigns -----------------------------------------------------------------------


@router.post("/devices/{device_id}/bootstrap")
def bootstrap_device(
    request: Request,
    device_id: PathId,
    session: SessionDep,
    principal: ProfileForm,
    family: Annotated[str, Form(max_length=64)] = "",
) -> Response:
    try:
        body = CampaignCreate(family=family.strip())
        campaign = campaigns_service.start_campaign(session, device_id, body, created_by=principal.name)
    except ValidationError as exc:
        errors = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        return _farm(request, session, principal, 422, error=errors)
    except LatfarmError as exc:
        return _farm(request, session, principal, exc.status, error=exc.detail)
    return _back(f"/dashboard/campaigns/{campaign.id}", f"campaign {campaign.id} started")


@router.get("/campaigns")
def campaign_list(request: Request, session: SessionDep, principal: PageReader) -> Response:
    return _render(request, "campaigns.html", principal, campaigns=campaigns.campaigns_with_devices(session))


def _campaign(
    request: Request,
    session: SessionDep,
    principal: Principal,
    campaign_id: int,
    status: int = 200,
    **extra: Any,
) -> Response:
    campaign = campaigns_service.get_campaign(session, campaign_id)
    device = devices.get_device(session, campaign.device_id)
    rounds = campaigns_service.rounds_of(session, campaign_id)
    curve = campaigns.accuracy_curve(rounds, float(campaign.spec["target_accuracy"]))
    return _render(
        request,
        "campaign.html",
        principal,
        status,
        c=campaign,
        device=device.name or device.serial,
        rounds=rounds,
        curve=curve,
        **extra,
    )


@router.get("/campaigns/{campaign_id}")
def campaign_page(
    request: Request, campaign_id: PathId, session: SessionDep, principal: PageReader
) -> Response:
    return _campaign(request, session, principal, campaign_id)


@router.post("/campaigns/{campaign_id}/cancel")
def cancel_campaign(
    request: Request, campaign_id: PathId, session: SessionDep, principal: ProfileForm
) -> Response:
    try:
        campaigns_service.cancel_campaign(session, campaign_id, cancelled_by=principal.name)
    except LatfarmError as exc:
        if exc.status == 404:
            raise
        return _campaign(request, session, principal, campaign_id, exc.status, error=exc.detail)
    return _back(f"/dashboard/campaigns/{campaign_id}", f"campaign {campaign_id} cancelled")
