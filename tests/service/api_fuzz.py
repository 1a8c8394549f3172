"""Property-based runs over the app's OpenAPI: schemathesis draws requests, the app must keep its contract.

Each drawn request — valid by the schema, or deliberately invalid (negative mode) — is sent in-process to the
app, and its answer checked: never a 5xx; every 4xx is `application/problem+json`; a success has a documented
status, content type and a body matching its schema. Shared by the suite's bounded test and
`bench/bench_api_fuzz.py` (≥ 1,000 cases). Registration probes devices: callers swap in a runner that
touches no network.
"""

from __future__ import annotations

import collections
import contextlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import hypothesis
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, Phase
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from service.devices.runner import NoopRunner

PROBLEM_JSON = "application/problem+json"
#: Routes whose body handling other work owns: their 4xx answers are checked, their 5xx only reported.
REPORT_ONLY = ("POST /v1/predict", "POST /v1/predictors/import")
_CHECKS = [status_code_conformance, content_type_conformance, response_schema_conformance]


@dataclass
class FuzzReport:
    """What a run drew and what the app answered."""

    cases: int = 0
    statuses: collections.Counter[int] = field(default_factory=collections.Counter)
    server_errors: list[str] = field(default_factory=list)
    report_only_server_errors: list[str] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)

    @property
    def responses_5xx(self) -> int:
        """Responses with a status of 500 or more, reported-only routes included."""
        return sum(n for status, n in self.statuses.items() if status >= 500)

    def record(self, case: Any, status: int, body: bytes | str) -> None:
        """Count one answer; a 5xx is listed with the curl command that reproduces it."""
        self.cases += 1
        self.statuses[status] += 1
        if status >= 500:
            target = (
                self.report_only_server_errors if case.operation.label in REPORT_ONLY else self.server_errors
            )
            target.append(_describe(case, status, body))

    def violate(self, what: str, case: Any, status: int, body: bytes | str) -> None:
        """List a broken contract (other than a 5xx)."""
        self.violations.append(f"{what}: {_describe(case, status, body)}")


def _describe(case: Any, status: int, body: bytes | str) -> str:
    text = body if isinstance(body, str) else body[:300].decode(errors="replace")
    return f"{case.operation.label} → {status}: {text[:300]!r}\n  {case.as_curl_command()}"


def _send_and_check(case: Any, headers: dict[str, str], report: FuzzReport) -> None:
    try:
        response = case.call(headers=headers)
    except Exception as exc:  # the in-process client re-raises what the app's 500 handler logged
        report.record(case, 500, f"{type(exc).__name__}: {exc}")
        return
    status, body = response.status_code, response.content
    report.record(case, status, body)
    if status >= 500:
        return
    if status >= 400:
        if response.headers.get("content-type", [""])[0] != PROBLEM_JSON:
            report.violate("a 4xx that is not problem+json", case, status, body)
        return
    try:
        case.validate_response(response, checks=_CHECKS)
    except (Exception, BaseExceptionGroup) as exc:  # a failed check: listed, the run goes on
        report.violate(f"{type(exc).__name__} {str(exc)[:300]}", case, status, body)


#: What the fuzzing runner says a probed phone is: one cluster, so jobs on it expand.
FUZZ_FACTS = {"clusters": [{"name": "big", "cpus": [0, 1], "frequencies_khz": [1000, 2000]}]}


def fuzz_runner() -> NoopRunner:
    """The device runner for fuzzing (override `service.deps.get_runner` with it): probes answer at once,
    no network."""
    return NoopRunner(FUZZ_FACTS)


def seed_resources(app: FastAPI, headers: dict[str, str]) -> None:
    """A device, a job on it and a measurement, so drawn ids (small ones come first) meet real rows."""
    from fastapi.testclient import TestClient

    client = TestClient(app)
    device = client.post(
        "/v1/devices", json={"serial": "127.0.0.1:5555", "transport": "tcp"}, headers=headers
    )
    assert device.status_code == 201, device.text
    config = {"kernel": 3, "cin": 8, "cout": 8, "height": 8, "width": 8}
    job = {"family": "conv", "configs": [config], "devices": [device.json()["id"]], "frequencies": [1000]}
    assert client.post("/v1/jobs", json=job, headers=headers).status_code == 202
    row = {
        "device_id": device.json()["id"],
        "family": "conv",
        "config": config,
        "cluster": "big",
        "frequency_khz": 1000,
        "runtime_name": "onnxruntime",
        "runs": 1,
        **dict.fromkeys(("median_ms", "mean_ms", "min_ms", "max_ms", "p90_ms"), 1.0),
    }
    imported = client.post("/v1/measurements/import", json={"rows": [row]}, headers=headers)
    assert imported.status_code == 201, imported.text


def fuzz(
    app: FastAPI,
    headers: dict[str, str],
    *,
    examples_per_operation: int,
    modes: Iterable[GenerationMode] = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE),
    seed: int = 0,
) -> FuzzReport:
    """Draw `examples_per_operation` requests per operation and mode (seeded); send and check each."""
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    report = FuzzReport()
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in modes:

            @hypothesis.settings(
                max_examples=examples_per_operation,
                database=None,
                deadline=None,
                phases=[Phase.generate],
                suppress_health_check=list(HealthCheck),
            )
            @hypothesis.seed(seed)
            @hypothesis.given(case=operation.as_strategy(generation_mode=mode))
            def run(case: Any) -> None:
                _send_and_check(case, headers, report)

            # An operation with no parameters and no body has nothing to make invalid.
            with contextlib.suppress(hypothesis.errors.Unsatisfiable):
                run()
    return report
