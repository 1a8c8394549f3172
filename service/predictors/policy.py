"""Opt-in retraining: when enough new valid measurements arrived, train a new version and keep it only if
its holdout metrics are no worse than the active one's.

"No worse" means a share within ±10 % at least as high and a MAPE at least as low as the active
predictor's. A worker (or `latfarm` CLI) calls `run_retrain_policies` periodically; each policy remembers
the row count it last trained on, so a check with nothing new costs one count query; a round is claimed
with a compare-and-set on that count, so of several workers checking at once only one trains.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from service.db import begin_write, utcnow, write_scope
from service.devices.models import Device
from service.jobs.queue import rowcount
from service.predictors.models import Predictor, PredictorStatus, RetrainPolicy
from service.predictors.schemas import PredictorCreate, TrainFilters, TrainParams
from service.predictors.service import (
    activate_predictor,
    check_family,
    count_training_rows,
    create_predictor,
)
from service.predictors.trainer import train_predictor, trainer_name
from service.problems import InvalidInputError
from service.settings import Settings

POLICY_PRINCIPAL = "retrain-policy"


def set_retrain_policy(
    session: Session,
    family: str,
    device_id: int,
    min_new_measurements: int,
    *,
    params: Mapping[str, Any] | None = None,
    enabled: bool = True,
) -> RetrainPolicy:
    """Create or update the policy of (family, device)."""
    check_family(family, ["family"])
    begin_write(session)
    if session.get(Device, device_id) is None:
        raise InvalidInputError.at(["device"], f"device {device_id} does not exist")
    if min_new_measurements < 1:
        raise InvalidInputError.at(["min_new_measurements"], "must be at least 1")
    checked = TrainParams.model_validate(dict(params or {})).overrides()
    policy = session.scalar(
        select(RetrainPolicy).where(RetrainPolicy.family == family, RetrainPolicy.device_id == device_id)
    )
    if policy is None:
        policy = RetrainPolicy(family=family, device_id=device_id, last_row_count=0)
        session.add(policy)
    policy.min_new_measurements = min_new_measurements
    policy.params = checked
    policy.enabled = enabled
    session.commit()
    return policy


def no_worse(candidate: Mapping[str, Any], current: Mapping[str, Any]) -> bool:
    """True when `candidate` metrics are at least as good as `current` on ±10 % share and MAPE."""
    return float(candidate.get("within_10", 0.0)) >= float(current.get("within_10", 0.0)) and float(
        candidate.get("mape", float("inf"))
    ) <= float(current.get("mape", float("inf")))


def run_retrain_policies(session_factory: sessionmaker[Session], settings: Settings) -> list[int]:
    """Check every enabled policy; train (synchronously) where due; return the new predictors' ids."""
    with session_factory() as session:
        due: list[tuple[int, str, int, dict[str, Any], int, int]] = []
        for policy in session.scalars(select(RetrainPolicy).where(RetrainPolicy.enabled.is_(True))):
            count = count_training_rows(session, policy.family, policy.device_id, TrainFilters())
            # Below the training minimum the policy is not due yet (training would only refuse).
            if (
                count - policy.last_row_count >= policy.min_new_measurements
                and count >= settings.min_training_rows
            ):
                due.append(
                    (
                        policy.id,
                        policy.family,
                        policy.device_id,
                        dict(policy.params),
                        policy.last_row_count,
                        count,
                    )
                )
    trained: list[int] = []
    for policy_id, family, device_id, params, seen, count in due:
        # Claim the round (compare-and-set on the count it starts from): of several workers checking at
        # once, exactly one trains.
        with write_scope(session_factory) as session:
            claimed = rowcount(
                session.execute(
                    update(RetrainPolicy)
                    .where(RetrainPolicy.id == policy_id, RetrainPolicy.last_row_count == seen)
                    .values(last_row_count=count, last_checked_at=utcnow())
                )
            )
        if not claimed:
            continue
        # Created already leased to us, so no other trainer picks it up: we train it here and now.
        owner = trainer_name(POLICY_PRINCIPAL)
        with session_factory() as session:
            data = PredictorCreate(family=family, device=device_id, params=TrainParams.model_validate(params))
            predictor_id = create_predictor(
                session, data, settings, created_by=POLICY_PRINCIPAL, claimed_by=owner
            ).id
        train_predictor(session_factory, predictor_id, settings, owner=owner)
        trained.append(predictor_id)
        with session_factory() as session:
            fresh = session.get(Predictor, predictor_id)
            if fresh is None or fresh.status is not PredictorStatus.ready:
                continue
            current = session.scalar(
                select(Predictor).where(
                    Predictor.family == family, Predictor.device_id == device_id, Predictor.active.is_(True)
                )
            )
            if current is None or no_worse(fresh.metrics, current.metrics):
                activate_predictor(session, predictor_id)
    return trained
