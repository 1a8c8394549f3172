"""Predictors as plain functions over a `Session`: create, list, activate, predict, export, import, sample.

Training runs outside the request: `create_predictor` records queued work (status `training`), which a
trainer claims and runs (`service.predictors.trainer`, in the API process or in `latfarm worker`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from pydantic import ValidationError
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, defer

from profilers.blocks import BlockConfigError, get_family
from service.db import begin_write, utcnow
from service.devices.models import Device
from service.jobs import queue
from service.measurements.models import Measurement
from service.pagination import keyset_page
from service.predictors.features import FeatureError, UnseenConditionError
from service.predictors.inference import TRANSFER_MODEL, PeerModel, Predictions
from service.predictors.models import Predictor, PredictorStatus
from service.predictors.registry import NoActivePredictorError, PredictorRegistry, load_latency_model
from service.predictors.schemas import (
    PredictorCreate,
    PredictRequest,
    TrainFilters,
    TrainParams,
    TransferRequest,
)
from service.predictors.snapshot import (
    Snapshot,
    SnapshotContents,
    SnapshotError,
    build_snapshot,
    read_snapshot,
)
from service.predictors.training import TrainingError, TrainingRows
from service.predictors.transfer import load_peer
from service.problems import ConflictError, InvalidInputError, NotFoundError, PayloadTooLargeError
from service.settings import Settings


# -- training ---------------------------------------------------------------------------------------------
def check_family(family: str, loc: list[str | int]) -> None:
    """422 at `loc` unless `family` is a known block family."""
    try:
        get_family(family)
    except BlockConfigError as exc:
        raise InvalidInputError.at(loc, str(exc)) from None


def _measurement_query(family: str, device_id: int, filters: TrainFilters) -> Any:
    frequency = func.coalesce(Measurement.frequency_khz, Measurement.observed_frequency_khz)
    query = select(
        Measurement.id,
        Measurement.config,
        Measurement.config_hash,
        frequency,
        Measurement.threads,
        Measurement.cluster,
        Measurement.median_ms,
        Measurement.precision,
    ).where(
        Measurement.device_id == device_id,
        Measurement.family == family,
        Measurement.valid.is_(True),
        frequency.is_not(None),
        Measurement.median_ms > 0,
    )
    if filters.frequencies_khz:
        query = query.where(frequency.in_(filters.frequencies_khz))
    if filters.unit is not None:
        query = query.where(Measurement.cluster == filters.unit)
    if filters.precision is not None:
        query = query.where(Measurement.precision == filters.precision)
    if filters.threads is not None:
        query = query.where(Measurement.threads == filters.threads)
    if filters.runtime_name is not None:
        query = query.where(Measurement.runtime_name == filters.runtime_name)
    if not filters.include_virtual:
        query = query.where(Measurement.virtual.is_(False))
    if filters.exclude_config_hashes:
        query = query.where(Measurement.config_hash.not_in(filters.exclude_config_hashes))
    return query.order_by(Measurement.id)


def count_training_rows(session: Session, family: str, device_id: int, filters: TrainFilters) -> int:
    """How many valid measurements a predictor of (family, device) with `filters` would train on."""
    sub = _measurement_query(family, device_id, filters).subquery()
    return int(session.scalar(select(func.count()).select_from(sub)) or 0)


def load_training_rows(session: Session, family: str, device_id: int, filters: TrainFilters) -> TrainingRows:
    """The valid measurements matching `filters`, as parallel columns."""
    result = session.execute(_measurement_query(family, device_id, filters)).all()
    return TrainingRows(
        family=family,
        ids=[r[0] for r in result],
        configs=[r[1] for r in result],
        config_hashes=[r[2] for r in result],
        frequencies_khz=[int(r[3]) for r in result],
        threads=[int(r[4]) for r in result],
        clusters=[str(r[5]) for r in result],
        median_ms=[float(r[6]) for r in result],
        precisions=[str(r[7]) for r in result],
    )


def create_predictor(
    session: Session,
    data: PredictorCreate,
    settings: Settings,
    created_by: str | None = None,
    *,
    claimed_by: str | None = None,
) -> Predictor:
    """Record a new predictor version in `training` state (queued for a trainer), after checking there is
    enough data for it. `claimed_by`: created already leased to that trainer (it trains it right away)."""
    begin_write(session)
    check_family(data.family, ["body", "family"])
    if session.get(Device, data.device) is None:
        raise InvalidInputError.at(["body", "device"], f"device {data.device} does not exist")
    available = count_training_rows(session, data.family, data.device, data.filters)
    if available < settings.min_training_rows:
        raise InvalidInputError.at(
            ["body", "device"],
            f"{available} valid {data.family} measurements of device {data.device} match; at least "
            f"{settings.min_training_rows} are needed ({settings.min_training_rows - available} more) — "
            "run a profiling job (POST /v1/jobs) first",
        )
    transfer = None
    if data.transfer is not None:
        peers = resolve_peers(session, data.family, data.device, data.transfer, data.filters.unit)
        transfer = {"peers": peers}
    predictor = Predictor(
        family=data.family,
        device_id=data.device,
        version=_next_version(session, data.family, data.device),
        status=PredictorStatus.training,
        params=data.params.overrides(),
        filters=data.filters.model_dump(exclude_none=True),
        transfer=transfer,
        created_by=created_by,
    )
    if claimed_by is not None:
        predictor.attempts = 1
        for column, value in queue.training_lease(claimed_by, settings.training_lease_seconds).items():
            setattr(predictor, column, value)
    session.add(predictor)
    session.commit()
    return predictor


def _is_transfer(predictor: Predictor) -> bool:
    served = (predictor.feature_schema or {}).get("model") or {}
    return bool(served.get("kind") == TRANSFER_MODEL)


def _knows_unit(predictor: Predictor, unit: str | None) -> bool:
    return unit is None or unit in (predictor.feature_schema or {}).get("clusters", [])


def resolve_peers(
    session: Session, family: str, device_id: int, request: TransferRequest, unit: str | None = None
) -> list[dict[str, int]]:
    """The peers a transfer training learns from: each named device's active, ready `family` predictor
    (or every other device's, for "all"), as {device_id, predictor_id, version}. 422 at
    `body.transfer.peers[.i]` naming what is missing: an unknown device, the device itself, a device with
    no active predictor of the family, one whose predictor is itself a transfer predictor or never saw
    `unit`; or, for "all", that no device has one."""
    loc: list[str | int] = ["body", "transfer", "peers"]
    active = {
        p.device_id: p
        for p in session.scalars(
            select(Predictor)
            .options(defer(Predictor.model), defer(Predictor.model_p10), defer(Predictor.model_p90))
            .options(defer(Predictor.peer_models))
            .where(
                Predictor.family == family,
                Predictor.active.is_(True),
                Predictor.status == PredictorStatus.ready,
                Predictor.device_id.is_not(None),
                Predictor.device_id != device_id,
            )
            .order_by(Predictor.device_id)
        )
    }
    if request.peers == "all":
        chosen = [p for p in active.values() if not _is_transfer(p) and _knows_unit(p, unit)]
        if not chosen:
            on_unit = f" on unit {unit!r}" if unit is not None else ""
            raise InvalidInputError.at(
                loc,
                f"no other device has an active {family} predictor{on_unit} to learn from (transfer "
                "predictors are not peers): train and activate one for another device first",
            )
    else:
        chosen = []
        for i, peer_device in enumerate(request.peers):
            where = [*loc, i]
            if peer_device == device_id:
                raise InvalidInputError.at(where, f"device {peer_device} is the device being trained")
            if session.get(Device, peer_device) is None:
                raise InvalidInputError.at(where, f"device {peer_device} does not exist")
            peer = active.get(peer_device)
            if peer is None:
                raise InvalidInputError.at(
                    where, f"device {peer_device} has no active {family} predictor: train and activate one"
                )
            if _is_transfer(peer):
                raise InvalidInputError.at(
                    where,
                    f"device {peer_device}'s active predictor {peer.id} is itself a transfer predictor; "
                    "a peer must serve from its own measurements",
                )
            if not _knows_unit(peer, unit):
                raise InvalidInputError.at(
                    where, f"device {peer_device}'s active {family} predictor never saw unit {unit!r}"
                )
            chosen.append(peer)
    return [{"device_id": int(p.device_id or 0), "predictor_id": p.id, "version": p.version} for p in chosen]


def load_peers(session: Session, transfer: dict[str, Any] | None) -> list[PeerModel]:
    """The peer models a transfer training asked for (none without transfer); TrainingError when a peer
    predictor is gone or no longer ready."""
    peers = []
    for entry in (transfer or {}).get("peers", []):
        predictor = session.get(Predictor, int(entry["predictor_id"]))
        if predictor is None or predictor.status is not PredictorStatus.ready or not predictor.model:
            raise TrainingError(
                f"peer predictor {entry['predictor_id']} of device {entry['device_id']} is gone or not "
                "ready; request the training again"
            )
        peers.append(
            load_peer(
                int(entry["device_id"]),
                predictor.id,
                predictor.version,
                predictor.feature_schema,
                predictor.model,
            )
        )
    return peers


def _next_version(session: Session, family: str, device_id: int | None) -> int:
    latest = session.scalar(
        select(func.max(Predictor.version)).where(
            Predictor.family == family, Predictor.device_id == device_id
        )
    )
    return int(latest or 0) + 1


# -- reading and activation -------------------------------------------------------------------------------
def get_predictor(session: Session, predictor_id: int) -> Predictor:
    """The predictor with this id, or NotFoundError."""
    predictor = session.get(Predictor, predictor_id)
    if predictor is None:
        raise NotFoundError(f"predictor {predictor_id} does not exist")
    return predictor


def list_predictors(
    session: Session,
    *,
    family: str | None = None,
    device_id: int | None = None,
    cursor: int | None = None,
    limit: int = 100,
) -> tuple[list[Predictor], int | None]:
    """A page of predictors, newest first, optionally of one family and/or device, and the next cursor.

    The model bytes are not loaded: a listing never needs them.
    """
    query = select(Predictor).options(
        defer(Predictor.model),
        defer(Predictor.model_p10),
        defer(Predictor.model_p90),
        defer(Predictor.peer_models),
    )
    if family is not None:
        query = query.where(Predictor.family == family)
    if device_id is not None:
        query = query.where(Predictor.device_id == device_id)
    return keyset_page(session, query, Predictor.id, cursor=cursor, limit=limit, newest_first=True)


def activate_predictor(
    session: Session, predictor_id: int, registry: PredictorRegistry | None = None
) -> Predictor:
    """Make a ready predictor the one active for its (device, family), deactivating the previous in the
    same transaction."""
    begin_write(session)
    predictor = get_predictor(session, predictor_id)
    if predictor.status is not PredictorStatus.ready:
        raise ConflictError(
            f"predictor {predictor_id} is {predictor.status.value}; only a ready predictor can be activated"
        )
    # Lock the (device, family) group (PostgreSQL) so two activations serialise; SQLite has one writer.
    session.execute(
        select(Predictor.id)
        .where(Predictor.family == predictor.family, Predictor.device_id == predictor.device_id)
        .order_by(Predictor.id)
        .with_for_update()
    ).all()
    session.execute(
        update(Predictor)
        .where(
            Predictor.family == predictor.family,
            Predictor.device_id == predictor.device_id,
            Predictor.id != predictor_id,
            Predictor.active.is_(True),
        )
        .values(active=False)
    )
    predictor.active = True
    predictor.activated_at = utcnow()
    session.commit()
    if registry is not None:
        registry.invalidate(predictor.device_id, predictor.family)
    return predictor


# -- serving ----------------------------------------------------------------------------------------------
def predict(
    session: Session, registry: PredictorRegistry, request: PredictRequest, settings: Settings
) -> tuple[int, Predictions]:
    """Predict every config at every requested frequency (config-major) with the active predictor."""
    frequencies = request.frequencies
    total = len(request.configs) * len(frequencies)
    if total > settings.max_predict_configs:
        raise PayloadTooLargeError(
            f"{len(request.configs)} configs × {len(frequencies)} frequencies = {total} predictions; "
            f"at most {settings.max_predict_configs} per request — split it into several requests"
        )
    check_family(request.family, ["body", "family"])
    try:
        predictor_id, model = registry.active(session, request.device, request.family)
    except NoActivePredictorError as exc:
        raise ConflictError(
            f'{exc}: train one with POST /v1/predictors {{"family": "{request.family}", '
            f'"device": {request.device}}} and, once it is ready, POST /v1/predictors/{{id}}/activate'
        ) from None
    try:
        return predictor_id, model.predict(
            request.configs,
            frequencies,
            cluster=request.unit,
            threads=request.threads,
            precision=request.precision,
        )
    except UnseenConditionError as exc:
        raise InvalidInputError.at(["body", exc.field], f"predictor {predictor_id}: {exc.msg}") from None
    except FeatureError as exc:
        loc: list[str | int] = ["body", "configs", exc.index]
        if exc.field:
            loc.append(exc.field)
        raise InvalidInputError.at(loc, exc.msg) from None


def select_uncertain(
    session: Session,
    device_id: int,
    family: str,
    candidates: Sequence[Mapping[str, Any]],
    n: int,
    frequency_khz: int,
    *,
    unit: str | None = None,
    precision: str | None = None,
) -> list[dict[str, Any]]:
    """The `n` candidates with the widest p10–p90 band (relative to the latency) under the active
    predictor, on `unit` at `precision` (None: the predictor's defaults), widest first: where the next
    measurements teach the predictor most. A unit or precision the predictor never saw is a 422 at the
    job's `body.runtime.<unit|precision>`."""
    predictor_id = session.scalar(
        select(Predictor.id).where(
            Predictor.device_id == device_id, Predictor.family == family, Predictor.active.is_(True)
        )
    )
    if predictor_id is None:
        raise ConflictError(
            f"uncertainty sampling needs an active {family} predictor for device {device_id}; "
            "train and activate one first (POST /v1/predictors, then /v1/predictors/{id}/activate)"
        )
    model = load_latency_model(session, predictor_id)
    try:
        result = model.predict(candidates, [frequency_khz], cluster=unit, precision=precision)
    except UnseenConditionError as exc:
        raise InvalidInputError.at(
            ["body", "runtime", exc.field], f"uncertainty sampling on device {device_id}: {exc.msg}"
        ) from None
    except FeatureError as exc:
        raise InvalidInputError.at(["candidates", exc.index, exc.field or "config"], exc.msg) from None
    width = (result.p90_ms - result.p10_ms) / result.latency_ms
    # Stable sort: equal widths keep the candidates' order, so a seeded draw gives a reproducible pick.
    order = np.argsort(-width, kind="stable")[: max(n, 0)]
    return [dict(candidates[i]) for i in order]


# -- snapshots --------------------------------------------------------------------------------------------
def export_snapshot(session: Session, predictor_id: int) -> tuple[str, bytes]:
    """The snapshot archive of a ready predictor and its file name."""
    predictor = get_predictor(session, predictor_id)
    if predictor.status is not PredictorStatus.ready or not (
        predictor.model and predictor.model_p10 and predictor.model_p90
    ):
        raise ConflictError(f"predictor {predictor_id} is {predictor.status.value}; only ready ones export")
    manifest = {
        "family": predictor.family,
        "device_id": predictor.device_id,
        "library_versions": predictor.library_versions,
        "predictor": {
            "id": predictor.id,
            "version": predictor.version,
            "params": predictor.params,
            "filters": predictor.filters,
            "training_data_hash": predictor.training_data_hash,
            "row_count": predictor.row_count,
            "created_at": predictor.created_at.isoformat(),
            "finished_at": predictor.finished_at.isoformat() if predictor.finished_at else None,
        },
    }
    archive = build_snapshot(
        manifest=manifest,
        model=predictor.model,
        model_p10=predictor.model_p10,
        model_p90=predictor.model_p90,
        feature_schema=predictor.feature_schema,
        metrics=predictor.metrics,
        holdout=predictor.holdout,
        peers=predictor.peer_models,
        mtime=(predictor.finished_at or predictor.created_at).timestamp(),
    )
    device = predictor.device_id if predictor.device_id is not None else "fleet"
    return f"{predictor.family}-device{device}-v{predictor.version}.tar", archive


def _checked_facts(contents: SnapshotContents) -> tuple[dict[str, Any], dict[str, Any]]:
    """The snapshot's training params and filters, checked as a training request's would be."""
    facts = contents.facts.predictor
    filters = {k: v for k, v in facts.filters.items() if k != "imported_from"}
    try:
        TrainParams.model_validate(facts.params, strict=True)
        TrainFilters.model_validate(filters, strict=True)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(part) for part in first.get("loc", ()))
        raise SnapshotError(
            f"manifest.json predictor params/filters are malformed at {where}: {first['msg']}"
        ) from None
    return dict(facts.params), filters


def _transfer_of(metrics: Mapping[str, Any]) -> dict[str, Any] | None:
    """The peers a snapshot's predictor learnt from, as its metrics name them (None: not a transfer)."""
    transfer = metrics.get("transfer")
    if not isinstance(transfer, dict) or not isinstance(transfer.get("peers"), list):
        return None
    return {"peers": transfer["peers"]}


def import_snapshot(
    session: Session, data: bytes, *, device_id: int | None = None, created_by: str | None = None
) -> Predictor:
    """Verify a snapshot fully, then store it as a new ready (inactive) version in one transaction; nothing
    is written when verification fails. `device_id` overrides the device named in the snapshot."""
    try:
        contents = read_snapshot(data)
        Snapshot(contents)  # the models and feature schema must load, not just hash correctly
        params, filters = _checked_facts(contents)
    except SnapshotError as exc:
        raise InvalidInputError.at(["body"], f"snapshot refused: {exc}") from None
    facts = contents.facts
    check_family(facts.family, ["body", "manifest", "family"])
    begin_write(session)
    target = device_id if device_id is not None else facts.device_id
    if target is None or session.get(Device, target) is None:
        raise InvalidInputError.at(
            ["query", "device"],
            f"device {target!r} of the snapshot does not exist here; pass ?device=<id> to import it for one",
        )
    predictor = Predictor(
        family=facts.family,
        device_id=target,
        version=_next_version(session, facts.family, target),
        status=PredictorStatus.ready,
        params=params,
        filters={**filters, "imported_from": facts.predictor.id},
        metrics=contents.metrics,
        feature_schema=contents.feature_schema,
        holdout=contents.holdout,
        training_data_hash=facts.predictor.training_data_hash,
        row_count=facts.predictor.row_count,
        model=contents.model,
        model_p10=contents.model_p10,
        model_p90=contents.model_p90,
        transfer=_transfer_of(contents.metrics),
        peer_models=contents.peers,
        library_versions=dict(facts.library_versions),
        created_by=created_by,
        finished_at=utcnow(),
    )
    session.add(predictor)
    try:
        session.commit()
    except BaseException:
        session.rollback()  # one transaction: a failed insert leaves nothing behind
        raise
    return predictor
