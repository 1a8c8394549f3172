"""`/v1/predictors` and `/v1/predict` over HTTP (thin: parse, call the domain, shape the answer)."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Annotated

import msgspec
from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from sqlalchemy.orm import Session

from service.auth.models import Scope
from service.bounds import Cursor, PathId, Text
from service.deps import ProfileAccess, ReadAccess, SessionDep, SettingsDep, current_principal, require_scope
from service.pagination import Page
from service.predictors import coalesce, service
from service.predictors.deps import RegistryDep, registry_of
from service.predictors.features import JsonConfigs
from service.predictors.inference import Predictions
from service.predictors.nesting import MAX_NESTING, too_deep
from service.predictors.schemas import PredictorCreate, PredictorOut, PredictRequest, PredictResponse
from service.problems import InvalidInputError, problem_responses

router = APIRouter(tags=["predictors"], responses=problem_responses(401, 403, 404, 409, 413, 422))


async def snapshot_body(request: Request, _: ProfileAccess) -> bytes:
    """The archive: the raw body, or the first file of a multipart form.

    Depends on the access check, so the caller is authenticated before any byte of the body is parsed:
    an anonymous upload answers 401, never a multipart 422.
    """
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        form = await request.form()
        for value in form.values():
            if not isinstance(value, str):
                return await value.read()
        raise InvalidInputError.at(["body"], "the multipart form holds no file; attach the snapshot archive")
    data = await request.body()
    if not data:
        raise InvalidInputError.at(["body"], "send the snapshot archive (.tar) as the request body")
    return data


_BODY_FIELDS = msgspec.json.Decoder(dict[str, msgspec.Raw])
_CONFIG_TEXTS = msgspec.json.Decoder(list[msgspec.Raw])


def parse_predict_body(data: bytes) -> PredictRequest:
    """The `/v1/predict` body, validated from its bytes; configs stay JSON texts (`JsonConfigs`).

    Fast path: split the body into its fields and each config's text (no dicts built), validate every
    field but `configs` with `PredictRequest` itself and require each config to be a JSON object. Anything
    that path does not accept goes through `PredictRequest.model_validate_json` on the whole body, so
    errors keep FastAPI's shape (422 naming `body.<field>`) and wording whatever the input.
    """
    try:
        return _parse_fast(data)
    except RecursionError:
        _refuse_deep_nesting(data)
    except (msgspec.DecodeError, ValidationError, ValueError, KeyError):
        pass
    try:
        return PredictRequest.model_validate_json(data)
    except ValidationError as exc:
        if any("recursion limit" in str(err.get("msg", "")) for err in exc.errors()):
            _refuse_deep_nesting(data)
        errors = [{**err, "loc": ("body", *err.get("loc", ()))} for err in exc.errors(include_url=False)]
        raise RequestValidationError(errors) from None


def _refuse_deep_nesting(data: bytes) -> None:
    """422 naming the field (`configs.3.widths`) where the body nests deeper than any valid one does."""
    path = too_deep(data)
    if path is not None:
        where = ".".join(map(str, path[:6])) + ("…" if len(path) > 6 else "")
        raise RequestValidationError(
            [
                {
                    "type": "json_too_deep",
                    "loc": ("body", *path[:3]),
                    "msg": f"JSON nested more than {MAX_NESTING} levels deep (at {where}); "
                    "a /v1/predict body is a few levels deep: configs → config → widths",
                    "input": None,
                }
            ]
        )


def _parse_fast(data: bytes) -> PredictRequest:
    fields = _BODY_FIELDS.decode(data)
    texts = [bytes(raw) for raw in _CONFIG_TEXTS.decode(fields.pop("configs"))]
    if not all(map(bytes.startswith, texts, itertools.repeat(b"{"))):  # map: no Python frame per text
        raise ValueError("a config is not a JSON object")
    # The other fields, re-assembled from their own texts, meet the very validator of the full body.
    rest = b"".join(msgspec.json.encode(name) + b":" + bytes(raw) + b"," for name, raw in fields.items())
    body = PredictRequest.model_validate_json(b"{" + rest + b'"configs":[]}')
    body.configs = JsonConfigs.checked(body.family, texts)  # type: ignore[assignment]
    return body


_PREDICT_OPENAPI = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": PredictRequest.model_json_schema()}},
    }
}


@router.post("/v1/predictors", status_code=202, response_model=PredictorOut)
def train(
    body: PredictorCreate, request: Request, session: SessionDep, settings: SettingsDep, who: ProfileAccess
) -> PredictorOut:
    """Queue the training of a new version; poll `GET /v1/predictors/{id}` until `ready` or `failed`."""
    predictor = service.create_predictor(session, body, settings, created_by=who.name)
    trainer = request.app.state.trainer
    if trainer is not None:  # else a `latfarm worker` claims it
        trainer.wake()
    return PredictorOut.from_row(predictor)


@router.get("/v1/predictors", response_model=Page[PredictorOut])
def list_predictors(
    session: SessionDep,
    settings: SettingsDep,
    _: ReadAccess,
    family: Text | None = None,
    device: Annotated[PathId | None, Query()] = None,
    cursor: Cursor | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> Page[PredictorOut]:
    rows, next_cursor = service.list_predictors(
        session, family=family, device_id=device, cursor=cursor, limit=min(limit, settings.page_size_max)
    )
    return Page[PredictorOut](items=[PredictorOut.from_row(p) for p in rows], next_cursor=next_cursor)


#: The import body, which the route reads itself (raw or multipart): declared for OpenAPI by hand.
_IMPORT_OPENAPI = {
    "requestBody": {
        "required": True,
        "description": "a snapshot archive from `GET /v1/predictors/{id}/snapshot`",
        "content": {
            "application/x-tar": {"schema": {"type": "string", "format": "binary"}},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"snapshot": {"type": "string", "format": "binary"}},
                    "required": ["snapshot"],
                }
            },
        },
    }
}


@router.post(
    "/v1/predictors/import",
    status_code=201,
    response_model=PredictorOut,
    openapi_extra=_IMPORT_OPENAPI,
    responses=problem_responses(
        401,
        403,
        422,
        described={
            401: "no token, or an unknown one (checked before the body is read)",
            403: "the token lacks the `profile` scope",
            422: "the snapshot is refused; the detail names the first problem",
        },
    ),
)
def import_predictor(
    who: ProfileAccess,
    data: Annotated[bytes, Depends(snapshot_body)],
    session: SessionDep,
    device: Annotated[PathId | None, Query()] = None,
) -> PredictorOut:
    """Store a verified snapshot as a new, inactive version (for `device`, default the snapshot's)."""
    predictor = service.import_snapshot(session, data, device_id=device, created_by=who.name)
    return PredictorOut.from_row(predictor)


@router.get("/v1/predictors/{predictor_id}", response_model=PredictorOut)
def get_predictor(predictor_id: PathId, session: SessionDep, _: ReadAccess) -> PredictorOut:
    return PredictorOut.from_row(service.get_predictor(session, predictor_id))


@router.post("/v1/predictors/{predictor_id}/activate", response_model=PredictorOut)
def activate(
    predictor_id: PathId, session: SessionDep, registry: RegistryDep, _: ProfileAccess
) -> PredictorOut:
    return PredictorOut.from_row(service.activate_predictor(session, predictor_id, registry))


@router.get("/v1/predictors/{predictor_id}/snapshot", response_class=Response)
def snapshot(predictor_id: PathId, session: SessionDep, _: ReadAccess) -> Response:
    filename, archive = service.export_snapshot(session, predictor_id)
    return Response(
        archive,
        media_type="application/octet-stream",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


_PREDICT_ACCESS = require_scope(Scope.predict)


#: The predict path (`fast_path.PredictFastPath` answers it before the router).
PREDICT_PATH = "/v1/predict"


@router.post(
    PREDICT_PATH,
    response_model=PredictResponse,
    openapi_extra=_PREDICT_OPENAPI,
    responses=problem_responses(
        409,
        413,
        422,
        described={
            409: "no active predictor for (device, family); the detail says how to train one",
            413: "more configs × frequencies than `max_predict_configs`",
            422: "invalid body or config; `errors[].loc` names the index and field",
        },
    ),
)
async def predict(request: Request) -> Response:
    """Latency of each config at each frequency, config-major (config 0 at every frequency, then 1, …)."""
    data = await request.body()
    if len(data) <= INLINE_BODY_BYTES:
        # A request of up to ~15,000 configs is answered on the loop: the thread hop costs more than it
        # saves (measured: a cold 1,000-config request took ~20 % longer in a worker thread, 15–17 ms
        # against 12.5–13.3 ms, and 10,000 configs cost 1.1–1.7× the time per config of 1,000), and one
        # request at a time per process keeps the tail fair under load (worker threads would take turns on
        # the GIL, each request finishing later). Use `latfarm serve --workers` for cores.
        return answer_predict(request, data)
    # One worker-thread hop for access, validation, prediction and serialisation: declared as sync
    # dependencies, session, principal, scope check and settings would each take their own hop.
    return await run_in_threadpool(answer_predict, request, data)


#: Bodies up to this size (~15,000 sr_block configs, ~0.2 s of work) are predicted on the event loop;
#: larger ones in a worker thread, so a 10⁵-prediction request does not hold up the process's other
#: connections for a second.
INLINE_BODY_BYTES = 2 * 1024 * 1024


def answer_predicts(requests: Sequence[tuple[Request, bytes]]) -> list[Response | None]:
    """Answers to predict requests that arrived together (`coalesce.predict_together`: one model call per
    group asking the same question). None for a request this cannot answer — its token, body or
    prediction failed — which the caller hands to the full application, whose route gives the error."""
    first = requests[0][0]
    settings = first.app.state.settings
    answered: list[int] = []
    bodies: list[PredictRequest] = []
    with first.app.state.sessionmaker() as session:
        for k, (request, data) in enumerate(requests):
            try:
                bodies.append(_checked_body(request, session, data))
            except Exception:  # answered by the full application, error response and all
                continue
            answered.append(k)
        answers = coalesce.predict_together(session, registry_of(first), bodies, settings)
    responses: list[Response | None] = [None] * len(requests)
    for k, answer in zip(answered, answers, strict=True):
        if not isinstance(answer, Exception):
            responses[k] = _json_answer(*answer)
    return responses


def answer_predict(request: Request, data: bytes) -> Response:
    """The whole answer to a predict body: access, validation, prediction, JSON (or a `LatfarmError`)."""
    settings = request.app.state.settings
    with request.app.state.sessionmaker() as session:
        body = _checked_body(request, session, data)
        answer = service.predict(session, registry_of(request), body, settings)
    return _json_answer(*answer)


def _checked_body(request: Request, session: Session, data: bytes) -> PredictRequest:
    """The body of a caller allowed to predict (raises the `LatfarmError` or validation error otherwise)."""
    # Access first, as the dependency order would: a caller without a token gets 401/403, never 422.
    _PREDICT_ACCESS(current_principal(request, session), request.app.state.settings)
    return parse_predict_body(data)


def _json_answer(predictor_id: int, predictions: Predictions) -> Response:
    # Serialised directly: re-validating 10⁵ rows through the response model would cost more than predicting.
    return Response(predictions.to_json(predictor_id), media_type="application/json")
