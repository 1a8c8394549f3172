"""Predict requests that arrive together share one model call, and each gets bit for bit its own answer."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
from fastapi import FastAPI
from sqlalchemy.orm import Session

from service.predictors import features, service
from service.predictors.coalesce import predict_together
from service.predictors.inference import Predictions
from service.predictors.models import Predictor
from service.predictors.registry import PredictorRegistry
from service.predictors.routes import parse_predict_body
from service.predictors.schemas import PredictRequest
from service.predictors.service import activate_predictor
from service.problems import InvalidInputError
from service.settings import Settings
from tests.service.predictors.synthetic import sample_configs

Headers = Callable[..., dict[str, str]]


@pytest.fixture
def active(db_session: Session, trained: Predictor) -> Predictor:
    return activate_predictor(db_session, trained.id)


@pytest.fixture(autouse=True)
def cold() -> Iterator[None]:
    """No feature cache: every prediction featurises its configs afresh (the path a new generation takes)."""
    features.configure_cache(0)
    yield
    features.configure_cache(features.DEFAULT_CACHE_ENTRIES)


@pytest.fixture
def model_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Configs in each call of `service.predict` (the one call that featurises and runs the model)."""
    calls: list[int] = []
    real = service.predict

    def counted(session: Session, registry: PredictorRegistry, request: PredictRequest, settings: Settings):  # type: ignore[no-untyped-def]
        calls.append(len(request.configs))
        return real(session, registry, request, settings)

    monkeypatch.setattr(service, "predict", counted)
    return calls


def _body(device: int, configs: list[Any], **extra: Any) -> dict[str, Any]:
    return {
        "device": device,
        "family": "sr_block",
        "frequencies_khz": [800_000, 1_600_000],
        "configs": configs,
        **extra,
    }


def _parsed(body: dict[str, Any]) -> PredictRequest:
    return parse_predict_body(json.dumps(body).encode())


def _same_bits(a: Predictions, b: Predictions) -> bool:
    return all(
        np.asarray(x).tobytes() == np.asarray(y).tobytes()
        for x, y in [
            (a.latency_ms, b.latency_ms),
            (a.p10_ms, b.p10_ms),
            (a.p90_ms, b.p90_ms),
            (a.extrapolated, b.extrapolated),
        ]
    )


def test_requests_asking_the_same_question_share_one_call_and_get_their_own_bits(
    db_session: Session, settings: Settings, active: Predictor, model_calls: list[int]
) -> None:
    registry = PredictorRegistry(settings.predictor_refresh_ms)
    configs = sample_configs(40, seed=11)
    # 5 × 8 configs: together 40 (the batch featuriser), alone 8 each (the one-config featuriser).
    requests = [_parsed(_body(active.device_id, configs[8 * i : 8 * (i + 1)])) for i in range(5)]
    together = predict_together(db_session, registry, requests, settings)
    assert model_calls == [40]
    alone = [service.predict(db_session, registry, r, settings) for r in requests]
    for answer, (predictor_id, own) in zip(together, alone, strict=True):
        assert not isinstance(answer, Exception)
        assert answer[0] == predictor_id == active.id
        assert answer[1].latency_ms.shape == (16,)  # 8 configs × 2 frequencies
        assert _same_bits(answer[1], own)


def test_a_bad_config_in_a_group_is_its_own_requests_error_and_the_others_are_answered(
    db_session: Session, settings: Settings, active: Predictor, model_calls: list[int]
) -> None:
    registry = PredictorRegistry(settings.predictor_refresh_ms)
    configs = sample_configs(12, seed=12)
    bad = [configs[4], {**configs[5], "widths": [16, 0, 16]}]
    requests = [
        _parsed(_body(active.device_id, configs[:4])),
        _parsed(_body(active.device_id, bad)),
        _parsed(_body(active.device_id, configs[6:12])),
    ]
    together = predict_together(db_session, registry, requests, settings)
    assert model_calls[0] == 12  # tried together, then each alone
    error = together[1]
    assert isinstance(error, InvalidInputError)
    assert error.errors[0]["loc"][:3] == ["body", "configs", 1]  # its own index, not the merged one (5)
    for answer, request in [(together[0], requests[0]), (together[2], requests[2])]:
        assert not isinstance(answer, Exception)
        assert _same_bits(answer[1], service.predict(db_session, registry, request, settings)[1])


def test_different_questions_and_the_size_limit_split_the_calls(
    db_session: Session, settings: Settings, active: Predictor, model_calls: list[int]
) -> None:
    registry = PredictorRegistry(settings.predictor_refresh_ms)
    configs = sample_configs(30, seed=13)
    device = active.device_id
    requests = [
        _parsed(_body(device, configs[0:5])),
        _parsed(_body(device, configs[5:10], frequencies_khz=[2_400_000])),  # another clock: its own call
        _parsed(_body(device, configs[10:15])),
        _parsed(_body(device, configs[15:20], threads=2)),  # other run conditions: its own call
        _parsed(_body(device, configs[20:25])),
        _parsed(_body(device, configs[25:30])),
    ]
    assert predict_together(db_session, registry, requests, settings) is not None
    assert sorted(model_calls) == [5, 5, 20]
    model_calls.clear()
    # At most 20 predictions a call (10 configs × 2 clocks): the four alike go two by two.
    limited = settings.model_copy(update={"max_predict_configs": 20})
    answers = predict_together(db_session, registry, requests, limited)
    assert sorted(model_calls) == [5, 5, 10, 10]
    assert not any(isinstance(a, Exception) for a in answers)


async def _post(app: FastAPI, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
    """One `POST /v1/predict` straight through the ASGI app (no transport in between to reorder turns)."""
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.Event().wait()  # no disconnect while the answer is written
        raise AssertionError("unreachable")

    messages: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        messages.append(message)

    raw_headers = [
        (k.lower().encode(), v.encode()) for k, v in {**headers, "content-type": "application/json"}.items()
    ]
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
        "path": "/v1/predict", "raw_path": b"/v1/predict", "query_string": b"", "root_path": "",
        "headers": raw_headers, "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80),
    }  # fmt: skip
    await app(scope, receive, send)
    status = next(m["status"] for m in messages if m["type"] == "http.response.start")
    return status, b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")


def test_concurrent_http_requests_are_answered_together_each_with_its_own_answer_or_error(
    app: FastAPI, make_headers: Headers, active: Predictor, model_calls: list[int]
) -> None:
    headers = make_headers("predict")
    configs = sample_configs(24, seed=14)
    device = active.device_id
    cases = [
        (_body(device, configs[0:6]), headers),
        (_body(device, configs[6:12]), headers),
        (_body(device, configs[12:14]), {}),  # no token: 401, from the full application
        (_body(device, [configs[14], {**configs[15], "widths": "wide"}]), headers),  # 422 at configs.1
        (_body(device, configs[16:24]), headers),
        (_body(device + 1000, configs[0:2]), headers),  # no predictor: 409
    ]
    bodies = [json.dumps(body).encode() for body, _ in cases]

    async def scenario() -> tuple[list[tuple[int, bytes]], list[int], list[tuple[int, bytes]]]:
        async with app.router.lifespan_context(app):
            together = await asyncio.gather(
                *(_post(app, b, h) for b, (_, h) in zip(bodies, cases, strict=True))
            )
            calls = list(model_calls)
            alone = [await _post(app, b, h) for b, (_, h) in zip(bodies, cases, strict=True)]
        return together, calls, alone

    together, calls, alone = asyncio.run(scenario())
    assert [status for status, _ in together] == [200, 200, 401, 422, 200, 409]
    assert together == alone  # status and body, byte for byte
    assert calls[0] == 6 + 6 + 2 + 8  # the four with a token and a predictor, in one call first
    errors = json.loads(together[3][1])["errors"]
    assert ["body", "configs", 1, "widths"] in [e["loc"] for e in errors]
    # /metrics: one turn answered all six, then six turns one each.
    registry = app.state.metrics.registry
    assert registry.get_sample_value("latfarm_predict_requests_per_turn_count") == 7
    assert registry.get_sample_value("latfarm_predict_requests_per_turn_sum") == 12
