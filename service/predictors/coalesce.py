"""Predict requests that arrive together, answered by one model call per predictor and conditions.

Why: a cold predict pays a fixed cost per model call — the batch featuriser's array work per layer
position, the prior's and the trees' set-up, the feature cache's bookkeeping — about 0.6 ms beside
~8 µs a config. Under load a server process finds several requests ready at once (the fast path collects
the ones whose bodies arrived in the same event-loop turn, `fast_path.py`); answered as one call, a
100-config request costs ~0.85 ms of prediction instead of ~1.5 ms (measured in process: 100 new
sr_block configs alone, against 500 in one call).

Invariant: every answer is bit for bit the one its request gets alone. A prediction is a function of its
own row — each config's feature row (cached, batch or one-config featuriser: equal to the last bit), its
run-condition columns, its margin and trees, its extrapolation flag — so a request's rows computed inside
a larger call are the same numbers. Requests are merged only when they ask the same model the same
question: device, family, frequencies, unit, precision and threads, with their configs still JSON texts
(`JsonConfigs`); a merged call stays within `max_predict_configs`. If a merged call raises anything (a bad
config, an unseen unit, a predictor activated meanwhile…), each of its requests is answered alone, so an
error is always its own request's, with its own config index.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

from sqlalchemy.orm import Session

from service.predictors import service
from service.predictors.features import JsonConfigs
from service.predictors.inference import Predictions
from service.predictors.registry import PredictorRegistry
from service.predictors.schemas import PredictRequest
from service.settings import Settings

#: A request's answer: the serving predictor's id and its predictions, or what answering it alone raised.
Answer = tuple[int, Predictions] | Exception


def predict_together(
    session: Session, registry: PredictorRegistry, requests: Sequence[PredictRequest], settings: Settings
) -> list[Answer]:
    """Each request's answer, in order: one `service.predict` call per group of requests asking the same
    model the same question (see the module's invariant), each request alone where no group takes it or
    its group's call raised."""
    answers: list[Answer | None] = [None] * len(requests)
    for group in _groups(requests, settings.max_predict_configs):
        if len(group) > 1:
            try:
                merged = requests[group[0]].model_copy(
                    update={"configs": JsonConfigs.concat([_texts(requests[i]) for i in group])}
                )
                predictor_id, predictions = service.predict(session, registry, merged, settings)
            except Exception:  # each request alone below meets its own error
                pass
            else:
                start = 0
                for i in group:
                    stop = start + _predictions(requests[i])
                    answers[i] = (predictor_id, predictions.rows(start, stop))
                    start = stop
                continue
        for i in group:
            try:
                answers[i] = service.predict(session, registry, requests[i], settings)
            except Exception as exc:  # handed to the caller as this request's answer
                answers[i] = exc
    done = [answer for answer in answers if answer is not None]
    assert len(done) == len(requests)  # every request is in exactly one group
    return done


def _predictions(request: PredictRequest) -> int:
    """Rows a request's answer holds: every config at every frequency."""
    return len(request.configs) * len(request.frequencies)


def _texts(request: PredictRequest) -> JsonConfigs:
    configs = request.configs
    assert isinstance(configs, JsonConfigs)  # `_key` merges no other kind
    return configs


def _key(request: PredictRequest) -> Hashable | None:
    """What a request asks of which model (None: never merged — its configs are not JSON texts)."""
    if not isinstance(request.configs, JsonConfigs):
        return None
    return (
        request.device,
        request.family,
        tuple(request.frequencies),
        request.unit,
        request.precision,
        request.threads,
    )


def _groups(requests: Sequence[PredictRequest], max_predictions: int) -> list[list[int]]:
    """Indices of requests to answer together, in arrival order; a group's predictions ≤ `max_predictions`."""
    groups: list[list[int]] = []
    open_groups: dict[Hashable, tuple[list[int], int]] = {}
    for i, request in enumerate(requests):
        key = _key(request)
        size = _predictions(request)
        if key is None:
            groups.append([i])
            continue
        group, total = open_groups.get(key, (None, 0))
        if group is None or total + size > max_predictions:
            group, total = [], 0
            groups.append(group)
        group.append(i)
        open_groups[key] = (group, total + size)
    return groups
