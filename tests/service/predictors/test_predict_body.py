"""`/v1/predict` bodies: a cold batch answers as the one-config path does, deep nesting is a 422 naming the
field, and the feature cache's hit rate reaches `/metrics`."""

from __future__ import annotations

import json
from collections.abc import Callable

import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.predictors import batch_features, features
from service.predictors.models import Predictor
from service.predictors.nesting import too_deep
from tests.service.predictors.synthetic import sample_configs

Headers = Callable[..., dict[str, str]]
_JSON = {"content-type": "application/json"}


def _body(device: int, configs: object) -> bytes:
    return json.dumps(
        {"device": device, "family": "sr_block", "frequencies_khz": [800_000, 2_400_000], "configs": configs}
    ).encode()


def test_a_cold_batch_predicts_exactly_as_the_one_config_path(
    client: TestClient, make_headers: Headers, trained: Predictor, monkeypatch: pytest.MonkeyPatch
) -> None:
    client.post(f"/v1/predictors/{trained.id}/activate", headers=make_headers("profile"))
    headers = make_headers("predict") | _JSON
    configs = sample_configs(120, seed=77)
    configs[3] = dict(configs[3], residual="false")  # lax: only the one-config path (pydantic) takes it
    answers = []
    for batch_min in (batch_features.BATCH_MIN, 10**9):
        features._JSON_CACHES.clear()
        monkeypatch.setattr(batch_features, "BATCH_MIN", batch_min)
        response = client.post("/v1/predict", content=_body(trained.device_id, configs), headers=headers)
        assert response.status_code == 200, response.text
        answers.append(response.content)
    assert answers[0] == answers[1]
    assert len(json.loads(answers[0])["predictions"]) == 240

    bad = list(configs)
    bad[57] = {**configs[57], "kernel": 4}
    features._JSON_CACHES.clear()
    monkeypatch.setattr(batch_features, "BATCH_MIN", 1)
    refused = client.post("/v1/predict", content=_body(trained.device_id, bad), headers=headers)
    assert refused.status_code == 422 and refused.headers["content-type"] == "application/problem+json"
    assert refused.json()["errors"][0]["loc"] == ["body", "configs", 57, "kernel"]


@pytest.mark.parametrize(
    ("nested", "loc"),
    [
        (b'[{"scale": 2}, {"widths": ' + b"[" * 1000 + b"]" * 1000 + b"}]", ["body", "configs", 1, "widths"]),
        (b"[" * 1000 + b"]" * 1000, ["body", "configs", 0, 0]),
        (b'[{"a": "[{", "b": ' + b'{"a": ' * 1000 + b"1" + b"}" * 1001 + b"]", ["body", "configs", 0, "b"]),
        (b'[{"widths": ' + b"[" * 300 + b"]" * 300 + b"}]", ["body", "configs", 0, "widths"]),
    ],
)
def test_deep_nesting_is_a_422_naming_the_field(
    client: TestClient, make_headers: Headers, trained: Predictor, nested: bytes, loc: list[object]
) -> None:
    body = b'{"device": %d, "family": "sr_block", "frequency_khz": 1000000, "configs": %s}' % (
        trained.device_id,
        nested,
    )
    response = client.post("/v1/predict", content=body, headers=make_headers("predict") | _JSON)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    error = response.json()["errors"][0]
    assert error["loc"] == loc and "nested more than 64 levels" in error["msg"]


def test_the_nesting_scan_skips_strings_and_finds_nothing_in_shallow_bodies() -> None:
    assert too_deep(b'{"configs": [{"widths": [1, 2]}], "x": "[[[[[[[[[[[["}', limit=4) is None
    assert too_deep(b'{"a": [1, {"b": [[7]]}]}', limit=3) == ["a", 1, "b"]
    assert too_deep(b'{"k\\"ey": [[[1]]]}', limit=3) == ['k"ey', 0, 0]
    assert too_deep(b"[1, 2, [3, [4]]]", limit=2) == [2, 1]


def test_metrics_export_the_feature_cache_hit_rate(
    client: TestClient, make_headers: Headers, trained: Predictor
) -> None:
    client.post(f"/v1/predictors/{trained.id}/activate", headers=make_headers("profile"))
    features._JSON_CACHES.clear()
    body = _body(trained.device_id, sample_configs(20, seed=5))
    for _ in range(4):  # one miss per config, then three hits
        client.post("/v1/predict", content=body, headers=make_headers("predict") | _JSON)
    text = client.get("/metrics").text
    ratio = [
        line
        for line in text.splitlines()
        if line.startswith("latfarm_feature_cache_hit_ratio{") and "json" in line
    ]
    assert len(ratio) == 1 and np.isclose(float(ratio[0].split()[-1]), 0.75)
    assert any(line.startswith("latfarm_feature_cache_lookups_total{") for line in text.splitlines())
    assert "latfarm_feature_cache_limit_entries" in text
