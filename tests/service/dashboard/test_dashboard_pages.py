"""The dashboard without a browser, on both engines: pivot, CSV, auth, CSRF, job progress, plot data."""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from profilers.blocks import config_hash
from service.app import create_app
from service.dashboard import service
from service.dashboard.service import PivotQuery, PlotQuery, format_ms
from service.deps import TOKEN_COOKIE
from service.devices.models import Device, DeviceStatus
from service.problems import InvalidInputError
from service.settings import Settings

PAGES = [
    "/dashboard/farm",
    "/dashboard/latency",
    "/dashboard/plots",
    "/dashboard/jobs",
    "/dashboard/predictors",
]


def _secret(make_headers: Callable[..., dict[str, str]], *scopes: str) -> str:
    return make_headers(*scopes)["Authorization"].split(" ", 1)[1]


def _login(client: TestClient, make_headers: Callable[..., dict[str, str]], *scopes: str) -> str:
    secret = _secret(make_headers, *scopes)
    response = client.post(
        "/dashboard/login", data={"token": secret, "next": "/dashboard/jobs"}, follow_redirects=False
    )
    assert response.status_code == 303 and response.headers["location"] == "/dashboard/jobs"
    return secret


def _csrf(client: TestClient) -> str:
    match = re.search(r'name="csrf_token" value="([0-9a-f]{64})"', client.get("/dashboard/farm").text)
    assert match, "the farm page carries the session's CSRF token"
    return match.group(1)


def test_pages_need_a_login_unless_public_read(client: TestClient, seeded, settings: Settings) -> None:
    for path in PAGES:
        response = client.get(path, follow_redirects=False)
        assert response.status_code == 303, path
        assert response.headers["location"].startswith("/dashboard/login?next=%2Fdashboard%2F")
    assert client.get("/dashboard/jobs/progress.json").status_code == 401
    client.cookies.set(TOKEN_COOKIE, "lf_not-a-real-token")
    assert client.get("/dashboard/farm", follow_redirects=False).status_code == 303

    public = Settings(**(settings.model_dump() | {"public_read": True}))
    with TestClient(create_app(public)) as anonymous:
        for path in PAGES:
            response = anonymous.get(path)
            assert response.status_code == 200, path
            assert "public read" in response.text
        # Public readers see no admin forms and get no CSRF token to post with.
        assert 'action="/dashboard/devices"' not in anonymous.get("/dashboard/farm").text
        assert anonymous.post("/dashboard/devices", data={"serial": "x:1"}).status_code == 401


def test_login_cookie_is_httponly_strict_and_bad_tokens_are_refused(
    client: TestClient, make_headers: Callable[..., dict[str, str]]
) -> None:
    refused = client.post("/dashboard/login", data={"token": "lf_wrong"})
    assert refused.status_code == 401 and "token: unknown" in refused.text
    secret = _secret(make_headers, "read")
    response = client.post(
        "/dashboard/login", data={"token": secret, "next": "https://evil.example/"}, follow_redirects=False
    )
    assert response.headers["location"] == "/dashboard/farm"  # no open redirect
    cookie = response.headers["set-cookie"]
    assert f"{TOKEN_COOKIE}={secret}" in cookie
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie
    assert client.get("/dashboard/farm").status_code == 200
    logout = client.post("/dashboard/logout", data={"csrf_token": _csrf(client)}, follow_redirects=False)
    assert logout.status_code == 303 and f'{TOKEN_COOKIE}=""' in logout.headers["set-cookie"]


def test_pages_render_the_seeded_farm(client: TestClient, seeded, make_headers) -> None:
    _login(client, make_headers, "admin")
    farm = client.get("/dashboard/farm")
    assert farm.headers["content-security-policy"].startswith("default-src 'self'")
    for text in (
        "virtual-pixel",
        "virtual phone",
        "Tensor G2",
        "41.5 °C",
        "big 2000 MHz",
        "old-galaxy",
        "adb: device offline after 3 attempts",
        f"job {seeded.job_id}",
    ):
        assert text in farm.text, text
    jobs = client.get("/dashboard/jobs").text
    assert "benchmark exited 134: model load failed" in jobs and "Cancel job" in jobs
    predictors = client.get("/dashboard/predictors").text
    assert f"/v1/predictors/{seeded.predictor_id}/snapshot" in predictors and "active" in predictors


def test_pivot_shows_the_newest_valid_median_of_every_point(db_session: Session, seeded) -> None:
    page = service.latency_pivot(
        db_session, PivotQuery(device=seeded.device_id, family="sr_block", per_page=500)
    )
    assert page.total == 30 and len(page.rows) == 30
    assert [c.khz for c in page.columns] == [800_000, 1_400_000, 2_000_000]
    for row in page.rows:
        assert (row.depth, row.width) == seeded.shapes[row.config_hash]
        for column, cell in zip(page.columns, row.cells, strict=True):
            assert cell is not None
            assert cell.median_ms == pytest.approx(seeded.medians[(row.config_hash, column.khz)])
            assert "std" in cell.spread and "p90" in cell.spread and "10 runs in 2 passes" in cell.spread
    assert page.virtual


def test_pivot_sorts_filters_and_pages_server_side(db_session: Session, seeded) -> None:
    base = PivotQuery(device=seeded.device_id, family="sr_block", per_page=500)
    desc = service.latency_pivot(db_session, base.model_copy(update={"sort": "-f2000000"}))
    top = [r.cells[2].median_ms for r in desc.rows]
    assert top == sorted(top, reverse=True)
    by_config = service.latency_pivot(db_session, base)
    assert [r.label for r in by_config.rows] == sorted(r.label for r in by_config.rows)

    filtered = service.latency_pivot(
        db_session, base.model_copy(update={"depth_min": 2, "depth_max": 3, "width_min": 16, "q": "PRELU"})
    )
    expected = {h for h, (d, w) in seeded.shapes.items() if 2 <= d <= 3 and w >= 16}
    shown = {r.config_hash for r in filtered.rows}
    assert shown and shown <= expected and all("prelu" in r.label for r in filtered.rows)
    assert filtered.total == len(shown) < len(expected)  # the text filter removed the relu half

    pages = [
        service.latency_pivot(
            db_session, base.model_copy(update={"per_page": 7, "page": n, "sort": "-width"})
        )
        for n in range(1, 6)
    ]
    assert [len(p.rows) for p in pages] == [7, 7, 7, 7, 2] and pages[0].pages == 5
    hashes = [r.config_hash for p in pages for r in p.rows]
    assert len(set(hashes)) == 30  # no row on two pages, none skipped

    with pytest.raises(InvalidInputError) as bad:
        service.latency_pivot(db_session, base.model_copy(update={"sort": "f123"}))
    assert bad.value.errors[0]["loc"] == ["query", "sort"]


def test_csv_is_exactly_the_page_shown(client: TestClient, seeded, make_headers) -> None:
    _login(client, make_headers, "read")
    params = {
        "device": seeded.device_id,
        "family": "sr_block",
        "sort": "-f800000",
        "per_page": 10,
        "page": 2,
        "depth_min": "",
        "q": "",
    }
    html = client.get("/dashboard/latency", params=params).text
    table_rows = re.findall(r'<tr data-config-hash="([0-9a-f]{64})">(.*?)</tr>', html, re.S)
    response = client.get("/dashboard/latency.csv", params=params)
    assert response.headers["content-type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(response.text)))
    assert rows[0] == [
        "config",
        "config_hash",
        "depth",
        "width",
        "800 MHz median ms",
        "1400 MHz median ms",
        "2000 MHz median ms",
    ]
    assert [r[1] for r in rows[1:]] == [h for h, _ in table_rows] and len(rows) == 11
    for (digest, cells_html), row in zip(table_rows, rows[1:], strict=True):
        shown = re.findall(r'data-col="f\d+" title="[^"]*">([0-9.]+)</td>', cells_html)
        assert shown == row[4:]
        assert row[4:] == [
            format_ms(seeded.medians[(digest, khz)]) for khz in (800_000, 1_400_000, 2_000_000)
        ]


def test_bad_table_queries_are_problems_naming_the_field(client: TestClient, seeded, make_headers) -> None:
    _login(client, make_headers, "read")
    bad_sort = client.get(
        "/dashboard/latency", params={"device": seeded.device_id, "family": "sr_block", "sort": "x"}
    )
    assert bad_sort.status_code == 422 and bad_sort.json()["errors"][0]["loc"] == ["query", "sort"]
    bad_depth = client.get(
        "/dashboard/latency.csv", params={"device": seeded.device_id, "family": "sr_block", "depth_min": "-1"}
    )
    assert bad_depth.status_code == 422 and "depth_min" in bad_depth.json()["detail"]
    no_device = client.get("/dashboard/latency.csv", params={"device": 999, "family": "sr_block"})
    assert no_device.status_code == 422 and no_device.json()["errors"][0]["loc"] == ["query", "device"]


def test_admin_forms_need_the_session_csrf_token_and_the_scope(
    client: TestClient, db_session: Session, seeded, make_headers
) -> None:
    form = {"serial": "127.0.0.1:2", "transport": "tcp", "name": "new", "tags": "lab, a"}
    assert client.post("/dashboard/devices", data=form).status_code == 401  # no login at all

    _login(client, make_headers, "admin")
    token = _csrf(client)
    assert client.post("/dashboard/devices", data=form).status_code == 403
    assert client.post("/dashboard/devices", data=form | {"csrf_token": "0" * 64}).status_code == 403
    # A token made for another session is no good either.
    other = TestClient(client.app)
    _login(other, make_headers, "admin")
    assert client.post("/dashboard/devices", data=form | {"csrf_token": _csrf(other)}).status_code == 403
    assert db_session.scalar(select(Device).where(Device.serial == form["serial"])) is None

    created = client.post("/dashboard/devices", data=form | {"csrf_token": token}, follow_redirects=False)
    assert created.status_code == 303 and "registered" in created.headers["location"]
    db_session.rollback()  # end the read snapshot taken above
    device = db_session.scalar(select(Device).where(Device.serial == form["serial"]))
    assert device is not None and device.tags == ["a", "lab"]

    invalid = client.post("/dashboard/devices", data=form | {"serial": "no-port", "csrf_token": token})
    assert invalid.status_code == 422 and "host:port" in invalid.text
    dup = client.post("/dashboard/devices", data=form | {"csrf_token": token})
    assert dup.status_code == 409 and "registered already" in dup.text

    disable = client.post(
        f"/dashboard/devices/{seeded.other_device_id}/enabled", data={"enabled": "false", "csrf_token": token}
    )
    assert disable.status_code == 200
    db_session.rollback()
    assert db_session.get(Device, seeded.other_device_id).status is DeviceStatus.disabled

    reader = TestClient(client.app)
    _login(reader, make_headers, "read")
    assert "Register a phone" not in reader.get("/dashboard/farm").text
    refused = reader.post(
        "/dashboard/devices", data=form | {"serial": "127.0.0.1:3", "csrf_token": _csrf(reader)}
    )
    assert refused.status_code == 403 and "'admin' scope" in refused.json()["detail"]


def test_job_progress_counts_tasks_by_status(client: TestClient, seeded, make_headers) -> None:
    _login(client, make_headers, "read")
    [job] = client.get("/dashboard/jobs/progress.json").json()
    assert job["id"] == seeded.job_id and job["total"] == 6
    assert job["counts"] == {"queued": 2, "running": 1, "done": 1, "reused": 1, "failed": 1, "cancelled": 0}
    assert job["finished"] == 3 and job["percent"] == 50.0
    # The jobs service's estimate: mean task duration (2 s) × the device's backlog (3 open tasks).
    assert job["eta_seconds"] == pytest.approx(6.0)


def test_plot_data_heatmap_and_predictor_holdout(db_session: Session, seeded) -> None:
    data = service.plot_data(
        db_session,
        PlotQuery(
            device=seeded.device_id, family="sr_block", frequency=800_000, predictor=seeded.predictor_id
        ),
    )
    heat = data["heatmap"]
    assert (
        heat["frequency_khz"] == 800_000
        and heat["depths"] == [1, 2, 3, 4, 5]
        and heat["widths"] == [8, 16, 32]
    )
    for i, depth in enumerate(heat["depths"]):
        for j, width in enumerate(heat["widths"]):
            values = [seeded.medians[(h, 800_000)] for h, s in seeded.shapes.items() if s == (depth, width)]
            assert heat["z"][i][j] == pytest.approx(sum(values) / len(values))
    assert len(data["lines"]) == 5 and all(line["x"] == [800.0, 1400.0, 2000.0] for line in data["lines"])
    holdout = data["predictor"]
    assert holdout["errors_pct"] == pytest.approx([-5.0, 2.0, 20.0, -1.0, 5.0, -15.0, 1.0, 0.0])
    assert holdout["within_10_pct"] == pytest.approx(75.0)


def test_probe_form_probes_a_virtual_phone_and_reports_a_dead_one(
    client: TestClient, db_session: Session, make_headers, tmp_path
) -> None:
    from profilers.virtual_phone.phone import VirtualPhone

    _login(client, make_headers, "admin")
    token = _csrf(client)
    with VirtualPhone(state_dir=tmp_path / "phone") as phone:
        serial = f"127.0.0.1:{phone.port}"
        registered = client.post(
            "/dashboard/devices",
            data={"serial": serial, "transport": "tcp", "csrf_token": token},
            follow_redirects=False,
        )
        assert registered.status_code == 303
        db_session.rollback()
        device = db_session.scalar(select(Device).where(Device.serial == serial))
        assert device.status is DeviceStatus.online and device.is_virtual and device.clusters
        farm = client.get(registered.headers["location"]).text
        assert f"registered device {device.id}" in farm and "virtual phone" in farm
        probed = client.post(f"/dashboard/devices/{device.id}/probe", data={"csrf_token": token})
        assert probed.status_code == 200 and f"probed device {device.id}" in probed.text

    # Nothing listens on port 1: the phone is registered but offline, with the reason on its card.
    dead = client.post(
        "/dashboard/devices", data={"serial": "127.0.0.1:1", "transport": "tcp", "csrf_token": token}
    )
    assert dead.status_code == 200 and "probe failed" in dead.text
    db_session.rollback()
    assert (
        db_session.scalar(select(Device).where(Device.serial == "127.0.0.1:1")).status is DeviceStatus.offline
    )
    assert client.post("/dashboard/devices/999/probe", data={"csrf_token": token}).status_code == 404


def test_cancel_and_activate_forms_call_the_domain(
    client: TestClient, db_session: Session, seeded, make_headers
) -> None:
    from service.jobs.models import Job, JobStatus, Task, TaskStatus
    from service.predictors.models import Predictor

    reader = TestClient(client.app)
    _login(reader, make_headers, "read")
    assert (
        reader.post(f"/dashboard/jobs/{seeded.job_id}/cancel", data={"csrf_token": _csrf(reader)}).status_code
        == 403
    )
    assert "Cancel job" not in reader.get("/dashboard/jobs").text

    _login(client, make_headers, "profile", "read")
    token = _csrf(client)
    assert client.post(f"/dashboard/jobs/{seeded.job_id}/cancel").status_code == 403  # no CSRF token
    cancelled = client.post(f"/dashboard/jobs/{seeded.job_id}/cancel", data={"csrf_token": token})
    assert cancelled.status_code == 200 and f"job {seeded.job_id} cancelled" in cancelled.text
    db_session.rollback()
    assert db_session.get(Job, seeded.job_id).status is JobStatus.cancelled
    statuses = db_session.scalars(select(Task.status).where(Task.job_id == seeded.job_id)).all()
    assert TaskStatus.queued not in statuses and statuses.count(TaskStatus.cancelled) == 2
    again = client.post(f"/dashboard/jobs/{seeded.job_id}/cancel", data={"csrf_token": token})
    assert again.status_code == 409 and "already" in again.text

    [older] = db_session.scalars(select(Predictor).where(Predictor.active.is_(False))).all()
    activated = client.post(f"/dashboard/predictors/{older.id}/activate", data={"csrf_token": token})
    assert activated.status_code == 200 and "is now active" in activated.text
    db_session.rollback()
    assert db_session.scalars(select(Predictor.id).where(Predictor.active.is_(True))).all() == [older.id]
    missing = client.post("/dashboard/predictors/999/activate", data={"csrf_token": token})
    assert missing.status_code == 404 and "does not exist" in missing.text


def test_pivot_sees_new_and_invalidated_measurements_at_once(
    db_session: Session, seeded, new_measurement, configs_of_seed
) -> None:
    query = PivotQuery(device=seeded.device_id, family="sr_block", per_page=500)
    before = service.latency_pivot(db_session, query)
    config = configs_of_seed(1)[0]
    row = before.rows[[r.config_hash for r in before.rows].index(config_hash("sr_block", config))]
    assert row.cells[0].median_ms == pytest.approx(seeded.medians[(row.config_hash, 800_000)])

    device = db_session.get(Device, seeded.device_id)
    newer = new_measurement(device, config, 800_000, 42.0)
    db_session.add(newer)
    db_session.commit()
    after = service.latency_pivot(db_session, query)
    assert next(r for r in after.rows if r.config_hash == row.config_hash).cells[0].median_ms == 42.0

    newer.valid, newer.invalid_reason = False, "throttled"
    db_session.commit()
    again = service.latency_pivot(db_session, query)
    cell = next(r for r in again.rows if r.config_hash == row.config_hash).cells[0]
    assert cell.median_ms == pytest.approx(seeded.medians[(row.config_hash, 800_000)])


def test_plots_page_draws_the_chosen_configs(client: TestClient, seeded, make_headers) -> None:
    _login(client, make_headers, "read")
    chosen = sorted(seeded.shapes)[:2]
    html = client.get(
        "/dashboard/plots",
        params=[("device", seeded.device_id), ("family", "sr_block"), *(("config", h) for h in chosen)],
    ).text
    data = json.loads(
        re.search(r'<script type="application/json" id="plot-data">(.*?)</script>', html, re.S).group(1)
    )
    assert sorted(data["chosen"]) == chosen and len(data["lines"]) == 2
    assert data["predictor"]["id"] == seeded.predictor_id  # the active predictor by default
    assert '<script src="/dashboard/static/plotly.min.js"></script>' in html
    bundle = client.get("/dashboard/static/plotly.min.js")
    assert bundle.status_code == 200 and "plotly" in bundle.text[:2000].lower()
    assert client.get("/dashboard/static/../settings.py").status_code == 404


def test_predictor_page_says_which_model_serves_beside_the_plain_baseline(
    client: TestClient, db_session: Session, seeded, make_headers
) -> None:
    from service.predictors.models import Predictor

    predictor = db_session.get(Predictor, seeded.predictor_id)
    predictor.metrics = {
        **predictor.metrics,
        "serving": "prior_xgboost",
        "candidates": {
            "plain_xgboost": {"within_10": 0.512, "within_5": 0.3, "mape": 14.25},
            "prior_xgboost": {"within_10": 0.917, "within_5": 0.75, "mape": 4.5},
        },
    }
    db_session.commit()
    _login(client, make_headers, "read")
    page = client.get("/dashboard/predictors").text
    rows = dict(re.findall(r'<tr data-predictor-id="(\d+)".*?>(.*?)<td><dl class="metrics">', page, re.S))
    row = rows[str(seeded.predictor_id)]
    served, baseline = row.split('data-model="plain_xgboost"')  # the served model comes first
    assert 'data-model="prior_xgboost" class="serving"' in served
    assert (
        "physics-prior XGBoost" in served and "serves" in served and "91.7 %" in served and "4.5 %" in served
    )
    assert "plain XGBoost" in baseline and "baseline" in baseline and "51.2 %" in baseline
    assert "14.2 %" in baseline and "serves" not in baseline
    # A predictor trained before the baseline was fitted beside it says so instead.
    [older] = [text for pid, text in rows.items() if pid != str(seeded.predictor_id)]
    assert "no baseline fitted" in older and "data-model" not in older


def test_model_comparison_puts_the_served_model_first_and_skips_old_metrics() -> None:
    assert service.model_comparison({"rmse_ms": 0.1}) == []
    rows = service.model_comparison(
        {
            "serving": "plain_xgboost",
            "candidates": {
                "prior_xgboost": {"within_10": 0.4, "within_5": 0.2, "mape": 30.0},
                "plain_xgboost": {"within_10": 0.6, "within_5": 0.3, "mape": 12.0},
            },
        }
    )
    assert [(r.kind, r.serving, r.within_10) for r in rows] == [
        ("plain_xgboost", True, "60.0 %"),
        ("prior_xgboost", False, "40.0 %"),
    ]
