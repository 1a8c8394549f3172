"""The dashboard in headless Chromium (Debian's, never a downloaded one) against a live service on SQLite.

Each page must load without console errors and without a single request leaving 127.0.0.1; the latency
table must show the stored medians, sort and filter server-side, and export exactly itself as CSV; the
jobs page's progress bar must advance as tasks finish. Screenshots go to test-artifacts/screenshots/.
"""

from __future__ import annotations

import csv
import io
import shutil
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import httpx
import pytest
import uvicorn
from playwright.sync_api import expect
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from service.app import create_app
from service.auth.service import create_token
from service.db import make_engine, make_sessionmaker
from service.deps import TOKEN_COOKIE
from service.jobs.models import Job, JobStatus, Task, TaskStatus
from service.settings import Settings

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = Path(__file__).resolve().parents[3] / "test-artifacts" / "screenshots"
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason="Debian's chromium is not installed at /usr/bin/chromium"
    ),
]


@dataclass
class LiveService:
    url: str
    host: str
    seeded: object
    sessions: sessionmaker[Session]
    admin_secret: str
    public_read: bool = False
    _threads: list[threading.Thread] = field(default_factory=list)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _serve(settings: Settings) -> Iterator[str]:
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    # uvicorn offers no event to await from another thread; poll its flag with a bounded deadline.
    for _ in range(500):
        if server.started:
            break
        thread.join(0.02)
    assert server.started, "uvicorn did not start"
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture(scope="module")
def live(
    tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path, seed_function: Callable[..., object]
) -> Iterator[LiveService]:
    """A seeded SQLite service on a free 127.0.0.1 port (the farm the server-side tests use)."""
    path = tmp_path_factory.mktemp("dashboard-live") / "latfarm.db"
    shutil.copy(sqlite_template, path)
    engine = make_engine(f"sqlite:///{path}")
    sessions = make_sessionmaker(engine)
    with sessions() as session:
        seeded = seed_function(session)
        _, secret = create_token(session, "browser-admin", ["admin"])
    settings = Settings(database_url=f"sqlite:///{path}", state_dir=path.parent / "state", public_read=False)
    serving = _serve(settings)
    host = next(serving)
    yield LiveService(f"http://{host}", host, seeded, sessions, secret)
    next(serving, None)
    engine.dispose()


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@dataclass
class Watched:
    """A page with everything that went wrong on it recorded."""

    page: object
    console_errors: list[str]
    foreign_requests: list[str]


def _watch(page, host: str) -> Watched:
    """Record the page's console errors, uncaught exceptions and any request to a host but `host`."""
    watched = Watched(page, [], [])
    page.on("console", lambda msg: msg.type == "error" and watched.console_errors.append(msg.text))
    page.on("pageerror", lambda exc: watched.console_errors.append(str(exc)))

    def check_host(request) -> None:
        if urlparse(request.url).netloc != host and not request.url.startswith(("data:", "blob:")):
            watched.foreign_requests.append(request.url)

    page.on("request", check_host)
    return watched


def _context(browser, url: str, secret: str | None):
    context = browser.new_context(viewport={"width": 1366, "height": 800}, accept_downloads=True)
    if secret is not None:
        context.add_cookies(
            [{"name": TOKEN_COOKIE, "value": secret, "url": url, "httpOnly": True, "sameSite": "Strict"}]
        )
    return context


@pytest.fixture
def open_page(browser, live: LiveService) -> Iterator[Callable[..., Watched]]:
    contexts = []

    def open_(logged_in: bool = True) -> Watched:
        context = _context(browser, live.url, live.admin_secret if logged_in else None)
        contexts.append(context)
        return _watch(context.new_page(), live.host)

    yield open_
    for context in contexts:
        context.close()


def _shot(page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def _clean(watched: Watched) -> None:
    assert watched.console_errors == []
    assert watched.foreign_requests == []


def test_login_then_every_page_loads_clean_and_local(open_page, live: LiveService) -> None:
    w = open_page(logged_in=False)
    page = w.page
    page.goto(f"{live.url}/dashboard/farm")
    assert page.url.startswith(f"{live.url}/dashboard/login")  # refused without a login
    _shot(page, "login")
    page.get_by_label("API token").fill(live.admin_secret)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{live.url}/dashboard/farm")
    assert page.locator("article.card").count() == 2
    assert page.locator(".badge.virtual").first.is_visible()
    _shot(page, "farm")
    page.goto(f"{live.url}/dashboard/latency")
    assert page.locator("#pivot tbody tr").count() == 30
    _shot(page, "latency")
    page.goto(f"{live.url}/dashboard/plots")
    for plot in ("#plot-lines", "#plot-heatmap", "#plot-scatter", "#plot-errors"):
        page.wait_for_selector(f"{plot} .main-svg")  # plotly drew it from the local bundle
    _shot(page, "plots")
    page.goto(f"{live.url}/dashboard/jobs")
    assert page.locator("progress").first.get_attribute("value") == "3"
    _shot(page, "jobs")
    page.goto(f"{live.url}/dashboard/predictors")
    assert page.locator("tr.active").count() == 1
    _shot(page, "predictors")
    _clean(w)


def _table(page) -> list[tuple[str, list[str]]]:
    rows = []
    for row in page.locator("#pivot tbody tr").all():
        digest = row.get_attribute("data-config-hash")
        rows.append((digest, [c.inner_text() for c in row.locator("td[data-col]").all()]))
    return rows


def _api_medians(url: str, secret: str, device_id: int) -> dict[tuple[str, int], float]:
    """The newest valid median of each (config, frequency) as `GET /v1/measurements` reports them."""
    medians: dict[tuple[str, int], tuple[int, float]] = {}
    params: dict[str, object] = {"device": device_id, "family": "sr_block", "valid": "true", "limit": 1000}
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {secret}"}) as api:
        while True:
            page = api.get("/v1/measurements", params=params)
            assert page.status_code == 200, page.text
            body = page.json()
            for item in body["items"]:
                key = (item["config_hash"], item["frequency_khz"])
                if key not in medians or item["id"] > medians[key][0]:
                    medians[key] = (item["id"], item["median_ms"])
            if body["next_cursor"] is None:
                return {key: median for key, (_, median) in medians.items()}
            params["cursor"] = body["next_cursor"]


def test_latency_table_matches_the_api_sorts_filters_and_exports(open_page, live: LiveService) -> None:
    w = open_page()
    page = w.page
    page.goto(f"{live.url}/dashboard/latency?device={live.seeded.device_id}&family=sr_block&per_page=100")
    stored = _api_medians(live.url, live.admin_secret, live.seeded.device_id)
    table = _table(page)
    assert len(table) == 30
    for digest, cells in table:
        assert cells == [f"{stored[(digest, khz)]:.3f}" for khz in (800_000, 1_400_000, 2_000_000)]
    assert "p90" in page.locator("#pivot td[data-col]").first.get_attribute("title")

    # Keyboard sort: focus the 2000 MHz header's control and press Enter, twice.
    header = page.locator('th[data-key="f2000000"]')
    header.locator("a").focus()
    page.keyboard.press("Enter")
    page.wait_for_selector('th[data-key="f2000000"][aria-sort="ascending"]')
    ascending = [float(cells[2]) for _, cells in _table(page)]
    assert ascending == sorted(ascending) and ascending != [float(c[2]) for _, c in table]
    page.locator('th[data-key="f2000000"] a').focus()
    page.keyboard.press("Enter")
    page.wait_for_selector('th[data-key="f2000000"][aria-sort="descending"]')
    descending = [float(cells[2]) for _, cells in _table(page)]
    assert descending == sorted(ascending, reverse=True)

    page.get_by_label("min").first.fill("3")  # depth ≥ 3
    page.locator("#width_max").fill("16")
    page.get_by_role("button", name="Apply").click()
    page.wait_for_url("**depth_min=3**")
    filtered = _table(page)
    expected = {h for h, (d, w) in live.seeded.shapes.items() if d >= 3 and w <= 16}
    assert {h for h, _ in filtered} == expected and 0 < len(filtered) < 30
    filtered_values = [float(cells[2]) for _, cells in filtered]
    assert filtered_values == sorted(filtered_values, reverse=True)  # the sort survived the filter
    _shot(page, "latency-filtered")

    with page.expect_download() as download_info:
        page.locator("#csv-link").click()
    text = Path(download_info.value.path()).read_text()
    rows = list(csv.reader(io.StringIO(text)))
    assert [(r[1], r[4:]) for r in rows[1:]] == filtered
    _clean(w)


def test_job_progress_bar_advances_as_tasks_finish(open_page, live: LiveService) -> None:
    w = open_page()
    page = w.page
    page.goto(f"{live.url}/dashboard/jobs")
    bar = f"#job-{live.seeded.job_id}-bar"
    assert page.locator(bar).get_attribute("value") == "3"
    with live.sessions() as session:
        # The worker's part, played by the test: the leased task finishes, a queued one is leased.
        leased = session.scalar(
            select(Task.id).where(Task.job_id == live.seeded.job_id, Task.status == TaskStatus.leased)
        )
        session.execute(update(Task).where(Task.id == leased).values(status=TaskStatus.done))
        session.commit()
    # `progress.value` reflects to its attribute; expect() polls it (page scripts may not eval, CSP).
    expect(page.locator(bar)).to_have_attribute("value", "4", timeout=15_000)
    assert page.locator(f"#job-{live.seeded.job_id} [data-count='done']").inner_text() == "2"
    with live.sessions() as session:
        session.execute(
            update(Task)
            .where(Task.job_id == live.seeded.job_id, Task.status == TaskStatus.queued)
            .values(status=TaskStatus.done)
        )
        session.execute(update(Job).where(Job.id == live.seeded.job_id).values(status=JobStatus.done))
        session.commit()
    expect(page.locator(bar)).to_have_attribute("value", "6", timeout=15_000)
    expect(page.locator(f"#job-{live.seeded.job_id} [data-field='status']")).to_have_text("done")
    assert page.locator(f"#job-{live.seeded.job_id} [data-field='percent']").inner_text() == "100.0"
    _shot(page, "jobs-finished")
    _clean(w)


def test_a_real_job_on_a_virtual_phone_moves_the_bar_and_fills_the_table(
    browser, tmp_path: Path, sqlite_template: Path
) -> None:
    from profilers.virtual_phone.phone import VirtualPhone
    from service.jobs.worker import Worker

    path = tmp_path / "real.db"
    shutil.copy(sqlite_template, path)
    settings = Settings(
        database_url=f"sqlite:///{path}",
        state_dir=tmp_path / "state",
        worker_poll_seconds=0.1,
    )
    engine = make_engine(settings.database_url)
    sessions = make_sessionmaker(engine)
    with sessions() as session:
        _, secret = create_token(session, "runner", ["admin"])
    configs = [
        {"scale": 2, "height": 90, "width": 160, "kernel": 3, "widths": widths}
        for widths in ([8, 8], [8, 16, 8], [16, 16, 16, 16])
    ]
    with VirtualPhone(state_dir=tmp_path / "phone") as phone:
        serving = _serve(settings)
        host = next(serving)
        url = f"http://{host}"
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {secret}"}, timeout=120) as api:
            device = api.post("/v1/devices", json={"serial": f"127.0.0.1:{phone.port}", "transport": "tcp"})
            assert device.status_code == 201 and device.json()["status"] == "online", device.text
            device_id = device.json()["id"]
            job = api.post(
                "/v1/jobs",
                json={
                    "family": "sr_block",
                    "configs": configs,
                    "devices": [device_id],
                    "frequencies": "min-mid-max",
                    "runtime": {"runs": 25, "warmup": 1},
                },
            )
            assert job.status_code == 202, job.text
            job_id, total = job.json()["id"], job.json()["total_tasks"]
        assert total == 9

        context = _context(browser, url, secret)
        w = _watch(context.new_page(), host)
        page = w.page
        page.goto(f"{url}/dashboard/jobs")
        bar = page.locator(f"#job-{job_id}-bar")
        assert bar.get_attribute("value") == "0" and bar.get_attribute("max") == "9"

        # The worker starts only now, so the page sees the whole run from its first task.
        worker = Worker(sessions, settings)
        thread = threading.Thread(target=worker.run, kwargs={"max_idle_seconds": 60}, daemon=True)
        thread.start()
        seen = [0]
        try:
            while seen[-1] < total:
                expect(bar).not_to_have_attribute("value", str(seen[-1]), timeout=90_000)
                seen.append(int(bar.get_attribute("value")))
            expect(page.locator(f"#job-{job_id} [data-field='status']")).to_have_text("done", timeout=30_000)
        finally:
            worker.stop()
            thread.join(30)
        assert seen == sorted(seen) and seen[0] == 0 and seen[-1] == total
        _shot(page, "jobs-real-run")

        # The measurements the worker stored are in the table, as the API reports them.
        page.goto(f"{url}/dashboard/latency?device={device_id}&family=sr_block")
        api_medians = _api_medians(url, secret, device_id)
        table = _table(page)
        assert len(table) == 3 and len(api_medians) == 9
        khz = sorted({k for _, k in api_medians})
        for digest, cells in table:
            assert cells == [f"{api_medians[(digest, f)]:.3f}" for f in khz]
        _shot(page, "latency-real-run")
        _clean(w)
        context.close()
        next(serving, None)
    engine.dispose()


def _svg_texts(page, selector: str) -> list[str]:
    """The text of plotly's SVG text nodes (SVG has no rendered `innerText`)."""
    return [node.text_content() or "" for node in page.locator(selector).all()]


def test_unit_and_precision_filters_narrow_the_table_and_a_cell_opens_its_layer_chart(
    open_page, live: LiveService, seed_accelerators: Callable[..., object]
) -> None:
    with live.sessions() as session:
        acc = seed_accelerators(session, live.seeded.device_id)
    w = open_page()
    page = w.page
    page.goto(f"{live.url}/dashboard/latency?device={live.seeded.device_id}&family=sr_block&per_page=100")
    assert len(_table(page)) == 30  # the CPU table first
    page.locator("#unit").select_option("gpu")
    page.get_by_role("button", name="Apply").click()
    page.wait_for_url("**unit=gpu**")
    page.locator("#precision").select_option("fp16")
    page.get_by_role("button", name="Apply").click()
    page.wait_for_url("**precision=fp16**")
    table = _table(page)
    assert {h for h, _ in table} == acc.configs[("gpu", "fp16")] and len(table) < 30
    assert page.locator("#shown-unit").inner_text() == "gpu"
    headers = page.locator("#pivot thead th[data-key^='f']").all_inner_texts()
    assert [t.strip() for t in headers] == ["315 MHz", "840 MHz"]  # the GPU's clocks, not the CPU's
    for digest, cells in table:
        assert cells == [f"{acc.medians[('gpu', 'fp16', digest, khz)]:.3f}" for khz in (315_000, 840_000)]
    _shot(page, "latency-gpu-fp16")

    link = page.locator("#pivot td a.layers").first
    measurement_id = int(link.get_attribute("href").rsplit("/", 1)[1])
    link.click()
    page.wait_for_url(f"**/dashboard/measurements/{measurement_id}")
    page.wait_for_selector("#plot-layers .main-svg")
    stored = acc.layers[measurement_id]
    bars = page.locator("#plot-layers .barlayer .point")
    expect(bars).to_have_count(len(stored))  # one drawn bar per stored layer
    assert _svg_texts(page, "#plot-layers .legendtext") == ["gpu (virtual)"]
    assert page.locator(".badge.virtual").first.is_visible()
    _shot(page, "layers-gpu")

    # The plots page on the NPU: a ringed point opens its chart, where the CPU fallback has its own colour.
    page.goto(f"{live.url}/dashboard/plots?device={live.seeded.device_id}&family=sr_block&unit=npu")
    page.wait_for_selector("#plot-lines .main-svg")
    assert _svg_texts(page, "#plot-lines .xtitle") == ["NPU clock (MHz)"]
    point = page.locator("#plot-lines .scatterlayer .point").first
    box = point.bounding_box()
    assert box is not None
    page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.wait_for_url("**/dashboard/measurements/*")
    page.wait_for_selector("#plot-layers .main-svg")
    assert sorted(_svg_texts(page, "#plot-layers .legendtext")) == [
        "cpu (virtual)",
        "npu (virtual)",
    ]
    _shot(page, "layers-npu")
    _clean(w)
