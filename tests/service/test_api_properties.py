"""Property-based API tests: schemathesis over the app's OpenAPI, on SQLite and PostgreSQL.

No drawn request (valid or deliberately invalid) may answer 5xx; every 4xx is problem+json; successes match
their documented schema. The bounded run is a few hundred cases per engine; the slow one over 1,000.
"""

from __future__ import annotations

import pytest
from fastapi import FastAPI

from service.app import create_app
from service.deps import get_runner
from service.settings import Settings
from tests.service.api_fuzz import FuzzReport, fuzz, fuzz_runner, seed_resources


@pytest.fixture
def fuzz_app(settings: Settings) -> FastAPI:
    # Registering a device probes it: drawn addresses must reach no network.
    app = create_app(settings)
    app.dependency_overrides[get_runner] = fuzz_runner
    return app


def _assert_contract_kept(report: FuzzReport, at_least: int) -> None:
    print(
        f"\n{report.cases} cases, {report.responses_5xx} responses >= 500, statuses {dict(report.statuses)}"
    )
    for line in report.report_only_server_errors:  # owned by other work: reported, not failed here
        print("5xx on a report-only route:", line)
    assert report.cases >= at_least
    assert not report.server_errors, "\n".join(report.server_errors[:10])
    assert not report.violations, "\n".join(report.violations[:10])


def test_drawn_requests_keep_the_contract(fuzz_app: FastAPI, admin_headers: dict[str, str]) -> None:
    seed_resources(fuzz_app, admin_headers)
    _assert_contract_kept(fuzz(fuzz_app, admin_headers, examples_per_operation=6), at_least=200)


@pytest.mark.slow
def test_over_a_thousand_drawn_requests_keep_the_contract(
    fuzz_app: FastAPI, admin_headers: dict[str, str]
) -> None:
    seed_resources(fuzz_app, admin_headers)
    _assert_contract_kept(fuzz(fuzz_app, admin_headers, examples_per_operation=30, seed=1), at_least=1000)
