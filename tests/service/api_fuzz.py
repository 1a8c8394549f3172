"""Property-based runs over the app's own OpenAPI: schemathesis draws requests, the app must hold its contract.

Every drawn request (valid by the schema, or deliberately invalid) is sent in-process to the app and its
answer checked: never a 5xx; every 4xx is `application/problem+json`; a documented status with a body that
matches its documented schema. Shared by the bounded suite test and `bench/bench_api_fuzz.py` (≥ 1,000 cases).
"""

from __future__ import annotations

import collections
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

PROBLEM_JSON = "application/problem+json"

#: Routes other work owns the body handling of: their 4xx answers are checked, their 5xx only reported.
REPORT_ONLY = ("POST /v1/predict", "POST /v1/predictors/import")


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


def _describe(case: Any, status: int, text: str) -> str:
    return f"{case.operation.label} → {status}: {text[:200]!r}\n  {case.as_curl_command()}"


def fuzz(
    app: FastAPI,
    headers: dict[str, str],
    *,
    examples_per_operation: int,
    modes: Iterable[GenerationMode] = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE),
    seed: int = 0,
) -> FuzzReport:
    """Draw `examples_per_operation` requests per operation and mode, send each, check each answer."""
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    report = FuzzReport()
    checks = [status_code_conformance, content_type_conformance, response_schema_conformance]
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in modes:

            @hypothesis.settings(
                max_examples=examples_per_operation,
                derandomize=True,
                database=None,
                deadline=None,
                phases=[Phase.generate],
                suppress_health_check=list(HealthCheck),
            )
            @hypothesis.seed(seed)
            @hypothesis.given(case=operation.as_strategy(generation_mode=mode))
            def run(case: Any) -> None:
                report_only = case.operation.label in REPORT_ONLY
                report.cases += 1
                try:
                    response = case.call(headers=headers)
                except Exception as exc:  # the in-process client re-raises what the app's 500 handler logged
                    report.statuses[500] += 1
                    target = report.report_only_server_errors if report_only else report.server_errors
                    target.append(_describe(case, 500, f"{type(exc).__name__}: {exc}"))
                    return
                report.statuses[response.status_code] += 1
                text = response.content[:300].decode(errors="replace")
                if response.status_code >= 500:
                    target = report.report_only_server_errors if report_only else report.server_errors
                    target.append(_describe(case, response.status_code, text))
                    return
                if response.status_code >= 400:
                    if response.headers.get("content-type", [""])[0] != PROBLEM_JSON:
                        report.violations.append(
                            "not problem+json: " + _describe(case, response.status_code, text)
                        )
                    return
                try:
                    case.validate_response(response, checks=checks)
                except (Exception, BaseExceptionGroup) as exc:  # a check failed: recorded, the run goes on
                    report.violations.append(
                        f"{type(exc).__name__}: {str(exc)[:300]}\n  "
                        + _describe(case, response.status_code, text)
                    )

            try:
                run()
            except hypothesis.errors.Unsatisfiable:
                pass  # nothing to make invalid (no parameters, no body): the positive mode covers it
    return report
