"""The OpenAPI contract: bodies, problem+json errors, exactly-one-of rules; `/metrics` behind a token."""

from __future__ import annotations

from collections.abc import Callable

from fastapi.testclient import TestClient

from service.app import create_app
from service.settings import Settings

PROBLEM = "application/problem+json"
#: Its body and auth order belong to the snapshot-import work; checked there.
OTHERS = {("post", "/v1/predictors/import")}


def test_every_v1_operation_documents_its_errors_as_problem_json(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    problem = spec["components"]["schemas"]["Problem"]
    assert set(problem["required"]) >= {"type", "title", "status", "detail"}
    for path, operations in spec["paths"].items():
        if not path.startswith("/v1"):
            continue
        for method, operation in operations.items():
            responses = operation["responses"]
            for status in ("401", "403", "404", "422"):
                content = responses[status]["content"]
                assert content == {PROBLEM: {"schema": {"$ref": "#/components/schemas/Problem"}}}, (
                    path,
                    status,
                )
            if (
                method in ("post", "patch")
                and (method, path) not in OTHERS
                and "{" not in path.split("/")[-1]
            ):
                assert "requestBody" in operation or path.endswith(("/probe", "/cancel", "/activate")), path
    assert "409" in spec["paths"]["/v1/devices/{device_id}"]["delete"]["responses"]
    assert spec["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert spec["paths"]["/v1/jobs"]["post"]["security"] == [{"bearer": []}]
    assert "security" not in spec["paths"]["/healthz"]["get"]


def test_exactly_one_of_rules_are_in_the_schema(client: TestClient) -> None:
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    rules = [rule["oneOf"] for rule in schemas["JobCreate"]["allOf"]]
    assert [[branch["required"] for branch in rule] for rule in rules] == [
        [["configs"], ["sampler"]],
        [["devices"], ["selector"]],
    ]
    predict = client.get("/openapi.json").json()["paths"]["/v1/predict"]["post"]["requestBody"]
    rule = predict["content"]["application/json"]["schema"]["allOf"][0]["oneOf"]
    assert [branch["required"] for branch in rule] == [["frequency_khz"], ["frequencies_khz"]]


def test_metrics_can_require_a_token(settings: Settings, make_headers: Callable[..., dict[str, str]]) -> None:
    with TestClient(create_app(settings)) as open_metrics:
        assert open_metrics.get("/metrics").status_code == 200  # off by default
    guarded = create_app(settings.model_copy(update={"metrics_require_token": True, "public_read": True}))
    with TestClient(guarded) as client:
        anonymous = client.get("/metrics")
        assert anonymous.status_code == 401 and anonymous.headers["content-type"] == PROBLEM
        assert client.get("/metrics", headers=make_headers("predict")).status_code == 403
        scraped = client.get("/metrics", headers=make_headers("read"))
        assert scraped.status_code == 200 and "latfarm_http_requests_total" in scraped.text
