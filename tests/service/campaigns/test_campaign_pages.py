"""The dashboard's campaign pages without a browser, on both engines: the farm card's Bootstrap button, the
campaign page's rounds table and accuracy curve, and its Cancel button — each behind login, scope and CSRF."""

from __future__ import annotations

import re
from collections.abc import Callable

from fastapi.testclient import TestClient

from tests.service.campaigns.conftest import Drive


def _login(client: TestClient, make_headers: Callable[..., dict[str, str]], *scopes: str) -> str:
    secret = make_headers(*scopes)["Authorization"].split(" ", 1)[1]
    response = client.post(
        "/dashboard/login", data={"token": secret, "next": "/dashboard/farm"}, follow_redirects=False
    )
    assert response.status_code == 303
    match = re.search(r'name="csrf_token" value="([0-9a-f]{64})"', client.get("/dashboard/farm").text)
    assert match
    return match.group(1)


def test_bootstrap_button_starts_a_campaign_whose_page_shows_rounds_and_curve(
    client: TestClient,
    make_headers: Callable[..., dict[str, str]],
    make_device: Callable[..., int],
    drive: Drive,
) -> None:
    device = make_device()
    reader = TestClient(client.app)
    reader_csrf = _login(reader, make_headers, "read")
    assert "Bootstrap" not in reader.get("/dashboard/farm").text
    refused = reader.post(
        f"/dashboard/devices/{device}/bootstrap", data={"family": "sr_block", "csrf_token": reader_csrf}
    )
    assert refused.status_code == 403

    csrf = _login(client, make_headers, "profile", "read")
    farm = client.get("/dashboard/farm").text
    assert f'action="/dashboard/devices/{device}/bootstrap"' in farm and '<option value="sr_block">' in farm
    assert (
        client.post(f"/dashboard/devices/{device}/bootstrap", data={"family": "sr_block"}).status_code == 403
    )
    bad = client.post(f"/dashboard/devices/{device}/bootstrap", data={"family": "nope", "csrf_token": csrf})
    assert bad.status_code == 422 and "body.family" in bad.text
    started = client.post(
        f"/dashboard/devices/{device}/bootstrap",
        data={"family": "sr_block", "csrf_token": csrf},
        follow_redirects=False,
    )
    assert started.status_code == 303
    page_url = started.headers["location"].split("?")[0]
    campaign_id = int(page_url.rsplit("/", 1)[1])
    page = client.get(page_url).text
    assert "no peers" in page and "No round scored yet" in page and "Cancel campaign" in page
    assert f"campaign {campaign_id}" in client.get("/dashboard/campaigns").text
    busy = client.post(
        f"/dashboard/devices/{device}/bootstrap", data={"family": "sr_block", "csrf_token": csrf}
    )
    assert busy.status_code == 409 and "already running" in busy.text

    # The dashboard's default campaign measures the family's own space; the synthetic phone serves it.
    finished = drive.run(campaign_id)
    page = client.get(page_url).text
    assert finished.status.value in page and "Cancel campaign" not in page
    rows = re.findall(r'<tr data-round="(\d+)">', page)
    assert [int(r) for r in rows] == [r.number for r in drive.rounds(campaign_id)]
    scored = [r for r in drive.rounds(campaign_id) if r.within_10 is not None]
    assert len(re.findall(r'<circle [^>]*data-round="', page)) == len(scored) >= 1
    assert f"predictor {finished.best_predictor_id}</a> (active)" in page


def test_cancel_button_cancels_a_running_campaign(
    client: TestClient,
    make_headers: Callable[..., dict[str, str]],
    make_device: Callable[..., int],
    drive: Drive,
) -> None:
    device = make_device()
    csrf = _login(client, make_headers, "profile", "read")
    started = client.post(
        f"/dashboard/devices/{device}/bootstrap",
        data={"family": "sr_block", "csrf_token": csrf},
        follow_redirects=False,
    )
    campaign_id = int(started.headers["location"].split("?")[0].rsplit("/", 1)[1])
    drive.step()
    cancelled = client.post(f"/dashboard/campaigns/{campaign_id}/cancel", data={"csrf_token": csrf})
    assert cancelled.status_code == 200 and f"campaign {campaign_id} cancelled" in cancelled.text
    assert drive.campaign(campaign_id).status.value == "cancelled"
    again = client.post(f"/dashboard/campaigns/{campaign_id}/cancel", data={"csrf_token": csrf})
    assert again.status_code == 409 and "already" in again.text
    assert client.post("/dashboard/campaigns/999/cancel", data={"csrf_token": csrf}).status_code == 404
