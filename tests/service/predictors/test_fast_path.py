"""`POST /v1/predict` is answered before the router, and every error is still the route's own answer."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from service.predictors import fast_path, routes
from service.predictors.models import Predictor
from service.predictors.service import activate_predictor
from tests.service.predictors.synthetic import sample_configs

Headers = Callable[..., dict[str, str]]


@pytest.fixture
def active(db_session: Session, trained: Predictor) -> Predictor:
    return activate_predictor(db_session, trained.id)


def _body(device: int, configs: list) -> dict:
    return {"device": device, "family": "sr_block", "frequency_khz": 1_600_000, "configs": configs}


def test_a_predict_is_answered_without_the_router_and_counted_under_its_route(
    client: TestClient, make_headers: Headers, active: Predictor, monkeypatch: pytest.MonkeyPatch
) -> None:
    headers = make_headers("predict")
    body = _body(active.device_id, sample_configs(3))

    def fails(*_: object) -> None:
        raise RuntimeError("not answered here")

    with monkeypatch.context() as patched:  # the fast path gives up: the router answers
        patched.setattr(fast_path, "answer_predicts", fails)
        through_router = client.post("/v1/predict", json=body, headers=headers)
    assert through_router.status_code == 200, through_router.text
    with monkeypatch.context() as patched:  # the router's endpoint would fail: the fast path answers
        patched.setattr(routes, "answer_predict", fails)
        fast = client.post("/v1/predict", json=body, headers=headers)
    assert fast.status_code == 200, fast.text
    assert fast.json() == through_router.json()
    metrics = client.get("/metrics").text
    counted = [line for line in metrics.splitlines() if "_requests_total{" in line and "/v1/predict" in line]
    assert counted, metrics[:2000]


@pytest.mark.parametrize(
    ("case", "status", "loc"),
    [
        ("no token", 401, None),
        ("read token", 403, None),
        ("bad config", 422, ["body", "configs", 1, "widths"]),
        ("no predictor", 409, None),
        ("not json", 422, None),
    ],
)
def test_errors_are_the_routes_own_problem_answers(
    client: TestClient, make_headers: Headers, active: Predictor, case: str, status: int, loc: list | None
) -> None:
    configs = sample_configs(2)
    body = _body(active.device_id, configs)
    headers = make_headers("predict")
    if case == "no token":
        headers = {}
    elif case == "read token":
        headers = make_headers("read")
    elif case == "bad config":
        body["configs"] = [configs[0], {**configs[1], "widths": "wide"}]
    elif case == "no predictor":
        body["device"] = active.device_id + 1000
    response = (
        client.post(
            "/v1/predict", content=b"{not json", headers={**headers, "content-type": "application/json"}
        )
        if case == "not json"
        else client.post("/v1/predict", json=body, headers=headers)
    )
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    if loc is not None:
        assert loc in [error["loc"] for error in response.json()["errors"]]
